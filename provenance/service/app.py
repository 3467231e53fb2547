"""The HTTP service: ``provenance serve`` (FastAPI; the ``[serve]`` extra).

Answers what ``provenance query --json`` answers, over a read-only engine that follows other
processes' reindexes and removals between queries (:class:`~.gate.QueryGate`). Typed errors
become statuses: a bad image 422, a bad request 400, an upload over the cap 413, a missing
or wrong API key 401, no free slot 503 (with ``Retry-After``), a query over its time 504, an
unusable index 503.
"""

import asyncio
import dataclasses
import hmac
import time
from dataclasses import dataclass
from typing import Any

from ..errors import ImageLoadError, IndexStoreError
from ..imagelimits import DEFAULT_LIMITS, ImageLimits
from ..search.batch import query_stream
from .gate import Overloaded, QueryGate

API_PREFIX = "/v1"


@dataclass(frozen=True)
class ServiceSettings:
    """What the service allows: uploads, concurrency, time, and the optional API key."""

    api_key: str | None = None
    max_upload_bytes: int = 32 << 20
    max_batch: int = 32
    max_top_k: int = 100
    running: int = 2
    waiting: int = 8
    timeout_s: float = 30.0
    limits: ImageLimits = DEFAULT_LIMITS


class _Refused(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def create_app(engine: Any, settings: ServiceSettings = ServiceSettings()):
    """A FastAPI app answering queries on ``engine`` (opened read-only; the app does not close it)."""
    from fastapi import FastAPI, Request
    from fastapi.responses import HTMLResponse, JSONResponse, Response

    app = FastAPI(title="provenance", version="1", docs_url=None, redoc_url=None,
                  description="Which reference photo was a suspect image copied from?")
    gate = QueryGate(engine, settings.running, settings.waiting)
    app.state.gate, app.state.settings = gate, settings

    @app.exception_handler(_Refused)
    async def refused(request: Request, exc: _Refused):
        return JSONResponse({"error": exc.message}, status_code=exc.status, headers=exc.headers)

    @app.middleware("http")
    async def authenticate(request: Request, call_next):
        if settings.api_key and request.url.path != f"{API_PREFIX}/healthz" and not _key_matches(request, settings.api_key):
            return JSONResponse({"error": "missing or wrong API key"}, status_code=401,
                                headers={"WWW-Authenticate": "Bearer"})
        return await call_next(request)

    async def answer(images: list[tuple[str, bytes]], top_k: int) -> list[Any]:
        if not 1 <= top_k <= settings.max_top_k:
            raise _Refused(400, f"top_k must lie in [1, {settings.max_top_k}]")
        try:
            gate.admit()
        except Overloaded:
            raise _Refused(503, "busy: every query slot is taken; retry shortly", {"Retry-After": "1"}) from None
        def run() -> list[Any]:
            options = engine.query_options(limits=settings.limits)  # after the gate's reload: its thresholds
            stream = query_stream(engine, images, top_k=top_k, batch_size=len(images), image_of=lambda item: item[1],
                                  options=options)
            return [outcome for _, outcome in stream]

        work = asyncio.get_running_loop().run_in_executor(None, _run_and_release, gate, run)
        try:
            outcomes = await asyncio.wait_for(asyncio.shield(work), settings.timeout_s)
        except asyncio.TimeoutError:
            raise _Refused(504, f"the query took longer than {settings.timeout_s:g} s") from None
        except IndexStoreError as exc:
            raise _Refused(503, str(exc)) from None
        return [_named(name, outcome) for (name, _), outcome in zip(images, outcomes)]

    @app.post(f"{API_PREFIX}/query", summary="Query one image (multipart field 'image', or the raw body)",
              openapi_extra=_upload_schema("image", single=True))
    async def query(request: Request, top_k: int = 5, format: str = "json"):
        if format not in ("json", "html"):
            raise _Refused(400, "format must be json or html")
        images = await _read_images(request, settings, single=True)
        (outcome,) = await answer(images, top_k)
        if isinstance(outcome, ImageLoadError):
            raise _Refused(422, f"{outcome.source}: {outcome.reason}")
        if format == "html":
            from ..report.evidence import evidence_html, query_picture

            page = evidence_html([outcome], engine, lambda result: query_picture(images[0][1], settings.limits))
            return HTMLResponse(page)
        return outcome.to_dict()

    @app.post(f"{API_PREFIX}/query/batch", summary="Query several images (multipart fields 'images')",
              openapi_extra=_upload_schema("images", single=False))
    async def query_batch(request: Request, top_k: int = 5):
        images = await _read_images(request, settings, single=False)
        outcomes = await answer(images, top_k)
        return {"results": [{"query": outcome.source, "error": outcome.reason} if isinstance(outcome, ImageLoadError)
                            else outcome.to_dict() for outcome in outcomes]}

    @app.get(f"{API_PREFIX}/references/{{ref_id}}", summary="A reference's stored metadata")
    async def reference(ref_id: int):
        found = engine.reference(ref_id)
        if found is None:
            raise _Refused(404, f"no reference {ref_id}")
        return dict(found.__dict__)

    @app.get(f"{API_PREFIX}/references/{{ref_id}}/thumbnail", summary="A reference's stored thumbnail (WebP)")
    async def thumbnail(ref_id: int):
        data = engine.reference_thumbnail(ref_id)
        if data is None:
            raise _Refused(404, f"no thumbnail for reference {ref_id}")
        from ..features import THUMB_MIME

        return Response(data, media_type=THUMB_MIME)

    @app.get(f"{API_PREFIX}/healthz", summary="Liveness (no API key needed)")
    async def healthz():
        return {"status": "ok"}

    @app.get(f"{API_PREFIX}/info", summary="What is in the index, and the service's limits")
    async def info():
        details = engine.info()
        return {**details.__dict__, "service": {"max_upload_bytes": settings.max_upload_bytes, "max_batch": settings.max_batch,
                                                "running": settings.running, "waiting": settings.waiting,
                                                "timeout_s": settings.timeout_s, "reloads": gate.reloads,
                                                "auth": bool(settings.api_key)}}

    return app


def _upload_schema(field: str, single: bool) -> dict:
    # the body is read by hand (to cap it before parsing), so FastAPI cannot infer its schema
    binary = {"type": "string", "format": "binary"}
    part = binary if single else {"type": "array", "items": binary}
    content = {"multipart/form-data": {"schema": {"type": "object", "properties": {field: part}, "required": [field]}}}
    if single:
        content["image/*"] = {"schema": binary}
    return {"requestBody": {"required": True, "content": content}}


def _run_and_release(gate: QueryGate, query):
    try:
        return gate.run(query)
    finally:
        gate.release()  # only once the work is done: a timed-out query still holds its slot


def _named(name: str, outcome: Any) -> Any:
    if isinstance(outcome, ImageLoadError):
        return ImageLoadError(name, outcome.reason)
    return dataclasses.replace(outcome, query=name)


def _key_matches(request, expected: str) -> bool:
    header = request.headers.get("authorization", "")
    given = header[7:] if header.lower().startswith("bearer ") else request.headers.get("x-api-key", "")
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode("utf-8"))


