"""Import sources in object storage: `s3://bucket/key.zip|.npz` (one archive) or `s3://bucket/prefix/` (a prefix
holding labels.csv or labels.jsonl and the images). Trust model: the worker reads with the SERVICE's object-storage
credentials, so a caller could otherwise read any bucket the service can; only sources under one of
HEADWISE_IMPORT_ALLOWED_PREFIXES are accepted (checked by the API and again by the worker)."""

from __future__ import annotations

from urllib.parse import urlparse

from service.errors import ForbiddenError, ValidationError

ARCHIVES = (".zip", ".npz")


def allowed_prefixes(setting: str) -> list[str]:
    return [p.strip() for p in (setting or "").split(",") if p.strip()]


def check_source(source: str, allowed_setting: str) -> tuple[str, str]:
    """-> (bucket, key or prefix). 422 for a malformed source, 403 when it is not under an allowed prefix."""
    parsed = urlparse(source or "")
    key = parsed.path.lstrip("/")
    if parsed.scheme != "s3" or not parsed.netloc or parsed.query or parsed.fragment:
        raise ValidationError("source: expected s3://bucket/prefix/ or s3://bucket/key.zip (or .npz)")
    if any(part in ("..", ".") for part in key.split("/")):
        raise ValidationError("source: '.' and '..' are not allowed in the key")
    if not key.lower().endswith(ARCHIVES) and key and not key.endswith("/"):
        raise ValidationError("source: a prefix must end with '/'; an archive must end with .zip or .npz")
    allowed = allowed_prefixes(allowed_setting)
    if not allowed:
        raise ForbiddenError("source: imports from object storage are disabled on this server "
                             "(HEADWISE_IMPORT_ALLOWED_PREFIXES is empty)")
    for prefix in allowed:
        if source == prefix or source.startswith(prefix if prefix.endswith("/") else prefix + "/"):
            return parsed.netloc, key
    raise ForbiddenError(f"source: '{source}' is not under an allowed import prefix")
