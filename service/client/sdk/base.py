"""The client's transport: one httpx.Client, the key, errors mapped to HeadwiseError subclasses."""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import Any, Self, TypeVar

import httpx
from pydantic import BaseModel

from service.client import DEFAULT_URL
from service.client.errors import Unavailable, error_from_response

ImageInput = str | os.PathLike | bytes
M = TypeVar("M", bound=BaseModel)


def _image_part(index: int, image: ImageInput) -> tuple[str, tuple[str, bytes, str]]:
    if isinstance(image, bytes | bytearray):
        return ("files", (f"image{index}", bytes(image), "application/octet-stream"))
    path = Path(image)
    return ("files", (path.name, path.read_bytes(), "application/octet-stream"))


def _tls_for(base_url: str) -> ssl.SSLContext | bool:
    """httpx's default TLS set-up loads the whole CA bundle (~25 ms of every CLI command). A plain-http server
    needs none: it gets a context that trusts no certificate, so TLS, were it ever tried, fails closed."""
    if base_url.lower().startswith("http://"):
        return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verify_mode CERT_REQUIRED, check_hostname, no CA loaded
    return True


def _drop_none(**params: Any) -> dict[str, Any]:
    return {k: v for k, v in params.items() if v is not None}


class Base:
    """The transport the resource mixins share: URL and key default to HEADWISE_URL / HEADWISE_API_KEY."""

    def __init__(self, base_url: str | None = None, api_key: str | None = None, timeout: float = 30.0, *,
                 transport: httpx.BaseTransport | None = None, event_hooks: dict[str, list] | None = None):
        base_url = base_url or os.environ.get("HEADWISE_URL") or DEFAULT_URL
        self.api_key = api_key if api_key is not None else os.environ.get("HEADWISE_API_KEY")
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout, transport=transport,
                                  event_hooks=event_hooks, verify=_tls_for(self.base_url))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise Unavailable(0, "ConnectionError", f"{self.base_url}{path}: {exc}") from exc
        if response.status_code >= 400:
            raise error_from_response(response)
        return response

    def _model(self, model: type[M], method: str, path: str, **kwargs: Any) -> M:
        return model.model_validate_json(self._request(method, path, **kwargs).content)

