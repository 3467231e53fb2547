"""One BLAS thread while the engine's own threads work.

A query runs its images and candidates on its own threads beside ONNX Runtime's, and its
matrix products (descriptor matching, visual words, vector rescoring) are small. OpenBLAS
gives each product both cores and its idle threads then spin: on the 2-core development
machine they took a third of a query's CPU (docs/benchmarks.md). scikit-learn limits BLAS
the same way around its parallel sections.

The limit is process-wide (OpenBLAS keeps one thread count), so it is counted: the first
caller in sets it, the last one out restores what the process had, and concurrent queries
never restore each other's limit halfway through. threadpoolctl lets one live thread at a
time change a process-wide pool, so both changes are made on one long-lived thread of this
module; where the application's own code holds that control, queries keep its setting.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, Iterator

_lock = threading.Lock()
_inside = 0
_controller: Any = None
_restore: Any = None
#: the one thread that changes the limits (threadpoolctl's rule above)
_changer = ThreadPoolExecutor(1, thread_name_prefix="provenance-blas")


def _after_fork_in_child() -> None:
    global _changer, _lock, _inside, _restore
    # a forked child has none of the parent's threads: a fresh executor, nothing inside
    _changer, _lock, _inside, _restore = ThreadPoolExecutor(1, thread_name_prefix="provenance-blas"), threading.Lock(), 0, None


os.register_at_fork(after_in_child=_after_fork_in_child)


@contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Run the block with every loaded BLAS library on one thread (no-op without threadpoolctl)."""
    global _inside, _controller, _restore
    with _lock:
        if _inside == 0:
            _restore = _changer.submit(_limit).result()
        _inside += 1
    try:
        yield
    finally:
        with _lock:
            _inside -= 1
            if _inside == 0 and _restore is not None:
                _changer.submit(_restore_limits, _restore).result()
                _restore = None


def _limit() -> Any:
    global _controller
    try:
        from threadpoolctl import ThreadpoolController

        if _controller is None:  # finding the loaded libraries takes a millisecond: once per process
            _controller = ThreadpoolController()
        return _controller.limit(limits=1, user_api="blas")
    except Exception:  # noqa: BLE001  (no threadpoolctl, or a library it cannot drive: a cost, never a failed query)
        return None


def _restore_limits(limiter: Any) -> None:
    try:
        limiter.restore_original_limits()
    except Exception:  # noqa: BLE001  (as in _limit)
        pass
