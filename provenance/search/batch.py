"""The one batch-query loop: query, calibrate, eval, scan and the service all answer through it.

Items are grouped into batches (one forward pass per batch), a bad image costs only its own
slot (its :class:`~provenance.errors.ImageLoadError` comes back in place of a result), and
answers come back in input order, each with the item it answers, as soon as its batch is done.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator, TypeVar

from ..errors import ImageLoadError
from ..results import QueryResult

Item = TypeVar("Item")

#: Query images embedded together (one forward pass per batch).
DEFAULT_BATCH = 16


def query_stream(engine: Any, items: Iterable[Item], *, top_k: int = 5, batch_size: int = DEFAULT_BATCH,
                 image_of: Callable[[Item], Any] | None = None, options: Any = None,
                 ) -> Iterator[tuple[Item, QueryResult | ImageLoadError]]:
    """(item, result or ImageLoadError) for every item, in order.

    ``engine`` needs ``query_batch(images, top_k, errors="return", options=...)`` (an
    :class:`~provenance.engine.Engine`). ``image_of(item)`` gives what to query for an item
    (a path, bytes, a file object or a PIL image); by default the item itself. ``items``
    is consumed lazily, one batch at a time, so a generator of decoded images stays small
    in memory.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    pick = image_of or (lambda item: item)
    batch: list[Item] = []
    for item in items:
        batch.append(item)
        if len(batch) == batch_size:
            yield from _answer(engine, batch, pick, top_k, options)
            batch = []
    if batch:
        yield from _answer(engine, batch, pick, top_k, options)


def _answer(engine: Any, batch: list, pick: Callable, top_k: int, options: Any) -> Iterator[tuple[Any, Any]]:
    images = []
    outcomes: list[Any] = [None] * len(batch)
    for position, item in enumerate(batch):
        try:
            images.append((position, pick(item)))
        except ImageLoadError as exc:  # the item could not even be turned into an image
            outcomes[position] = exc
    if images:
        kwargs = {"options": options} if options is not None else {}
        answered = engine.query_batch([image for _, image in images], top_k=top_k, errors="return", **kwargs)
        for (position, _), outcome in zip(images, answered):
            outcomes[position] = outcome
    yield from zip(batch, outcomes)
