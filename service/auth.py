"""API keys: generation, HMAC hashing, scopes, and a short-lived in-process cache of key lookups.

Key format: "hw_<prefix10>_<secret43>"; the database stores the public prefix ("hw_<prefix10>") and
HMAC-SHA-256(server secret, whole key). The server secret is settings.SECRET or DATA_DIR/secret.key (0600).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.orm import Session

from service.config import Settings
from service.db import keys as keys_repo
from service.db.tables import ApiKey, utcnow
from service.domain import DEFAULT_TEAM, SCOPES
from service.errors import AuthError

log = logging.getLogger("headwise.auth")
__all__ = ["DEFAULT_TEAM", "SCOPES", "KeyAuthenticator", "Principal", "check_scopes", "create_key", "load_secret"]

KEY_PREFIX = "hw_"
CACHE_TTL_SECONDS = 5.0
LAST_USED_INTERVAL_SECONDS = 60.0
_CACHE_MAX = 10_000


@dataclass(frozen=True)
class Principal:
    team: str
    scopes: frozenset[str]
    key_id: str | None = None
    name: str = ""
    root: bool = False  # HEADWISE_ADMIN_KEY: may manage keys of every team

    def has(self, scope: str) -> bool:
        return "admin" in self.scopes or scope in self.scopes


def check_scopes(scopes: Iterable[str]) -> list[str]:
    out = sorted(set(scopes))
    unknown = [s for s in out if s not in SCOPES]
    if unknown:
        raise ValueError(f"unknown scope(s) {', '.join(unknown)}; scopes are: {', '.join(SCOPES)}")
    if not out:
        raise ValueError(f"at least one scope is required; scopes are: {', '.join(SCOPES)}")
    return out


def generate_key() -> tuple[str, str]:
    """-> (full key, public prefix). 256 bits of secret from secrets.token_urlsafe(32)."""
    prefix = KEY_PREFIX + secrets.token_hex(5)
    return f"{prefix}_{secrets.token_urlsafe(32)}", prefix


def key_prefix(key: str) -> str | None:
    """The public prefix of a well-formed key, else None."""
    if len(key) != 57 or not key.startswith(KEY_PREFIX) or key[13] != "_":
        return None
    return key[:13]


def hash_key(key: str, secret: bytes) -> str:
    return hmac.new(secret, key.encode(), hashlib.sha256).hexdigest()


def load_secret(settings: Settings) -> bytes:
    if settings.SECRET:
        return settings.SECRET.encode()
    path = Path(settings.DATA_DIR) / "secret.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process won the race; read its secret
        else:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32))
    return path.read_text().strip().encode()


def create_key(
    session: Session, secret: bytes, *, name: str, team: str, scopes: Iterable[str]
) -> tuple[ApiKey, str]:
    """Insert a key row (flushed, not committed) -> (row, the full key: shown once)."""
    key, prefix = generate_key()
    row = keys_repo.insert_api_key(
        session=session, name=name, team=team, scopes=check_scopes(scopes), prefix=prefix, key_hash=hash_key(key, secret)
    )
    return row, key


@dataclass
class _Entry:
    expires: float
    principal: Principal


@dataclass
class KeyAuthenticator:
    """Resolves bearer keys to principals; positive lookups are cached for CACHE_TTL_SECONDS."""

    settings: Settings
    session_factory: Callable[[], Session]
    ttl: float = CACHE_TTL_SECONDS
    last_used_interval: float = LAST_USED_INTERVAL_SECONDS
    _cache: dict[str, _Entry] = field(default_factory=dict)
    _last_used: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _secret: bytes | None = None

    @property
    def secret(self) -> bytes:
        if self._secret is None:
            self._secret = load_secret(self.settings)
        return self._secret

    def authenticate(self, key: str | None) -> Principal:
        if not key:
            raise AuthError("missing API key: send 'Authorization: Bearer <key>'")
        admin = self.settings.ADMIN_KEY
        if admin and hmac.compare_digest(key.encode(), admin.encode()):
            return Principal(DEFAULT_TEAM, frozenset({"admin"}), None, "HEADWISE_ADMIN_KEY", root=True)
        prefix = key_prefix(key)
        if prefix is None:
            raise AuthError("invalid API key")
        digest = hash_key(key, self.secret)
        now = time.monotonic()
        with self._lock:
            entry = self._cache.get(digest)
        if entry is None or entry.expires <= now:
            principal = self._lookup(prefix, digest)
            with self._lock:
                if len(self._cache) >= _CACHE_MAX:
                    self._cache = {k: e for k, e in self._cache.items() if e.expires > now}
                    if len(self._cache) >= _CACHE_MAX:
                        self._cache.clear()
                self._cache[digest] = _Entry(now + self.ttl, principal)
        else:
            principal = entry.principal
        self._maybe_touch(principal.key_id, now)
        return principal

    def cached(self, key: str | None) -> Principal | None:
        """(issue 5) The principal when it is known without any I/O -- HEADWISE_ADMIN_KEY, or a fresh cached
        lookup whose last_used_at write is not due -- else None (then call authenticate() off the event loop).
        Lets hot async routes skip a threadpool hop; revocation still takes effect within the cache TTL."""
        if not key:
            return None
        admin = self.settings.ADMIN_KEY
        if admin and hmac.compare_digest(key.encode(), admin.encode()):
            return Principal(DEFAULT_TEAM, frozenset({"admin"}), None, "HEADWISE_ADMIN_KEY", root=True)
        if self._secret is None or key_prefix(key) is None:
            return None
        digest = hash_key(key, self._secret)
        now = time.monotonic()
        with self._lock:
            entry = self._cache.get(digest)
            if entry is None or entry.expires <= now:
                return None
            key_id = entry.principal.key_id
            last = self._last_used.get(key_id) if key_id is not None else now
            if last is None or now - last >= self.last_used_interval:
                return None
        return entry.principal

    def _lookup(self, prefix: str, digest: str) -> Principal:
        with self.session_factory() as session:
            row = keys_repo.get_api_key_by_prefix(session=session, prefix=prefix)
        if row is None or not hmac.compare_digest(row.key_hash, digest):
            raise AuthError("invalid API key")
        if row.revoked_at is not None:
            raise AuthError("API key revoked")
        return Principal(row.team, frozenset(row.scopes or ()), row.id, row.name)

    def _maybe_touch(self, key_id: str | None, now: float) -> None:
        if key_id is None:
            return
        with self._lock:
            last = self._last_used.get(key_id)
            if last is not None and now - last < self.last_used_interval:
                return
            self._last_used[key_id] = now
        try:
            with self.session_factory() as session:
                keys_repo.touch_api_key(session=session, key_id=key_id, when=utcnow())
                session.commit()
        except Exception:  # never fail a request because last_used_at could not be written
            log.warning("could not record last_used_at for key %s", key_id, exc_info=True)

    def invalidate(self, key_id: str | None = None) -> None:
        """Drop cached lookups (of one key, or all): revocation in this process takes effect at once."""
        with self._lock:
            if key_id is None:
                self._cache.clear()
            else:
                self._cache = {k: e for k, e in self._cache.items() if e.principal.key_id != key_id}
