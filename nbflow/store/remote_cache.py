"""The local side of a remote store: a private directory of files, bounded in size, LRU.

Blobs read from (or written to) a remote store are kept here so they load by memory map, and
manifests so that a re-run need not ask the remote store again within its TTL (see
:mod:`nbflow.store.remote`). Owner-only (0700 directory, 0600 files); several processes may share
it. Any failure here is an optimisation lost, never a failed read: callers read around it.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import threading
import warnings
from collections.abc import Iterable

from ..errors import NbflowWarning
from .backend import TMP_PREFIX

DEFAULT_CACHE_SIZE = 10 * 1024**3

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)


def parse_size(value: int | float | str | None, default: int) -> int:
    """Bytes from ``1048576``, ``"500M"`` or ``"5G"``; ``None`` gives ``default``."""
    if value is None or value == "":
        return default
    if isinstance(value, int | float):
        return int(value)
    m = _SIZE.match(value)
    if not m:
        raise ValueError(f"cache size {value!r} is not a size; write bytes or e.g. '500M', '5G'")
    scale = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}[m.group(2).lower()]
    return int(float(m.group(1)) * scale)


def default_cache_root() -> str:
    env = os.environ.get("NBFLOW_CACHE_DIR")
    if env:
        return os.path.expanduser(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "nbflow", "remote")


class LocalCache:
    """Files named by their store-relative path, in a private directory, evicted LRU by mtime.

    Several processes may share the directory: every file appears by atomic rename, and the
    size estimate is re-measured from disk before anything is evicted.
    """

    def __init__(self, root: str, max_size: int) -> None:
        self.root = root
        self.max_size = max_size
        self._lock = threading.Lock()
        self._size: int | None = None  # estimate; None until measured
        self._added_since_scan = 0
        if max_size > 0:
            try:
                os.makedirs(root, mode=0o700, exist_ok=True)
            except OSError as e:  # remote reads still work, uncached
                self.max_size = 0
                warnings.warn(f"nbflow: the local cache {root} cannot be used ({e}); remote "
                              "reads are not cached (set cache_dir= or $NBFLOW_CACHE_DIR)",
                              NbflowWarning, stacklevel=3)
                return
            with contextlib.suppress(OSError):
                os.chmod(root, 0o700)

    @property
    def enabled(self) -> bool:
        return self.max_size > 0

    def path(self, rel: str) -> str:
        return os.path.join(self.root, *rel.split("/"))

    def stat(self, rel: str) -> os.stat_result | None:
        if not self.enabled:
            return None
        try:
            return os.stat(self.path(rel))
        except OSError:
            return None

    def hit(self, rel: str) -> str | None:
        """The local file for ``rel`` (marked recently used), or None."""
        if not self.enabled:
            return None
        full = self.path(rel)
        try:
            os.utime(full)
        except OSError:
            return None
        return full

    def fits(self, size: int) -> bool:
        return self.enabled and size <= self.max_size // 2

    def put(self, rel: str, chunks: Iterable[bytes | memoryview]) -> str:
        """Write ``rel`` atomically (0600); returns its local path."""
        full = self.path(rel)
        directory = os.path.dirname(full)
        os.makedirs(directory, mode=0o700, exist_ok=True)
        tmp = os.path.join(directory, f"{TMP_PREFIX}{os.getpid()}-{secrets.token_hex(6)}")
        size = 0
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                for chunk in chunks:
                    f.write(chunk)
                    size += len(chunk) if isinstance(chunk, bytes) else chunk.nbytes
            os.replace(tmp, full)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self._added(size)
        return full

    def adopt(self, rel: str, tmp: str, size: int) -> str:
        """Move a file downloaded to ``tmp_path(rel)`` into place."""
        full = self.path(rel)
        os.replace(tmp, full)
        self._added(size)
        return full

    def tmp_path(self, rel: str) -> str:
        full = self.path(rel)
        os.makedirs(os.path.dirname(full), mode=0o700, exist_ok=True)
        return os.path.join(os.path.dirname(full), f"{TMP_PREFIX}{os.getpid()}-{secrets.token_hex(6)}")

    def drop(self, rel: str) -> None:
        if self.enabled:
            with contextlib.suppress(OSError):
                os.unlink(self.path(rel))

    def _added(self, size: int) -> None:
        with self._lock:
            if self._size is not None:
                self._size += size
            self._added_since_scan += size
            due = (
                self._size is None
                or self._size > self.max_size
                or self._added_since_scan > self.max_size // 10
            )
        if due:
            self.evict()

    def _scan(self) -> list[tuple[float, int, str]]:
        files = []
        for dirpath, _dirs, names in os.walk(self.root):
            for name in names:
                full = os.path.join(dirpath, name)
                try:
                    st = os.stat(full)
                except FileNotFoundError:
                    continue
                files.append((st.st_mtime, st.st_size, full))
        return files

    def evict(self) -> int:
        """Remove least recently used files until the cache is under 80% of its size."""
        files = self._scan()
        total = sum(f[1] for f in files)
        removed = 0
        if total > self.max_size:
            target = int(self.max_size * 0.8)
            for _mtime, size, full in sorted(files):
                if total <= target:
                    break
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(full)  # a reader holding a memory map keeps its pages
                total -= size
                removed += 1
        with self._lock:
            self._size = total
            self._added_since_scan = 0
        return removed

    def size(self) -> int:
        return sum(f[1] for f in self._scan()) if self.enabled else 0


__all__ = ["DEFAULT_CACHE_SIZE", "LocalCache", "default_cache_root", "parse_size"]