async def _read_body(request, cap: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > cap:
        raise _Refused(413, f"upload of {int(declared)} bytes is over the {cap}-byte cap")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            raise _Refused(413, f"upload is over the {cap}-byte cap")
        chunks.append(chunk)
    body = b"".join(chunks)
    request._body = body  # Starlette re-reads a buffered body when parsing a form
    return body


async def _read_images(request, settings: ServiceSettings, single: bool) -> list[tuple[str, bytes]]:
    body = await _read_body(request, settings.max_upload_bytes)
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        if not single:
            raise _Refused(400, "a batch is a multipart upload with one 'images' field per image")
        if not body:
            raise _Refused(400, "no image: send it as the body, or as the multipart field 'image'")
        return [(request.headers.get("x-filename") or "upload", body)]
    try:
        form = await request.form(max_files=settings.max_batch + 1, max_fields=settings.max_batch + 8)
    except Exception as exc:  # a malformed multipart body
        raise _Refused(400, f"cannot parse the multipart upload ({' '.join(str(exc).split()) or type(exc).__name__})") from None
    uploads = [value for key, value in form.multi_items() if key in ("image", "images", "file") and hasattr(value, "read")]
    if not uploads:
        raise _Refused(400, "no image: use the multipart field 'image' (or 'images' for a batch)")
    if single and len(uploads) > 1:
        raise _Refused(400, "one image per /v1/query; use /v1/query/batch for several")
    if len(uploads) > settings.max_batch:
        raise _Refused(413, f"{len(uploads)} images; at most {settings.max_batch} per batch")
    return [(upload.filename or f"upload{number}", await upload.read()) for number, upload in enumerate(uploads)]


def serve(index: str, *, host: str = "127.0.0.1", port: int = 8000, settings: ServiceSettings = ServiceSettings(),
          log_level: str = "info") -> None:
    """Open ``index`` read-only and serve it until interrupted (``provenance serve``)."""
    import uvicorn

    from ..engine import Engine

    with Engine.open(index, read_only=True) as engine:
        engine.image_limits = settings.limits
        engine.preload()
        started = time.perf_counter()
        engine.query(_warm_up_image(), top_k=1)  # load the model before the first request
        app = create_app(engine, settings)
        app.state.warm_up_seconds = time.perf_counter() - started
        uvicorn.run(app, host=host, port=port, log_level=log_level, limit_concurrency=settings.running + settings.waiting + 16)


def _warm_up_image():
    from PIL import Image

    return Image.new("RGB", (64, 64), (128, 128, 128))


__all__ = ["ServiceSettings", "create_app", "serve"]
