"""`graft serve`: the champion's ONNX model behind HTTP (FastAPI), every prediction logged.

POST /predict   images as multipart uploads (`files`), text as JSON {"text": ...} or {"texts": [...]}
GET  /health    200 with the model version, 503 without a champion (readiness)
GET  /live      200 while the process answers (liveness)
GET  /model     version, status, labels, test metrics and the model card
GET  /docs      OpenAPI

With a token (GRAFT_API_TOKEN, or the file serve.token_file names), every endpoint but /live and
/health answers 401 unless the request carries `Authorization: Bearer <token>` (compared in
constant time); /docs and /openapi.json too.

The registry's champion pointer is re-read at most every `serve.reload_seconds`; a newly
promoted champion is loaded beside the old one and swapped in without a restart. Bad requests
get a 4xx naming what was wrong.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import threading
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from pipeline.core.errors import GraftError, ModelNotFound
from pipeline.core.inputs import InputRejected, TooLarge, check_text, kind
from pipeline.core.params import Params
from pipeline.model.quantize import int8_path
from pipeline.production.predictor import Predictor, text_inputs
from pipeline.production.prodlog import ProductionLog, input_identity
from pipeline.production.runtime import THREADS_ENV
from pipeline.release.registry import Registry, champion_dir

logger = logging.getLogger("graft.serve")

class Prediction(BaseModel):
    label: str
    confidence: float
    probabilities: dict[str, float]


class PredictResponse(BaseModel):
    model_version: str
    predictions: list[Prediction]


class Refusal(BaseModel):
    detail: str  # what is wrong with the request, naming the item and the limit


class Health(BaseModel):
    status: str
    model_version: str | None = None
    modality: str | None = None
    provider: str | None = None
    logged: int | None = None
    warning: str | None = None
    reason: str | None = None


def _refusals(*codes: int) -> dict[int | str, dict[str, Any]]:
    why = {400: "the body is not valid JSON, or is nested too deeply", 413: "too many inputs, or an input too large",
           415: "the wrong content type for the champion's modality", 422: "an input that cannot be classified",
           503: "no champion model is loaded"}
    return {code: {"model": Refusal, "description": why[code]} for code in codes}


PREDICT_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": {"oneOf": [
        {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
        {"type": "object", "properties": {"texts": {"type": "array", "items": {"type": "string"}}},
         "required": ["texts"]}]}},
    "multipart/form-data": {"schema": {"type": "object", "required": ["files"], "properties": {
        "files": {"type": "array", "items": {"type": "string", "format": "binary"}}}}},
}}}


class Champion:
    """The loaded champion, swapped when the registry pointer moves."""

    def __init__(self, registry_root: str | Path, variant: str, reload_seconds: float,
                 limits: dict[str, float] | None = None):
        self.registry = Registry(registry_root)
        self.variant, self.reload_seconds, self.limits = variant, reload_seconds, limits or {}
        self.predictor: Predictor | None = None
        self.error = ""
        self._logged = ""  # the last cause written to the server log
        self._checked = 0.0
        self._lock = threading.Lock()
        self.refresh(force=True)

    def refresh(self, force: bool = False) -> None:
        if not force and (self.reload_seconds == 0 or time.monotonic() - self._checked < self.reload_seconds):
            return
        with self._lock:
            self._checked = time.monotonic()
            # the details (paths, the runtime's errors) go to the server's log; a client is told what
            # holds, in words that name no path of this machine
            serving = self.predictor.version if self.predictor else "nothing"
            try:
                name, model_dir = champion_dir(self.registry.root)
            except ModelNotFound as exc:
                self._fail(f"no champion model in the registry yet (train and promote one: `graft run`); "
                           f"still serving {serving}", str(exc))
                return
            except Exception as exc:  # storage unreachable, credentials missing: keep serving what is loaded
                self._fail(f"the registry cannot be read; still serving {serving}",
                           f"cannot read the champion from {self.registry.where()} ({type(exc).__name__}: {exc})")
                return
            if self.predictor is not None and self.predictor.version == name:
                self.error = ""  # serving the champion: an earlier storage or load warning no longer holds
                return
            try:
                self.predictor = Predictor(model_dir, name, self.variant, **self.limits)  # the old one serves until this is ready
                self.error = ""
            except Exception as exc:  # a broken new version must not take the service down
                self._fail(f"champion {name} could not be loaded; still serving {serving}",
                           f"could not load champion {name} from {self.registry.where()}: {type(exc).__name__}: {exc}")

    def _fail(self, public: str, detail: str) -> None:
        if detail != self._logged:  # once per distinct cause, not at every refresh
            logger.warning("%s", detail)
            self._logged = detail
        self.error = public

    def get(self) -> Predictor:
        self.refresh()
        if self.predictor is None:
            raise HTTPException(503, detail=self.error or "no champion model")
        return self.predictor


def _file_inputs(predictor: Predictor, uploads: list[Any], max_bytes: int) -> tuple[list[Any], list[str]]:
    """Each upload checked (size, declared pixels or duration, decoding) and turned into the model's
    input at once: a request holds one decoded image or clip at a time, whatever its batch."""
    inputs, names, raw = [], [], []
    for i, up in enumerate(uploads):
        shown = "".join(c if c.isprintable() else "?" for c in (getattr(up, "filename", None) or "upload"))[:100]
        name = f"files[{i}] ({shown})"
        data = up.file.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise HTTPException(413, detail=f"{name}: larger than serve.max_upload_mb={max_bytes / 2**20:g} MB")
        try:
            inputs.append(predictor.read(data, name))
        except InputRejected as exc:
            raise HTTPException(413 if isinstance(exc, TooLarge) else 422, detail=str(exc)) from None
        names.append(name)
        raw.append((data, Path(getattr(up, "filename", None) or "").suffix[:8]))
    return inputs, names, raw


class _BodyTooLarge(Exception):
    pass


async def _bounded_form(request: Request, limit: int) -> Any:
    """The multipart form, its bytes counted as they arrive: past `limit` the request is refused
    at once, before the parser spools more of it to a temporary file."""
    declared = request.headers.get("content-length", "")
    too_large = HTTPException(413, detail=f"the request is larger than serve.max_request_mb={limit / 2**20:g} MB")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    seen, receive = 0, request.receive

    async def counted() -> Any:
        nonlocal seen
        message = await receive()
        seen += len(message.get("body", b""))
        if seen > limit:
            raise _BodyTooLarge
        return message

    try:
        return await Request(request.scope, counted).form()
    except _BodyTooLarge:
        raise too_large from None
    except Exception as exc:  # a malformed multipart body is the client's, never a 500
        raise HTTPException(400, detail=f"the multipart body cannot be parsed ({type(exc).__name__}); "
                                        "send form field 'files' (curl -F files=@file)") from None


def _texts(body: Any) -> list[str]:
    if not isinstance(body, dict) or not ({"text", "texts"} & body.keys()):
        raise HTTPException(422, detail='send JSON {"text": "..."} or {"texts": ["...", ...]}')
    if "text" in body:
        return [_text(body["text"], "text")]
    if not isinstance(body["texts"], list):
        raise HTTPException(422, detail=f'"texts" is a {kind(body["texts"])}; send a list of strings')
    return [_text(t, f"texts[{i}]") for i, t in enumerate(body["texts"])]


def _text(value: Any, where: str) -> str:
    try:
        return check_text(value, where)
    except InputRejected as exc:
        raise HTTPException(422, detail=str(exc)) from None


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HTTPException(400, detail=f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        raise HTTPException(400, detail="the body's JSON is nested too deeply; send "
                                        '{"text": "..."} or {"texts": [...]}') from None


TOKEN_ENV = "GRAFT_API_TOKEN"
OPEN_PATHS = frozenset({"/live", "/health"})  # liveness and readiness: probes carry no token


def api_token(sp: Any) -> str:
    """The bearer token clients must send: GRAFT_API_TOKEN, else the content of serve.token_file;
    '' when neither is set. A token file that cannot be read is a configuration error."""
    token = os.environ.get(TOKEN_ENV, "").strip()
    if token or not sp.token_file:
        return token
    try:
        token = Path(sp.token_file).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise GraftError(f"serve.token_file: cannot read {sp.token_file} ({exc.strerror}); mount the Secret "
                         f"there, set {TOKEN_ENV}, or set serve.token_file: ''") from None
    if not token:
        raise GraftError(f"serve.token_file: {sp.token_file} is empty; put the token in it")
    return token


def _authorised(header: str, token: str) -> bool:
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def create_app(params: Params, log: ProductionLog | None = None) -> FastAPI:
    sp = params.serve
    token = api_token(sp)
    champion = Champion(params.paths.registry, sp.model, sp.reload_seconds, sp.input_limits())
    own_log = log is None
    log = log or ProductionLog(params.paths.log, sp.flush_records, sp.flush_seconds)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):  # type: ignore[no-untyped-def]
        yield
        if own_log:
            log.close()  # SIGTERM / Ctrl-C: everything buffered reaches the log

    app = FastAPI(title="graft model server", lifespan=lifespan,
                  description="The registry champion's ONNX model, with a production log for drift monitoring.")
    app.state.champion, app.state.log = champion, log

    if token:
        @app.middleware("http")
        async def require_token(request: Request, call_next: Any) -> Any:
            if request.url.path in OPEN_PATHS or _authorised(request.headers.get("authorization", ""), token):
                return await call_next(request)
            return JSONResponse({"detail": "missing or wrong bearer token: send the header "
                                           "'Authorization: Bearer <token>' (the server's GRAFT_API_TOKEN)"},
                                status_code=401, headers={"WWW-Authenticate": "Bearer"})

    @app.post("/predict", response_model=PredictResponse, responses=_refusals(400, 413, 415, 422, 503),
              openapi_extra=PREDICT_BODY,
              description="Text models: JSON {\"text\": ...} or {\"texts\": [...]}. Image and audio models: "
                          "multipart field `files`. Every refusal is a 4xx whose detail names the input and the limit.")
    async def predict(request: Request) -> PredictResponse:
        predictor = champion.get()
        ctype = request.headers.get("content-type", "")
        spec = predictor.kind
        if spec.folder_data:
            if not ctype.startswith("multipart/form-data"):
                raise HTTPException(415, detail=f"model {predictor.version} classifies {spec.noun}: {spec.upload_hint}")
            form = await _bounded_form(request, int(sp.max_request_mb * 2**20))
            uploads = [v for v in form.getlist("files") + form.getlist("file") if hasattr(v, "file")]
            if not uploads:
                raise HTTPException(422, detail=f"no file in the request: send the {spec.noun} in the form field 'files'")
            if len(uploads) > sp.max_batch:
                raise HTTPException(413, detail=f"{len(uploads)} files; at most serve.max_batch={sp.max_batch}")
            inputs, sources, raw = await run_in_threadpool(_file_inputs, predictor, uploads,
                                                           int(sp.max_upload_mb * 2**20))
            identity = await run_in_threadpool(lambda: [input_identity(d, sfx, log, sp.keep_inputs) for d, sfx in raw])
        else:
            if not ctype.startswith("application/json"):
                raise HTTPException(415, detail=f'model {predictor.version} classifies text: send JSON '
                                                '{"text": "..."} or {"texts": [...]}')
            limit = int(sp.max_upload_mb * 2**20)
            body = bytearray()
            async for chunk in request.stream():  # never more than the limit in memory
                body += chunk
                if len(body) > limit:
                    raise HTTPException(413, detail=f"the body is larger than serve.max_upload_mb={sp.max_upload_mb:g} MB")
            texts = _texts(_json(bytes(body)))
            if not texts:
                raise HTTPException(422, detail='"texts" is empty')
            if len(texts) > sp.max_batch:
                raise HTTPException(413, detail=f"{len(texts)} texts; at most serve.max_batch={sp.max_batch}")
            sources = ["api"] * len(texts)
            identity = text_inputs(texts, sp.keep_inputs)
            inputs = [predictor.read(t, f"texts[{i}]") for i, t in enumerate(texts)]
        # inference off the event loop: /health and other requests are answered meanwhile
        preds = await run_in_threadpool(predictor.predict_inputs, inputs)
        log.append(predictor.records(preds, sources, identity))
        return PredictResponse(model_version=predictor.version, predictions=[
            Prediction(label=lbl, confidence=float(preds.confidence[i]),
                       probabilities={c: float(p) for c, p in zip(predictor.labels, preds.probs[i], strict=True)})
            for i, lbl in enumerate(preds.labels)])

    @app.get("/health", response_model=Health, responses={503: {"model": Health, "description": "no champion"}})
    def health() -> JSONResponse:
        champion.refresh()
        p = champion.predictor
        if p is None:
            return JSONResponse({"status": "unavailable", "reason": champion.error}, status_code=503)
        return JSONResponse({"status": "ok", "model_version": p.version, "modality": p.modality,
                             "provider": p.provider, "logged": log.written, "warning": champion.error or None})

    @app.get("/live")
    def live() -> dict[str, str]:
        """Liveness: the process answers (readiness, a loaded champion, is /health)."""
        return {"status": "alive"}

    @app.get("/model", responses=_refusals(503))
    def model() -> dict[str, Any]:
        """A public summary of the champion: no params, paths or lineage (those are in its model card,
        for the team, in the registry)."""
        p = champion.get()
        v = champion.registry.get(p.version)
        return {"version": p.version, "status": v.status, "created": v.created, "model": p.model_name,
                "modality": p.modality, "labels": p.labels, "provider": p.provider, "variant": sp.model,
                "test_metrics": v.summary.get("test", {})}

    return app


SERVE_PARAMS_ENV = "GRAFT_SERVE_PARAMS"  # the resolved params, for each worker process of --workers N


def app_from_env() -> FastAPI:
    """uvicorn's app factory in every worker process of `graft serve --workers N`: each has its
    own champion (hot reload included) and its own production-log writer."""
    from pipeline.core.config import parse_params

    return create_app(parse_params(json.loads(os.environ[SERVE_PARAMS_ENV]), source=SERVE_PARAMS_ENV))


def serve(params: Params, host: str | None = None, port: int | None = None, workers: int | None = None) -> None:
    import uvicorn

    if params.serve.model == "int8":  # refuse at start, with export's reason, rather than answer 503s
        try:
            name, model_dir = champion_dir(params.paths.registry)
        except ModelNotFound:
            pass  # no champion yet: the server waits for one
        else:
            int8_path(model_dir, name)
    workers = workers or params.serve.workers
    bind = host or params.serve.host
    if not api_token(params.serve) and bind not in ("127.0.0.1", "localhost", "::1"):
        logger.warning("graft serve listens on %s without a token: anyone who reaches the port can call it; "
                       "set %s (or serve.token_file) to require one", bind, TOKEN_ENV)
    where = {"host": bind, "port": port or params.serve.port, "log_level": "info"}
    if workers == 1:
        uvicorn.run(create_app(params), **where)
        return
    os.environ[SERVE_PARAMS_ENV] = params.model_dump_json(by_alias=True)
    os.environ.setdefault(THREADS_ENV, str(max(1, (os.cpu_count() or 1) // workers)))  # no oversubscription
    uvicorn.run("graft.serve:app_from_env", factory=True, workers=workers, **where)
