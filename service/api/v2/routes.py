"""Open Inference Protocol (KServe V2 / Triton) HTTP/REST endpoints under /v2.

  GET  /v2/health/live, /v2/health/ready        no key (like /health, /ready); ready = the database answers
  GET  /v2                                       server metadata (extensions: binary_tensor_data), no key
  GET  /v2/models/{name}[/versions/{v}]          model metadata                  scope models:read
  GET  /v2/models/{name}[/versions/{v}]/ready    model ready                     scope models:read or predict
  POST /v2/models/{name}[/versions/{v}]/infer    inference                       scope predict

Same bearer keys and scope checks as /v1 (service.api.deps.bearer_key and check_scope); another team's model is
404. Without a version the latest is used. Inference runs through the SAME path as /v1 predict
(service.api.predict.run_images: the version's micro-batcher and runtime); tensors are mapped by
service.api.v2.heads, bodies by service.api.v2.codec. Errors are the protocol's {"error": "..."}:
400 for a bad request (the protocol's status for client errors; /v1 says 422), 401, 403, 404, 413, 503.
"""

from __future__ import annotations

import json
import zlib
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool

from service.api.deps import bearer_key, check_scope
from service.api.models import get_version
from service.api.predict import (
    FORM_OVERHEAD,
    _authorize_and_resolve,
    _read_capped,
    _resolved_without_io,
    load_entry,
    run_images,
)
from service.api.uploads import check_content_length
from service.api.v2.codec import HEADER, ProtocolError, encode_response, parse_request, wants_binary
from service.api.v2.heads import UnmappedHeadError, output_infos, output_values, plan
from service.api.v2.inputs import image_input
from service.api.v2.schemas import (
    INFER_OPENAPI,
    INFER_RESPONSES,
    Live,
    MetadataTensor,
    ModelMetadata,
    ModelReady,
    Ready,
    ServerMetadata,
    errors,
)
from service.db import base as db
from service.db import registry as registry_repo
from service.errors import PayloadTooLargeError, ServiceError

PLATFORM = "pytorch_torchscript"  # information only (the protocol's "<project>_<format>")
EXTENSIONS = ["binary_tensor_data"]


class V2Route(APIRoute):
    """Renders every error of a /v2 route as the protocol's {"error": message}: the app's own handlers decide the
    status and message (so a database outage is still a 503), then the body is reshaped; 422 becomes 400."""

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except (ProtocolError, UnmappedHeadError) as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
            except Exception as exc:  # noqa: BLE001 - rendered by the app's handler for its type
                return await _protocol_error(request, exc)

        return route


async def _protocol_error(request: Request, exc: Exception) -> Response:
    handlers = request.app.exception_handlers
    handler = next((handlers[c] for c in type(exc).__mro__ if c in handlers), None)
    if handler is None:
        raise exc
    response = await handler(request, exc)
    try:
        body = json.loads(response.body)
    except (ValueError, AttributeError):
        return response
    message = body.get("detail") or body.get("error") or "error"
    headers = {k: v for k, v in response.headers.items() if k in ("retry-after", "www-authenticate")}
    status = 400 if response.status_code == 422 else response.status_code
    return JSONResponse({"error": message}, status_code=status, headers=headers)


router = APIRouter(prefix="/v2", tags=["v2: Open Inference Protocol"], route_class=V2Route)


def _version(text: str | None) -> int | None:
    if text is None:
        return None
    if not text.isdigit() or not 1 <= int(text) < 2**31:
        raise ProtocolError(f"model version must be a positive integer, got '{text}'")
    return int(text)


@router.get("/health/live", response_model=Live, summary="Server live")
def live() -> Live:
    return Live(live=True)


@router.get("/health/ready", response_model=Ready, responses=errors(503), summary="Server ready: the database answers")
def ready(request: Request) -> Ready:
    with request.app.state.sessionmaker() as session:
        db.ping(session=session)
    return Ready(live=True, ready=True)


@router.get("", response_model=ServerMetadata, summary="Server metadata")
@router.get("/", response_model=ServerMetadata, include_in_schema=False)
def server_metadata(request: Request) -> ServerMetadata:
    return ServerMetadata(name="headwise", version=request.app.version, extensions=EXTENSIONS)


def _lookup(state: Any, key: str | None, name: str, version: int | None, scopes: tuple[str, ...]):
    """Threadpool: key -> scope -> the team's version (404) -> (version row, every version number)."""
    principal = check_scope(state.authenticator.authenticate(key), *scopes)
    with state.sessionmaker() as session:
        mv = get_version(session, principal, name, version)
        numbers = [str(v.version) for v in registry_repo.list_model_versions(session=session, model_id=mv.model_id)]
    return mv, numbers


def _spec(state: Any, mv: Any) -> Any:
    from service.ml.spec import parse_spec

    entry = state.predictors.peek(mv.id)
    if entry is not None:
        return entry.predictor.spec
    path = state.storage.abs(mv.artifact_path) / "spec.json"
    try:
        return parse_spec(path.read_bytes())
    except OSError:
        raise ServiceError(f"the artifact of version {mv.version} is missing on disk", 503, "ArtifactMissing") from None


