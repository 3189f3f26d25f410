"""HMAC-SHA256 signing of manifests under a per-user key kept outside every store.

Unpickling runs code, so nbflow only unpickles what a manifest signed with *this user's* key
names. The key lives in ``$NBFLOW_KEY_FILE`` or ``$XDG_CONFIG_HOME/nbflow/hmac.key`` (default
``~/.config/nbflow/hmac.key``), created with mode 0600 on first use. Share a store with a team by
sharing that key file through your usual secrets channel.
"""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

_cache: dict[Path, bytes] = {}


def key_path() -> Path:
    env = os.environ.get("NBFLOW_KEY_FILE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "nbflow" / "hmac.key"


def load_key(path: Path | None = None) -> bytes:
    """The signing key, created (0600, parent 0700) if it does not exist yet."""
    path = path or key_path()
    cached = _cache.get(path)
    if cached is not None:
        return cached
    try:
        key = path.read_bytes().strip()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = secrets.token_hex(32).encode()
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key)
        try:
            os.link(tmp, path)  # first writer wins; a concurrent creator reads the winner's key
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
        key = path.read_bytes().strip()
    if len(key) < 32:
        raise ValueError(f"the nbflow signing key in {path} is too short; delete it to regenerate")
    _cache[path] = key
    return key


def sign(data: bytes, key: bytes) -> str:
    """HMAC-SHA256 of ``data`` (the standard library's one-shot: a copy of an HMAC keyed once
    per key saved under 1 µs of the ~3 µs a manifest's signature takes, not worth keeping
    keyed state per key)."""
    return hmac.digest(key, data, "sha256").hex()


def verify(data: bytes, signature: str, key: bytes) -> bool:
    return hmac.compare_digest(sign(data, key), signature)
