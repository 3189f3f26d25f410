"""Where a store's bytes live. The store's logic (signing, verification, commit order) is written
once against this small interface; the local directory is the embedded default and the fsspec
backend serves shared remote caches with the same guarantees.

Contract: ``write_atomic`` makes a file appear whole or not at all (temp name in the same
directory, flush, rename), and leaves no temp file behind when it fails.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import secrets
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

TMP_PREFIX = ".tmp-"


@dataclass(frozen=True)
class FileInfo:
    path: str  # relative to the store root, "/"-separated
    size: int
    mtime: float


class Backend(Protocol):
    root: str

    def read(self, path: str) -> bytes: ...
    def map(self, path: str) -> memoryview: ...
    def write_atomic(self, path: str, chunks: Iterable[bytes | memoryview]) -> None: ...
    def exists(self, path: str) -> bool: ...
    def size(self, path: str) -> int | None: ...
    def signature(self, path: str) -> tuple[int, int] | None: ...
    def remove(self, path: str) -> None: ...
    def touch(self, path: str) -> None: ...
    def walk(self, prefix: str) -> Iterator[FileInfo]: ...


class LocalBackend:
    """A directory on the local filesystem, created owner-only (0700)."""

    def __init__(self, root: str | os.PathLike[str], fsync: bool = False) -> None:
        self.root = os.path.abspath(os.fspath(root))
        self._prefix = self.root + os.sep
        self.fsync = fsync
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        with contextlib.suppress(OSError):
            os.chmod(self.root, 0o700)
        self._made: set[str] = set()
        self._lock = threading.Lock()

    def _abs(self, path: str) -> str:
        return self._prefix + path

    def read(self, path: str) -> bytes:
        with open(self._abs(path), "rb") as f:
            return f.read()

    def map(self, path: str) -> memoryview:
        """A read-only memory map of the file (no copy; pages load on first touch)."""
        with open(self._abs(path), "rb") as f:
            if os.fstat(f.fileno()).st_size == 0:
                return memoryview(b"")
            m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        return memoryview(m)

    def _ensure_dir(self, directory: str) -> None:
        if directory in self._made:
            return
        os.makedirs(directory, mode=0o700, exist_ok=True)
        with self._lock:
            self._made.add(directory)

    def write_atomic(self, path: str, chunks: Iterable[bytes | memoryview]) -> None:
        target = self._abs(path)
        directory = os.path.dirname(target)
        self._ensure_dir(directory)
        tmp = os.path.join(directory, f"{TMP_PREFIX}{os.getpid()}-{secrets.token_hex(6)}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                for chunk in chunks:
                    f.write(chunk)
                f.flush()
                if self.fsync:
                    os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def exists(self, path: str) -> bool:
        return os.path.exists(self._abs(path))

    def size(self, path: str) -> int | None:
        try:
            return os.stat(self._abs(path)).st_size
        except FileNotFoundError:
            return None

    def signature(self, path: str) -> tuple[int, int] | None:
        """(mtime_ns, size): cheap change detection for the verified-manifest memo."""
        try:
            st = os.stat(self._abs(path))
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def remove(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._abs(path))

    def touch(self, path: str) -> None:
        with contextlib.suppress(OSError):
            os.utime(self._abs(path))

    def walk(self, prefix: str) -> Iterator[FileInfo]:
        base = self._abs(prefix)
        for dirpath, _dirs, files in os.walk(base):
            for name in files:
                full = os.path.join(dirpath, name)
                try:
                    st = os.stat(full)
                except FileNotFoundError:
                    continue
                rel = os.path.relpath(full, self.root).replace(os.sep, "/")
                yield FileInfo(rel, st.st_size, st.st_mtime)