def _metadata(state: Any, key: str | None, name: str, version: int | None) -> ModelMetadata:
    mv, numbers = _lookup(state, key, name, version, ("models:read",))
    spec = _spec(state, mv)
    size, channels = spec.model.image_size, spec.model.channels
    outputs = [MetadataTensor(name=i.name, datatype=i.datatype, shape=[-1, *i.shape]) for i in output_infos(spec)]
    return ModelMetadata(
        name=name, versions=numbers, platform=PLATFORM, outputs=outputs,
        inputs=[MetadataTensor(name="image", datatype="BYTES", shape=[-1])],
        parameters={"version": mv.version, "image_size": size, "channels": channels,
                    "image_inputs": f"BYTES [-1] (encoded PNG/JPEG) or UINT8 [-1, {size}, {size}, {channels}]"})


MODEL_ERRORS = errors(400, 401, 403, 404, 503)


@router.get("/models/{name}", response_model=ModelMetadata, responses=MODEL_ERRORS,
            summary="Model metadata (latest version)")
async def model_metadata_latest(request: Request, name: str) -> ModelMetadata:
    return await run_in_threadpool(_metadata, request.app.state, await bearer_key(request), name, None)


@router.get("/models/{name}/versions/{version}", response_model=ModelMetadata, responses=MODEL_ERRORS,
            summary="Model metadata")
async def model_metadata(request: Request, name: str, version: str) -> ModelMetadata:
    key = await bearer_key(request)
    return await run_in_threadpool(_metadata, request.app.state, key, name, _version(version))


def _ready(state: Any, key: str | None, name: str, version: int | None) -> ModelReady:
    mv, _ = _lookup(state, key, name, version, ("models:read", "predict"))
    _spec(state, mv)  # 503 when the artifact is gone
    return ModelReady(name=name, ready=True)


@router.get("/models/{name}/ready", response_model=ModelReady, responses=MODEL_ERRORS,
            summary="Model ready (latest version)")
async def model_ready_latest(request: Request, name: str) -> ModelReady:
    return await run_in_threadpool(_ready, request.app.state, await bearer_key(request), name, None)


@router.get("/models/{name}/versions/{version}/ready", response_model=ModelReady, responses=MODEL_ERRORS,
            summary="Model ready")
async def model_ready(request: Request, name: str, version: str) -> ModelReady:
    key = await bearer_key(request)
    return await run_in_threadpool(_ready, request.app.state, key, name, _version(version))


async def _body(request: Request, cap: int) -> bytes:
    check_content_length(request.headers.get("content-length"), cap)
    raw = await _read_capped(request, cap)
    encoding = request.headers.get("content-encoding", "").strip().lower()
    if encoding in ("", "identity"):
        return raw
    if encoding not in ("gzip", "deflate"):
        raise ProtocolError(f"Content-Encoding '{encoding}' is not supported (gzip, deflate)")
    inflater = zlib.decompressobj(zlib.MAX_WBITS | (16 if encoding == "gzip" else 0))
    try:
        out = inflater.decompress(raw, cap + 1)
    except zlib.error as exc:
        raise ProtocolError(f"the {encoding} body cannot be decompressed ({exc})") from None
    if len(out) > cap:
        raise PayloadTooLargeError(f"the decompressed body is larger than the limit of {cap} bytes")
    return out


@router.post("/models/{name}/infer", response_class=Response, responses=INFER_RESPONSES, openapi_extra=INFER_OPENAPI,
             summary="Inference (latest version)")
async def infer_latest(request: Request, name: str) -> Response:
    return await _infer(request, name, None)


@router.post("/models/{name}/versions/{version}/infer", response_class=Response, responses=INFER_RESPONSES,
             openapi_extra=INFER_OPENAPI, summary="Inference")
async def infer(request: Request, name: str, version: str) -> Response:
    return await _infer(request, name, version)


async def _infer(request: Request, name: str, version: str | None) -> Response:
    state, key, number = request.app.state, await bearer_key(request), _version(version)
    found = _resolved_without_io(state, key, name, number)
    if found is None:
        found = await run_in_threadpool(_authorize_and_resolve, state, key, name, number)
    version_id, number, artifact = found
    settings = state.settings
    body = await _body(request, settings.MAX_PREDICT_BYTES * 4 // 3 + FORM_OVERHEAD)
    req, tensors = parse_request(body, request.headers.get(HEADER))
    entry = await load_entry(state, version_id, artifact)
    spec = entry.predictor.spec
    infos = plan(spec).infos
    if req.outputs is None:
        selected = [(i, wants_binary(req, None)) for i in infos.values()]
    else:
        selected = [(_output(infos, o.name), wants_binary(req, o)) for o in req.outputs]
    kwargs = image_input(tensors, entry.predictor, settings.MAX_PREDICT_IMAGES)
    rows = await run_images(request, entry, **kwargs)
    values = output_values(spec, rows, {i.name for i, _ in selected})
    head = {"model_name": name, "model_version": str(number), **({"id": req.id} if req.id is not None else {})}
    content, header_length = encode_response(head, [(i.name, i.datatype, values[i.name], b) for i, b in selected])
    if header_length is None:
        return Response(content, media_type="application/json")
    return Response(content, media_type="application/octet-stream", headers={HEADER: str(header_length)})


def _output(infos: dict, name: str) -> Any:
    if name not in infos:
        raise ProtocolError(f"outputs: '{name}' is not an output of this model; outputs are: {', '.join(infos)}")
    return infos[name]
