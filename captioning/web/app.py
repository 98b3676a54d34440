"""The FastAPI application: the page, the HTTP API and its docs, over one batching worker.

``create_app`` takes a loaded ``Captioner`` (the model is loaded once, by the caller) and returns
the app; its lifespan starts the worker thread (``batching.CaptionBatcher``) and, at shutdown,
stops it and deletes the private folder of uploads (``store.ResultStore``). Request handlers never
call TensorFlow themselves: they decode uploads with ``images.load_image`` (the checks ``caption``
applies: empty, not an image, truncated, decompression bomb) and hand the pixels to the worker.
"""

import asyncio
import re
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from fastapi import FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

import captioning
from captioning import config
from captioning.errors import CaptioningError
from captioning.web import rendering
from captioning.web.batching import CaptionBatcher, ServerBusy, ServerStopping
from captioning.web.middleware import AnswerCancelled, BodySizeLimit, SafetyHeaders
from captioning.web.store import ResultStore, StoredUpload, display_name

if TYPE_CHECKING:
    from captioning.inference.captioner import Captioner

STATIC_DIR = Path(__file__).resolve().parent / "static"
# The page loads only what this server serves; previews are blob: URLs made in the browser.
PAGE_CSP = ("default-src 'self'; img-src 'self' blob:; object-src 'none'; base-uri 'none'; "
            "frame-ancestors 'none'; form-action 'self'")
DEFAULT_SETTINGS = config.ServeConfig()  # frozen: one instance serves as every default
TAGS_NOTES = {
    (True, True): "captions name what the encoder's ImageNet classifier is sure of",
    (False, True): "tags were turned off for this request",
    (True, False): "this model's encoder has no ImageNet classifier; captions are not tagged",
    (False, False): "this model's encoder has no ImageNet classifier; captions are not tagged",
}

API_DESCRIPTION = """Caption photos with the tool's model, as `caption --json` does.

* `POST /api/captions`: multipart form with one or more `files`, optional `beam_size` and `tags`.
  Each file gets one entry in `results`, in order: `image` (the uploaded file name), `caption`,
  `score`, `png` (URL of the annotated PNG), `attention_map` (URL, attention models only), or
  `caption: null` and `error` for a file that is not a usable image. `tags` (default true): make
  captions name what the encoder's ImageNet classifier is sure of, for models whose encoder has
  one (the response's `tags` object says whether they were used; each result lists its tags).
* Limits: see `GET /api/limits`. A request over the size limit gets 413; a file over the per-file
  limit gets an `error` entry. A busy server answers 503 with `Retry-After`.
* Result PNGs are rendered on first request and expire (see `result_ttl_s`).
"""


# ---------------------------------------------------------------------------- response models


class TagEntry(BaseModel):
    """A confident tag of a photo, as ``caption --json`` reports it."""

    tag: str
    confidence: float
    added: bool  # the caption names it only because the search was made to


class CaptionEntry(BaseModel):
    """One uploaded file's result, shaped like an entry of ``caption --json``."""

    image: str
    caption: str | None
    score: float | None = None
    tags: list[TagEntry] | None = None
    png: str | None = None
    attention_map: str | None = None
    error: str | None = None


class TagsReport(BaseModel):
    requested: bool
    supported: bool
    note: str


class CaptionsResponse(BaseModel):
    model: str
    beam_size: int
    tags: TagsReport
    results: list[CaptionEntry]


class Limits(BaseModel):
    max_files: int
    max_file_bytes: int
    max_request_bytes: int
    max_image_pixels: int
    max_beam_size: int
    default_beam_size: int
    result_ttl_s: float
    image_extensions: list[str]
    attention_maps: bool


# ---------------------------------------------------------------------------- server state


