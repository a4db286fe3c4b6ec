"""API tokens with per-namespace permissions, and browser sessions with CSRF protection.

>>> from memedit.web.auth import TokenFile
>>> tokens, first = TokenFile.open("/tmp/demo.tokens.json")        # doctest: +SKIP
>>> first is None or first.startswith("me_")                          # doctest: +SKIP
True
>>> secret = tokens.create("alice", namespaces=["acme/*"], write=True)  # doctest: +SKIP
>>> tokens.authenticate(secret).can_write("acme/u1")                 # doctest: +SKIP
True

Tokens are random (``me_`` + 32 bytes, url-safe) and stored only as SHA-256
hashes: in a JSON file beside a SQLite store (``x.db`` -> ``x.tokens.json``,
mode 0600), or in a PostgreSQL store's ``api_tokens`` table so that every
replica shares them (:class:`TokenTable`; :func:`open_tokens` picks). On first start an ``admin`` token (all namespaces, read and write) is
generated and printed once. A token's ``namespaces`` are exact names or
prefixes ending in ``/*`` (``acme/*`` covers ``acme`` and everything under
it); ``*`` means all. ``write`` allows changing state.

Browsers sign in once with a token (``POST /ui/login``); the server keeps an
in-memory session and sets two cookies: ``memedit_session`` (HttpOnly,
SameSite=Strict) and ``memedit_csrf`` (readable by the page's script). A
state-changing request carried by the session cookie must repeat the CSRF
value in the ``X-CSRF-Token`` header (double submit); a request carrying
``Authorization: Bearer`` needs no CSRF token, because browsers never attach
that header on their own.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..edits import NAMESPACE_RE, utcnow
from ..errors import NotFoundError, StoreError, ValidationError

TOKEN_PREFIX = "me_"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
SESSION_TTL_S = 8 * 3600


def tokens_path_for(store_path: str | os.PathLike[str]) -> Path:
    """Where a SQLite store's token file lives: ``x.db`` -> ``x.tokens.json`` (a PostgreSQL store keeps its
    tokens in its own ``api_tokens`` table: :class:`TokenTable`)."""
    from ..store.open import is_postgres_url

    if is_postgres_url(str(store_path)):
        raise ValidationError("a PostgreSQL store keeps its tokens in its api_tokens table, not in a file")
    p = Path(store_path)
    return p.with_name(p.stem + ".tokens.json")


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def check_scope(pattern: str) -> str:
    """Return a namespace pattern (``*``, ``name`` or ``name/*``) if well formed."""
    if not isinstance(pattern, str):
        raise ValidationError("a namespace pattern must be a string")
    base = pattern[:-2] if pattern.endswith("/*") else pattern
    if pattern != "*" and not NAMESPACE_RE.fullmatch(base):
        raise ValidationError(f"invalid namespace pattern {pattern!r}: a namespace, 'ns/*' or '*'")
    return pattern


def scope_covers(pattern: str, namespace: str) -> bool:
    """Whether a namespace pattern covers ``namespace``.

    >>> scope_covers("acme/*", "acme/u1"), scope_covers("acme/*", "acme"), scope_covers("acme/*", "acmex")
    (True, True, False)
    """
    if pattern == "*":
        return True
    if pattern.endswith("/*"):
        base = pattern[:-2]
        return namespace == base or namespace.startswith(base + "/")
    return namespace == pattern


@dataclass(frozen=True)
class Principal:
    """Who is calling: a token's name, the namespaces it covers, and whether it may change state."""

    name: str
    namespaces: tuple[str, ...]
    write: bool

    @property
    def is_admin(self) -> bool:
        return "*" in self.namespaces

    def can_read(self, namespace: str) -> bool:
        return any(scope_covers(p, namespace) for p in self.namespaces)

    def can_write(self, namespace: str) -> bool:
        return self.write and self.can_read(namespace)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "namespaces": list(self.namespaces), "write": self.write, "admin": self.is_admin}


class TokenFile:
    """The token file: hashed secrets with their names and permissions."""

    def __init__(self, path: Path, records: list[dict[str, Any]]):
        self.path = path
        self._records = records
        self._lock = threading.Lock()
        self._mtime = self._stat()

    def _stat(self) -> int | None:
        try:
            return self.path.stat().st_mtime_ns
        except OSError:
            return None

    def _refresh(self) -> None:
        """Re-read the file if another process (``memedit tokens add/revoke``) changed it."""
        mtime = self._stat()
        if mtime is None or mtime == self._mtime:
            return
        try:
            records = list(json.loads(self.path.read_text(encoding="utf-8"))["tokens"])
        except (OSError, ValueError, KeyError, TypeError):
            return  # a half-written file is replaced atomically; keep the last good state
        self._records, self._mtime = records, mtime

    def has(self, name: str) -> bool:
        """Whether a token of this name still exists (sessions end when their token is revoked)."""
        with self._lock:
            self._refresh()
            return any(r["name"] == name for r in self._records)

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, create_admin: bool = True) -> tuple["TokenFile", str | None]:
        """Load the token file; create it with an ``admin`` token if missing. Returns (file, new admin secret or None)."""
        path = Path(path)
        if path.exists():
            try:
                doc = json.loads(path.read_text(encoding="utf-8"))
                records = list(doc["tokens"])
                for r in records:
                    if not {"name", "sha256", "namespaces", "write"} <= set(r):
                        raise KeyError("name/sha256/namespaces/write")
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise StoreError(f"token file {path} is unreadable ({exc}); fix or delete it") from exc
            return cls(path, records), None
        tf = cls(path, [])
        secret = tf.create("admin", namespaces=["*"], write=True) if create_admin else None
        if not create_admin:
            tf._save()
        return tf, secret

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump({"version": 1, "tokens": self._records}, fh, indent=2, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        self._mtime = self._stat()

    def create(self, name: str, *, namespaces: list[str], write: bool = False) -> str:
        """Add a token; returns its secret (shown once, never stored)."""
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ValidationError("a token name is 1-64 letters, digits, '.', '_', '@' or '-'")
        if not namespaces:
            raise ValidationError("a token needs at least one namespace pattern ('*' for all)")
        scopes = [check_scope(p) for p in namespaces]
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        self._add({"name": name, "sha256": _digest(secret), "namespaces": scopes, "write": bool(write),
                   "created_at": utcnow()})
        return secret

    def revoke(self, name: str) -> None:
        self._remove(name)

    # ---- storage: a JSON file (TokenTable keeps the same records in a PostgreSQL store) ----
    def _add(self, record: dict[str, Any]) -> None:
        with self._lock:
            self._refresh()
            if any(r["name"] == record["name"] for r in self._records):
                raise ValidationError(f"a token named {record['name']!r} exists; revoke it first")
            self._records.append(record)
            self._save()

    def _remove(self, name: str) -> None:
        with self._lock:
            self._refresh()
            kept = [r for r in self._records if r["name"] != name]
            if len(kept) == len(self._records):
                raise NotFoundError(f"no token named {name!r}")
            self._records = kept
            self._save()

    @property
    def where(self) -> str:
        return str(self.path)

    def list(self) -> list[dict[str, Any]]:
        """Names and permissions (never hashes)."""
        with self._lock:
            self._refresh()
        return [{k: r.get(k) for k in ("name", "namespaces", "write", "created_at")} for r in self._records]

    def authenticate(self, secret: str | None) -> Principal | None:
        """The principal for a presented secret, or None. Constant-time comparison of hashes."""
        if not secret or not isinstance(secret, str) or len(secret) > 200:
            return None
        digest = _digest(secret)
        found = None
        with self._lock:
            self._refresh()
            records = list(self._records)
        for r in records:  # compare against all, so timing does not reveal the position
            if hmac.compare_digest(r["sha256"], digest):
                found = r
        if found is None:
            return None
        return Principal(found["name"], tuple(found["namespaces"]), bool(found["write"]))


class TokenTable(TokenFile):
    """The same tokens kept in a PostgreSQL store's ``api_tokens`` table, so every replica shares them.

    ``memedit tokens add`` on one machine works on all of them, and a revoke
    ends API access and browser sessions on every replica from its next
    request (each check reads the table: one indexed query).
    """

    def __init__(self, store: Any):
        self.store = store
        self.path = None  # type: ignore[assignment]
        self._records = []
        self._lock = threading.Lock()
        self._mtime = None

    @classmethod
    def open_in(cls, store: Any, *, create_admin: bool = True) -> tuple["TokenTable", str | None]:
        """The store's tokens; the first ``open_in`` (with ``create_admin``) creates the ``admin`` token."""
        table = cls(store)
        table._refresh()
        if table._records or not create_admin:
            return table, None
        try:
            return table, table.create("admin", namespaces=["*"], write=True)
        except ValidationError:  # another replica created it meanwhile: its secret was shown there
            return table, None

    @property
    def where(self) -> str:
        from ..store.open import describe

        return f"the api_tokens table of {describe(self.store.url)}"

    def _refresh(self) -> None:
        rows = self.store._select("SELECT name, sha256, namespaces, write, created_at FROM api_tokens ORDER BY name")
        self._records = [dict(r, namespaces=json.loads(r["namespaces"]), write=bool(r["write"])) for r in rows]

    def _save(self) -> None:
        raise StoreError("internal: a token table has no file to save")

    def _add(self, record: dict[str, Any]) -> None:
        def body() -> bool:
            cur = self.store._exec(
                "INSERT INTO api_tokens(name, sha256, namespaces, write, created_at) VALUES (%s, %s, %s, %s, %s) "
                "ON CONFLICT (name) DO NOTHING RETURNING name",
                (record["name"], record["sha256"], json.dumps(record["namespaces"]), record["write"],
                 record["created_at"]))
            return cur.fetchone() is not None

        if not self.store._tx(body):
            raise ValidationError(f"a token named {record['name']!r} exists; revoke it first")

    def _remove(self, name: str) -> None:
        def body() -> bool:
            return self.store._exec("DELETE FROM api_tokens WHERE name = %s RETURNING name", (name,)).fetchone() is not None

        if not self.store._tx(body):
            raise NotFoundError(f"no token named {name!r}")


def open_tokens(store: Any, tokens_path: str | os.PathLike[str] | None = None, *,
                create_admin: bool = True) -> tuple[TokenFile, str | None]:
    """The tokens for ``store``: ``tokens_path`` if given, else the store's own table (PostgreSQL) or the file
    beside it (SQLite, ``x.db`` -> ``x.tokens.json``). Returns (tokens, the new admin secret or None)."""
    if tokens_path is not None:
        return TokenFile.open(tokens_path, create_admin=create_admin)
    from ..store.postgres import PgEditStore

    if isinstance(store, PgEditStore):
        return TokenTable.open_in(store, create_admin=create_admin)
    where = getattr(store, "path", None)
    if where is None:
        raise ValidationError("this store has no file path or URL to keep its tokens by: pass a token file path")
    return TokenFile.open(tokens_path_for(where), create_admin=create_admin)


@dataclass
class Session:
    principal: Principal
    csrf: str
    expires: float


@dataclass
class Sessions:
    """Browser sessions in memory (a restart signs everyone out)."""

    ttl_s: float = SESSION_TTL_S
    _items: dict[str, Session] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, principal: Principal) -> tuple[str, str]:
        """A new session id and its CSRF token."""
        sid, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        with self._lock:
            now = time.monotonic()
            self._items = {k: s for k, s in self._items.items() if s.expires > now}
            self._items[sid] = Session(principal, csrf, now + self.ttl_s)
        return sid, csrf

    def get(self, sid: str | None) -> Session | None:
        if not sid:
            return None
        with self._lock:
            s = self._items.get(sid)
            if s is None or s.expires <= time.monotonic():
                self._items.pop(sid, None)
                return None
            return s

    def end(self, sid: str | None) -> None:
        with self._lock:
            self._items.pop(sid or "", None)
