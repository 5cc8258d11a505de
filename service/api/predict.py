"""POST /v1/models/{name}/predict: multipart `files` or JSON {"images": [base64...]} -> per-head outputs.

Body reading is streamed and capped; model loading (LRU, warmed up) and decoding + preprocessing run off the
event loop (decoding in the threadpool, or -- for a lone request to an idle model -- in the inference thread
just before the network, saving a thread hop); the network runs in the model version's MicroBatcher
(service/batcher.py: dynamic micro-batching in the process's one inference thread). Too many images -> 413;
zero images, bad base64 or an undecodable image -> 422 naming the index; prediction queue full -> 503 with Retry-After.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import ValidationError as PydanticValidationError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from service.api.deps import bearer_key, check_scope
from service.api.errors import validation_detail
from service.api.models import get_version
from service.api.schemas import ALIAS_PATTERN, ErrorRead, PredictCreate, PredictRead
from service.api.uploads import MemorySink, StreamingForm, check_content_length
from service.auth import Principal
from service.errors import (
    PayloadTooLargeError,
    UnavailableError,
    UnsupportedMediaError,
    ValidationError,
)
from service.serving.batcher import Overloaded

router = APIRouter(prefix="/v1/models", tags=["predict"])
FORM_OVERHEAD = 256 * 1024
PREDICT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {"type": "object", "required": ["files"], "properties": {
                    "files": {"type": "array", "items": {"type": "string", "format": "binary"}}}},
            },
            "application/json": {
                "schema": {"type": "object", "required": ["images"], "additionalProperties": False, "properties": {
                    "images": {"type": "array", "items": {"type": "string", "format": "byte"}}}},
            },
        },
    }
}
PREDICT_OPENAPI = {**PREDICT_BODY, "security": [{"HTTPBearer": []}]}  # the key is read without a dependency
ERRORS = {code: {"model": ErrorRead} for code in (401, 403, 404, 413, 415, 422, 503)}


def decode_image(data: bytes, where: str) -> Any:
    """Bytes -> a fully decoded PIL image, checked like dataset images (PNG/JPEG, pixel cap) -> 422 naming `where`."""
    from service.ml.data import DataError, open_image

    if not data:
        raise ValidationError(f"{where}: empty image")
    try:
        return open_image(data, where)
    except DataError as exc:
        raise ValidationError(str(exc)) from None


def _b64(text: str, where: str) -> bytes:
    if text.startswith("data:") and "," in text:  # accept data URLs
        text = text.split(",", 1)[1]
    try:
        return base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValidationError(f"{where}: not valid base64") from None


async def _read_capped(request: Request, cap: int) -> bytes:
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > cap:
            raise PayloadTooLargeError(f"request body is larger than the limit of {cap} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_images(request: Request, max_images: int, max_bytes: int) -> tuple[str, list[bytes]]:
    """-> (field name used in errors, raw image bytes in input order)."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "application/json":
        check_content_length(request.headers.get("content-length"), max_bytes * 4 // 3 + FORM_OVERHEAD)
        raw = await _read_capped(request, max_bytes * 4 // 3 + FORM_OVERHEAD)
        try:
            body = PredictCreate.model_validate(json.loads(raw))
        except json.JSONDecodeError as exc:
            raise ValidationError(f"body: invalid JSON ({exc})") from None
        except PydanticValidationError as exc:
            raise ValidationError(validation_detail([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()])) from None
        if len(body.images) > max_images:
            raise PayloadTooLargeError(f"images: {len(body.images)} images; at most {max_images} per request")
        return "images", [_b64(text, f"images[{i}]") for i, text in enumerate(body.images)]
    if ctype == "multipart/form-data":
        check_content_length(request.headers.get("content-length"), max_bytes + FORM_OVERHEAD)
        budget = [max_bytes]
        sinks: list[MemorySink] = []

        def open_file(field: str, filename: str, _ctype: str) -> MemorySink:
            if field not in ("files", "file"):
                raise ValidationError(f"unexpected file field '{field}': send images as 'files'")
            if len(sinks) >= max_images:
                raise PayloadTooLargeError(f"files: more than {max_images} images; at most {max_images} per request")
            sinks.append(MemorySink(budget, f"files[{len(sinks)}]"))
            return sinks[-1]

        form = StreamingForm(request.headers.get("content-type", ""), open_file)
        await form.consume(request.stream(), max_bytes + FORM_OVERHEAD)
        return "files", [s.getvalue() for s in sinks]
    raise UnsupportedMediaError("send multipart/form-data with 'files', or application/json with 'images' (base64)")


def _resolve(session: Session, principal: Principal, name: str, version: int | None,
             alias: str | None = None) -> tuple[str, int, str]:
    mv = get_version(session, principal, name, version, alias)
    return mv.id, mv.version, mv.artifact_path


def _authorize(state: Any, key: str | None) -> Principal:
    principal = state.authenticator.authenticate(key)
    check_scope(principal, "predict")
    return principal


def _authorize_and_resolve(state: Any, key: str | None, name: str, version: int | None,
                           alias: str | None = None) -> tuple[str, int, str]:
    """Threadpool, ONE hop for the per-request blocking work before the body is read: the API key (cached
    lookups, see service.auth), the 'predict' scope (deps.check_scope, as deps.require) and the
    model version (name -> version resolution cached ~1 s)."""
    principal = check_scope(state.authenticator.authenticate(key), "predict")
    cache_key = (principal.team, name, version, alias)
    found = state.predictors.resolved(cache_key)  # short TTL (service/predictor_cache.py)
    if found is None:
        with state.sessionmaker() as session:
            found = _resolve(session, principal, name, version, alias)
        state.predictors.remember(cache_key, found)
    return found


def _resolved_without_io(state: Any, key: str | None, name: str, version: int | None,
                         alias: str | None = None) -> tuple[str, int, str] | None:
    """The same answer as _authorize_and_resolve when both caches can give it without I/O, else None."""
    principal = state.authenticator.cached(key)
    if principal is None:
        return None
    check_scope(principal, "predict")
    return state.predictors.resolved((principal.team, name, version, alias))


@router.post("/{name}/predict", response_model=PredictRead, openapi_extra=PREDICT_OPENAPI, responses=ERRORS,
             summary="Run a model version (default latest) on one or more images")
async def predict(
    name: str,
    request: Request,
    version: Annotated[int | None, Query(ge=1, le=2**31 - 1, description="model version; default the latest")] = None,
    alias: Annotated[str | None, Query(pattern=ALIAS_PATTERN, description="serve the version this alias points at "
                                       "(exclusive with version and latest)")] = None,
    latest: Annotated[bool, Query(description="serve the newest version (the default; exclusive with version "
                                  "and alias)")] = False,
) -> Response:
    # The hot path skips FastAPI dependencies (a sync one is a threadpool hop; solving them costs ~0.5 ms on this
    # machine): app state is read directly; the key and scope checks are the dependencies' own functions.
    state = request.app.state
    settings = state.settings
    key = await bearer_key(request)
    if (version is not None) + (alias is not None) + latest > 1:  # the key is checked first (401/403 win)
        await run_in_threadpool(_authorize, state, key)
        raise ValidationError("version, alias and latest are mutually exclusive: give at most one")
    found = _resolved_without_io(state, key, name, version, alias)
    if found is None:
        found = await run_in_threadpool(_authorize_and_resolve, state, key, name, version, alias)
    version_id, number, artifact = found
    field, blobs = await read_images(request, settings.MAX_PREDICT_IMAGES, settings.MAX_PREDICT_BYTES)
    if not blobs:
        raise ValidationError(f"{field}: at least one image is required")
    entry = await load_entry(state, version_id, artifact)
    outputs = await run_images(request, entry, blobs=blobs, field=field)
    return predict_response(name, number, outputs, alias)


def predict_response(name: str, number: int, predictions: list[dict], alias: str | None = None) -> Response:
    """The PredictRead body (its schema documents the route), encoded once with the standard library: our own
    Predictor built it, so it is not validated again nor walked by jsonable_encoder. A non-finite number (a
    diverged model) becomes null, as pydantic's JSON mode writes it."""
    body = {"model": {"name": name, "version": number}, "alias": alias, "predictions": predictions}
    try:
        text = json.dumps(body, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except ValueError:
        text = json.dumps(_finite(body), ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return Response(text.encode(), media_type="application/json")


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


async def load_entry(state: Any, version_id: str, artifact: str) -> Any:
    """The loaded (predictor, micro-batcher) of a model version: the LRU's fast path, else a threadpool load."""
    return state.predictors.peek(version_id) or await run_in_threadpool(
        state.predictors.entry, version_id, str(state.storage.abs(artifact)))


async def run_images(request: Request, entry: Any, *, blobs: list[bytes] | None = None, field: str = "",
                     arrays: Any = None) -> list[dict]:
    """THE inference path of /v1 predict and /v2 infer: encoded images (`blobs`, decoded here, 422 naming
    `field[i]`) or preprocessed (n, H, W, C) uint8 `arrays` -> the model version's micro-batcher -> per-image
    head dicts. A full queue -> 503 with Retry-After."""
    try:
        if arrays is not None:
            return await entry.batcher.submit(arrays)
        if entry.batcher.idle:  # lone request: decode + preprocess in the inference thread, one hop in all
            return await entry.batcher.submit_lazy(partial(_prepare, entry.predictor, blobs, field), len(blobs))
        # under load: preprocess in the threadpool, the inference thread only runs the network
        prepared = await run_in_threadpool(_prepare, entry.predictor, blobs, field)
        return await entry.batcher.submit(prepared)
    except Overloaded as exc:
        metrics = getattr(request.app.state, "metrics", None)
        if metrics is not None:
            metrics.overloaded.inc()
        error = UnavailableError(str(exc))
        error.headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after)))}
        raise error from None


def _prepare(predictor: Any, blobs: list[bytes], field: str) -> Any:
    """Threadpool: decode (422 naming the index) + preprocess exactly as in training -> (n, H, W, C) uint8."""
    return predictor.preprocess([decode_image(b, f"{field}[{i}]") for i, b in enumerate(blobs)])