class ServerState:
    """What the handlers share: the worker, the store of uploads, and facts about the model."""

    def __init__(self, captioner: "Captioner", model_dir: Path, settings: config.ServeConfig):
        from captioning.bundles.store import describe_bundle, read_bundle_config

        self.captioner = captioner
        self.settings = settings
        self.model_dir = Path(model_dir)
        self.model_name = self.model_dir.name
        bundle = getattr(captioner, "bundle", None)
        self.bundle_config = bundle.config if bundle is not None else read_bundle_config(model_dir)
        self.description = describe_bundle(model_dir)
        self.ensemble_members = len(self.bundle_config.members)
        self.attention = captioner.has_attention
        self.tags = captioner.tagger is not None  # the model can tag
        self.batcher = CaptionBatcher(captioner, max_images=settings.batch_max_images,
                                      wait_s=settings.batch_wait_ms / 1000.0,
                                      max_queued_images=settings.max_queued_images)
        self.store: ResultStore | None = None  # from start() to stop()
        self.cancelled_requests = 0  # cancelled by the server as it stopped (middleware.AnswerCancelled)
        self.requests_in_progress = 0  # changed on the event loop's thread only (AnswerCancelled): no lock
        self._wait_for_worker = True  # at stop; False after stop_now()

    @property
    def results(self) -> ResultStore:
        """The store of uploads and rendered PNGs (the server is running).

        Raises:
            ServerStopping: before start or after stop.
        """
        if self.store is None:
            raise ServerStopping("the server is not running; try again in a moment")
        return self.store

    def start(self) -> None:
        self.store = ResultStore(self.settings.result_ttl_s, self.settings.max_stored_bytes)
        self.batcher.start()
        self.batcher.warm_up(config.DEFAULT_BEAM_SIZE)

    def stop(self) -> None:
        """Fail the work still waiting, delete the uploads; waits for the batch in progress unless
        ``stop_now`` was called."""
        self.batcher.stop(timeout=30.0 if self._wait_for_worker else 0)
        if self.store is not None:
            self.store.close()

    def stop_now(self) -> None:
        """Make ``stop`` leave the batch in progress to the worker thread (a daemon) and return at once.

        For a second Ctrl-C: its requests are cancelled, nobody waits for their captions.
        """
        self._wait_for_worker = False

    def count_cancelled(self) -> None:
        self.cancelled_requests += 1

    def count_in_progress(self, step: int) -> None:
        self.requests_in_progress += step

    def decode_upload(self, name: str, data: bytes) -> tuple[StoredUpload, object] | str:
        """Store an upload privately and decode it as ``caption`` would; the error line otherwise.

        Runs on a request thread (Pillow only). Messages name the uploaded file, never the
        private path it was stored under.
        """
        try:
            entry = self.results.add(data, name)
        except CaptioningError as error:
            return str(error)
        try:
            return entry, self.captioner.load_pixels(entry.path)
        except CaptioningError as error:
            self.results.discard(entry.id)
            return _rename(str(error), entry.path, name)
        except Exception as error:  # noqa: BLE001 - one bad upload must not fail the request
            self.results.discard(entry.id)
            return f"{name}: cannot read image ({type(error).__name__})"


def _rename(message: str, private_path: Path, name: str) -> str:
    """A loader message about the private copy, made to name the upload instead."""
    message = message.replace(str(private_path), name).replace(private_path.name, name)
    return message if message.startswith(name) else f"{name}: {message}"


def _download_name(name: str, kind: str) -> str:
    stem = Path(name).stem or "photo"
    return f"{re.sub(r'[^A-Za-z0-9._-]+', '_', stem)[:80]}_{kind}.png"


def over_limit(size: int | None, limit: int) -> str:
    """``20.03 MiB, over the 20 MiB limit``: both in the unit the limit is a whole number of.

    MiB, else KiB, else bytes; the size gets the decimals it needs to read as more than the limit
    (up to three, then exact bytes), so the two numbers never look the same.
    """
    unit, name = next(((unit, name) for unit, name in ((2**20, "MiB"), (2**10, "KiB"))
                       if limit >= unit and limit % unit == 0), (1, "bytes"))
    limit_text = f"{limit // unit:,} {name}" if unit > 1 else f"{limit:,}-byte"
    if size is None:
        return f"over the {limit_text} limit"
    for decimals in range(1, 4) if unit > 1 else ():
        shown = round(size / unit, decimals)
        if shown > limit / unit:
            return f"{shown:.{decimals}f} {name}, over the {limit_text} limit"
    if unit > 1:
        limit_text = f"{limit_text} ({limit:,}-byte)"
    return f"{size:,} bytes, over the {limit_text} limit"


# ---------------------------------------------------------------------------- the app


