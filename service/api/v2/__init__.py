"""The Open Inference Protocol (KServe V2 / Triton HTTP/REST) on /v2: routes, tensor codec, head mapping."""

from service.api.v2.routes import router

__all__ = ["router"]