def create_app(captioner: "Captioner", model_dir: str | Path, settings: config.ServeConfig = DEFAULT_SETTINGS,
               on_ready: Callable[[], None] | None = None) -> FastAPI:
    """The web app around a loaded captioner.

    Args:
        captioner: a loaded ``captioning.inference.captioner.Captioner``.
        model_dir: the bundle it was loaded from (for ``/api/model``).
        settings: limits and batching.
        on_ready: called once the worker is warm and the app takes requests.

    Returns:
        The FastAPI app; use it as an ASGI app (uvicorn) or with ``fastapi.testclient.TestClient``.
    """
    from fastapi_offline import FastAPIOffline

    state = ServerState(captioner, Path(model_dir), settings)

    @asynccontextmanager
    async def lifespan(_app):
        await run_in_threadpool(state.start)
        if on_ready is not None:
            on_ready()
        try:
            yield
        finally:
            await run_in_threadpool(state.stop)

    # FastAPI's own Swagger UI and ReDoc pages, with their scripts served from this server.
    app = FastAPIOffline(title="Image captioning", version=captioning.__version__,
                         description=API_DESCRIPTION, lifespan=lifespan, static_url="/docs-static")
    app.state.server = state
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes)
    app.add_middleware(SafetyHeaders, content_security_policy=PAGE_CSP)
    app.add_middleware(AnswerCancelled, on_cancel=state.count_cancelled,  # outermost of these three
                       on_change=state.count_in_progress)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    _add_error_handlers(app)
    _add_page_routes(app)
    _add_api_routes(app, state)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServerBusy)
    @app.exception_handler(ServerStopping)
    async def busy(_request: Request, error: CaptioningError):
        return JSONResponse({"detail": str(error)}, status_code=503, headers={"Retry-After": "5"})

    @app.exception_handler(CaptioningError)
    async def handled(_request: Request, error: CaptioningError):
        return JSONResponse({"detail": str(error)}, status_code=503)

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, error: Exception):
        # Starlette re-raises after this answer, so uvicorn logs the traceback on the server.
        return JSONResponse({"detail": f"internal error ({type(error).__name__}); the server is still "
                                       "running and its log has the details"}, status_code=500)


def _add_page_routes(app: FastAPI) -> None:
    @app.get("/", include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse((STATIC_DIR / "index.html").read_text(encoding="utf-8"))


def _add_api_routes(app: FastAPI, state: ServerState) -> None:
    settings = state.settings

    @app.get("/healthz", summary="Whether the server can caption", tags=["server"])
    def healthz():
        alive = state.batcher.alive
        body = {"status": "ok" if alive else "unavailable", "model": state.model_name,
                "queued_images": state.batcher.queued_images, **asdict(state.batcher.stats),
                "stored_results": len(state.store) if state.store is not None else 0,
                # besides this one: a stalled upload shows here (and is what Ctrl-C waits for)
                "requests_in_progress": max(state.requests_in_progress - 1, 0)}
        return JSONResponse(body, status_code=200 if alive else 503)

    @app.get("/api/model", summary="The loaded model, as `info --model` describes it", tags=["model"])
    def model(format: Annotated[Literal["json", "text"], Query(
            description="`text`: the lines `info --model` prints")] = "json"):
        if format == "text":
            return PlainTextResponse(state.description + "\n")
        return {"name": state.model_name, "path": str(state.model_dir),
                # "a & b" when the ensemble's members read two encoders (inference.encoder_set)
                "encoder": " & ".join(spec.name for spec in state.bundle_config.encoders),
                "decoder": state.bundle_config.decoder.kind,
                "ensemble_members": state.ensemble_members, "attention_maps": state.attention,
                "description": state.description, "config": state.bundle_config.to_json()}

    @app.get("/api/limits", response_model=Limits, summary="Upload limits and options", tags=["model"])
    def limits():
        from captioning.data import images

        return Limits(max_files=settings.max_files, max_file_bytes=settings.max_file_bytes,
                      max_request_bytes=settings.max_request_bytes,
                      max_image_pixels=images.MAX_IMAGE_PIXELS, max_beam_size=settings.max_beam_size,
                      default_beam_size=config.DEFAULT_BEAM_SIZE, result_ttl_s=settings.result_ttl_s,
                      image_extensions=list(config.IMAGE_EXTENSIONS), attention_maps=state.attention)

    @app.post("/api/captions", response_model=CaptionsResponse, response_model_exclude_unset=True,
              summary="Caption one or more photos", tags=["captions"],
              responses={413: {"description": "too many files, or the request is too large"},
                         503: {"description": "busy or shutting down; retry after a few seconds"}})
    async def captions(
        request: Request,
        files: Annotated[list[UploadFile], File(description="one or more photos (JPEG, PNG, ...)")],
        beam_size: Annotated[int, Form(ge=1, le=settings.max_beam_size,
                                       description="beam width; 1 is greedy")] = config.DEFAULT_BEAM_SIZE,
        tags: Annotated[bool, Form(description="make captions name what the encoder's ImageNet "
                                               "classifier is sure of (models whose encoder has one)")] = True,
    ) -> CaptionsResponse:
        if len(files) > settings.max_files:
            raise HTTPException(413, f"{len(files)} files in one request; send at most "
                                     f"{settings.max_files} per request")
        received = [await _receive(upload, index, settings.max_file_bytes)
                    for index, upload in enumerate(files)]
        decoded = await asyncio.gather(*(
            run_in_threadpool(state.decode_upload, name, data) if isinstance(data, bytes) else _done(data)
            for name, data in received))
        good = [item for item in decoded if not isinstance(item, str)]
        try:
            captioned = await _caption(state, [pixels for _, pixels in good], beam_size, tags) if good else []
        except BaseException:
            for entry, _ in good:
                state.results.discard(entry.id)
            raise
        by_entry = {id(entry): result for (entry, _), result in zip(good, captioned, strict=True)}
        results = []
        for (name, _), item in zip(received, decoded, strict=True):
            if isinstance(item, str):
                results.append(CaptionEntry(image=name, caption=None, error=item))
                continue
            entry, _ = item
            result = by_entry[id(entry)]
            entry.caption, entry.tokens, entry.score = result.caption, result.tokens, result.score
            fields = {"image": entry.name, "caption": result.caption, "score": round(result.score, 6),
                      "tags": None if result.tags is None else [
                          TagEntry(tag=t.word, confidence=t.confidence, added=t.added) for t in result.tags],
                      "png": str(request.url_for("captioned_png", result_id=entry.id))}
            if state.attention:
                fields["attention_map"] = str(request.url_for("attention_png", result_id=entry.id))
            results.append(CaptionEntry(**fields))
        return CaptionsResponse(model=state.model_name, beam_size=beam_size,
                                tags=TagsReport(requested=tags, supported=state.tags,
                                                note=TAGS_NOTES[tags, state.tags]),
                                results=results)

    @app.get("/api/results/{result_id}/captioned.png", name="captioned_png", tags=["captions"],
             summary="The photo with its caption beneath it (PNG)",
             responses={200: {"content": {"image/png": {}}}, 404: {"description": "unknown or expired"}})
    def captioned_png(result_id: str):
        entry = _stored(state, result_id)
        try:
            path = rendering.captioned_png(state.results, entry)
            return _png(path.read_bytes(), entry, "captioned")
        except (CaptioningError, OSError):
            raise HTTPException(404, "this result has expired; caption the photo again") from None

    @app.get("/api/results/{result_id}/attention.png", name="attention_png", tags=["captions"],
             summary="Where the model looked for each word (attention models; PNG)",
             responses={200: {"content": {"image/png": {}}}, 404: {"description": "unknown, expired, "
                                                                   "or the model has no attention"}})
    async def attention_png(result_id: str):
        entry = _stored(state, result_id)
        if not state.attention:
            raise HTTPException(404, f"{state.model_name} uses the {state.captioner.decoder_kind} "
                                     "decoder, which has no attention to show")
        try:
            if not entry.output("attention").is_file():
                pixels = await run_in_threadpool(state.captioner.load_pixels, entry.path)
                alphas = await _wait(state, state.batcher.submit_attention(pixels, entry.tokens))
                words = [state.captioner.vocab.words[token] for token in entry.tokens]
                await run_in_threadpool(rendering.attention_png, state.results, entry, words, alphas)
            data = await run_in_threadpool(entry.output("attention").read_bytes)
        except (CaptioningError, OSError) as error:
            if isinstance(error, (ServerBusy, ServerStopping)):
                raise
            raise HTTPException(404, "this result has expired; caption the photo again") from None
        return _png(data, entry, "attention")


async def _receive(upload: UploadFile, index: int, max_bytes: int) -> tuple[str, bytes | str]:
    """``(display name, bytes)``, or ``(name, error line)`` for a file over the size limit."""
    name = display_name(upload.filename, index)
    if upload.size is None or upload.size <= max_bytes:
        data = await upload.read(max_bytes + 1)
        if len(data) <= max_bytes:
            return name, data
    return name, f"{name}: file is too large ({over_limit(upload.size, max_bytes)}); resize or compress it"


async def _done(value):
    return value


async def _caption(state: ServerState, pixels: list, beam_size: int, tags: bool = True):
    return await _wait(state, state.batcher.submit(pixels, beam_size, tags))


async def _wait(state: ServerState, future):
    try:
        return await asyncio.wait_for(asyncio.wrap_future(future), state.settings.request_timeout_s)
    except TimeoutError:
        raise ServerBusy(f"captioning took longer than {state.settings.request_timeout_s:g} s; "
                         "the server is overloaded, try again later") from None


def _stored(state: ServerState, result_id: str) -> StoredUpload:
    entry = state.store.get(result_id) if state.store is not None else None
    if entry is None or entry.caption is None:
        raise HTTPException(404, "no such result (results expire after "
                                 f"{state.settings.result_ttl_s / 60:g} minutes); caption the photo again")
    return entry


def _png(data: bytes, entry: StoredUpload, kind: str) -> Response:
    return Response(data, media_type="image/png", headers={
        "Content-Disposition": f'inline; filename="{_download_name(entry.name, kind)}"',
        "Cache-Control": "private, max-age=600"})
