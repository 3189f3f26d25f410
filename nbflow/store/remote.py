"""A store backend over any fsspec filesystem (S3, GCS, Azure, SFTP, ...), with a local cache.

The store's logic (signing, verification, manifest-last commit order) lives in
:class:`~nbflow.store.base.Store` and is unchanged; this module only moves bytes. What it adds:

* **Atomic writes everywhere.** On object stores (S3 and friends) one PUT is atomic: an object
  appears whole or not at all, so small files go up in one PUT and large ones as a multipart
  upload that is completed only after every part is in (and aborted on failure). On other
  filesystems a file is written under a temp name in the same directory and moved into place.
* **A local read cache.** Blobs are content-addressed and never change, so a blob read once is kept
  in a local directory (LRU, bounded size) and memory-mapped from there; the store still verifies
  its digest on every load. Manifests are small and *may* change (an entry is deleted, or
  recomputed by a non-deterministic step), so a local copy is trusted for ``manifest_ttl`` seconds
  after it was last confirmed against the remote store; a miss always asks the remote store, so
  entries written by other machines are seen at once. A copy served inside the TTL is still a
  signed, verified result for its key: the TTL only delays seeing *deletions* made elsewhere.

Options (everything else goes to fsspec as storage options, e.g. ``endpoint_url``, ``key``):
``cache_dir`` (default ``$NBFLOW_CACHE_DIR`` or ``~/.cache/nbflow/remote``), ``cache_size`` (bytes
or "5G"; default ``$NBFLOW_CACHE_SIZE`` or 10G; 0 disables the cache) and ``manifest_ttl``.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import secrets
import threading
import time
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from ..hashing import digest_parts
from .backend import TMP_PREFIX, FileInfo
from .remote_cache import DEFAULT_CACHE_SIZE, LocalCache, default_cache_root, parse_size

#: protocols where a single PUT is atomic and there is no cheap rename
OBJECT_PROTOCOLS = frozenset(
    {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oss", "r2", "memory"}
)
#: object-store files up to this size are uploaded in one PUT; larger ones as a multipart upload
SINGLE_PUT_MAX = 32 * 1024 * 1024
DEFAULT_MANIFEST_TTL = 60.0
NBFLOW_OPTIONS = ("cache_dir", "cache_size", "manifest_ttl")

def _mtime(info: dict[str, Any]) -> float:
    for field in ("LastModified", "mtime", "last_modified", "updated", "created", "modified"):
        value = info.get(field)
        if isinstance(value, datetime):
            return value.timestamp()
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    return 0.0


def _rebuild(url: str, options: dict[str, Any]) -> FsspecBackend:
    return FsspecBackend(url, **options)


class FsspecBackend:
    """The :class:`~nbflow.store.backend.Backend` protocol over an fsspec URL."""

    def __init__(
        self,
        url: str,
        *,
        cache_dir: str | None = None,
        cache_size: int | str | None = None,
        manifest_ttl: float | None = None,
        **storage_options: Any,
    ) -> None:
        import fsspec

        self.url = url.rstrip("/")
        self.root = self.url
        self.storage_options = dict(storage_options)
        self.storage_options.pop("fsync", None)  # a local-directory option
        opts = dict(self.storage_options)
        self.fs, base = fsspec.core.url_to_fs(self.url, **opts)
        if getattr(self.fs, "dircache", None) is not None:
            # listings cached by fsspec would hide entries written by other processes
            self.fs.dircache.use_listings_cache = False
        self.base = base.rstrip("/")
        protocols = self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        self.object_store = bool(OBJECT_PROTOCOLS & set(protocols))
        #: False when other processes cannot see this filesystem (fsspec's in-memory one)
        self.shared = "memory" not in protocols
        self.single_put_max = SINGLE_PUT_MAX if self.shared else 1 << 62
        self.part_size = 64 * 1024 * 1024  # multipart upload part size (S3: at least 5 MiB)
        self.manifest_ttl = float(
            manifest_ttl if manifest_ttl is not None
            else os.environ.get("NBFLOW_MANIFEST_TTL", DEFAULT_MANIFEST_TTL)
        )
        self._options: dict[str, Any] = {
            "cache_dir": cache_dir, "cache_size": cache_size, "manifest_ttl": manifest_ttl,
            **self.storage_options,
        }
        size = parse_size(
            cache_size if cache_size is not None else os.environ.get("NBFLOW_CACHE_SIZE"),
            DEFAULT_CACHE_SIZE,
        )
        cache_root = os.path.join(
            os.path.expanduser(cache_dir) if cache_dir else default_cache_root(),
            digest_parts([self.url])[:16],
        )
        self.cache = LocalCache(cache_root, size)
        self._confirmed: dict[str, float] = {}  # manifest path -> monotonic time last confirmed
        self._fallback: dict[str, bytes] = {}  # manifests held in memory when the cache fails
        self._made: set[str] = set()
        self._lock = threading.Lock()
        if not self.object_store:
            with contextlib.suppress(OSError):
                self.fs.makedirs(self.base, exist_ok=True)

    def __repr__(self) -> str:
        return f"FsspecBackend({self.url!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickles as its URL and options (a worker opens its own connection and cache)."""
        return (_rebuild, (self.url, self._options))

    @property
    def options(self) -> dict[str, Any]:
        """The options this backend was opened with (what a worker needs to open it again)."""
        return dict(self._options)

    def _full(self, path: str) -> str:
        return f"{self.base}/{path}" if path else self.base

    # -- reading ----------------------------------------------------------------------------------
    def read(self, path: str) -> bytes:
        if path.startswith("blobs/"):
            local = self._cached_blob(path)
            if local is not None:
                with contextlib.suppress(OSError), open(local, "rb") as f:
                    return f.read()  # else evicted meanwhile by another process: read remote
            return self.fs.cat_file(self._full(path))
        if path.startswith("manifests/"):
            if self.signature(path) is None:
                raise FileNotFoundError(path)
            local = self.cache.path(path) if self.cache.enabled else None
            if local is not None:
                with contextlib.suppress(OSError), open(local, "rb") as f:
                    return f.read()
            fallback = self._fallback.get(path)
            if fallback is not None:
                return fallback
        return self.fs.cat_file(self._full(path))

    def map(self, path: str) -> memoryview:
        """A memory map of the locally cached copy (downloaded first if needed)."""
        local = self._cached_blob(path)
        if local is not None:
            try:
                with open(local, "rb") as f:
                    if os.fstat(f.fileno()).st_size == 0:
                        return memoryview(b"")
                    m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
                return memoryview(m)
            except OSError:  # evicted meanwhile by another process
                pass
        # too large for the cache, the cache is off or failing: a plain read
        return memoryview(self.fs.cat_file(self._full(path)))

    def _cached_blob(self, path: str) -> str | None:
        """The local copy of an immutable blob, downloading it when it fits the cache."""
        if not self.cache.enabled:
            return None
        hit = self.cache.hit(path)
        if hit is not None:
            return hit
        size = self.size(path)
        if size is None:
            raise FileNotFoundError(path)
        if not self.cache.fits(size):
            return None
        tmp = ""
        try:
            tmp = self.cache.tmp_path(path)
            self.fs.get_file(self._full(path), tmp)
            with contextlib.suppress(OSError):
                os.chmod(tmp, 0o600)
            return self.cache.adopt(path, tmp, os.path.getsize(tmp))
        except FileNotFoundError:
            raise
        except OSError:  # the local cache is unusable (full, read-only): read around it
            return None
        finally:
            if tmp:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)

    def exists(self, path: str) -> bool:
        if path.startswith("manifests/"):
            return self.signature(path) is not None
        return bool(self.fs.exists(self._full(path)))

    def size(self, path: str) -> int | None:
        try:
            return int(self.fs.info(self._full(path))["size"])
        except FileNotFoundError:
            return None

    def signature(self, path: str) -> tuple[int, int] | None:
        """Change detection for the store's verified-manifest memo.

        Manifests answer from the local copy while it is fresh (see the module docstring);
        anything else from the remote metadata, with the sub-second part of the time taken
        from the ETag where the filesystem keeps whole seconds only.
        """
        if path.startswith("manifests/") and self.cache.enabled:
            return self._manifest_signature(path)
        try:
            info = self.fs.info(self._full(path))
        except FileNotFoundError:
            return None
        mtime_ns = int(_mtime(info) * 1e9)
        etag = str(info.get("ETag") or info.get("etag") or "").strip('"')
        if etag and mtime_ns % 1_000_000_000 == 0:
            mtime_ns += int(digest_parts([etag])[:8], 16) % 1_000_000_000
        return (mtime_ns, int(info["size"]))

    def _manifest_signature(self, path: str) -> tuple[int, int] | None:
        now = time.monotonic()
        st = self.cache.stat(path)
        if st is not None:
            confirmed = self._confirmed.get(path)
            fresh = (
                now - confirmed < self.manifest_ttl
                if confirmed is not None
                else time.time() - st.st_mtime < self.manifest_ttl
            )
            if fresh:
                return (st.st_mtime_ns, st.st_size)
        try:
            remote = self.fs.cat_file(self._full(path))
        except FileNotFoundError:
            self.cache.drop(path)
            self._confirmed.pop(path, None)
            self._fallback.pop(path, None)
            return None
        if st is not None:
            with contextlib.suppress(OSError), open(self.cache.path(path), "rb") as f:
                if f.read() == remote:
                    self._confirmed[path] = now  # unchanged: keep the signature (and the memo)
                    return (st.st_mtime_ns, st.st_size)
        try:
            self.cache.put(path, [remote])
        except OSError:  # the local cache is unusable (full, read-only): keep it in memory
            with contextlib.suppress(OSError):
                self.cache.drop(path)
            self._fallback[path] = remote
            return (int(digest_parts([remote])[:15], 16), len(remote))
        self._fallback.pop(path, None)
        self._confirmed[path] = now
        st = self.cache.stat(path)
        return (st.st_mtime_ns, st.st_size) if st is not None else None

    # -- writing ----------------------------------------------------------------------------------
    def write_atomic(self, path: str, chunks: Iterable[bytes | memoryview]) -> None:
        parts = list(chunks)
        total = sum(len(c) if isinstance(c, bytes) else c.nbytes for c in parts)
        full = self._full(path)
        if self.object_store:
            if total <= self.single_put_max:
                self.fs.pipe_file(full, b"".join(parts))
            else:
                self._multipart(full, parts)
        else:
            self._write_then_move(full, parts)
        if path.startswith("manifests/") and self.cache.enabled:
            try:
                self.cache.put(path, parts)
                self._confirmed[path] = time.monotonic()
            except OSError:  # never serve an older local copy of what was just replaced
                self._confirmed.pop(path, None)
                with contextlib.suppress(OSError):
                    self.cache.drop(path)
        elif path.startswith("blobs/") and self.cache.fits(total):
            with contextlib.suppress(OSError):  # the cache is an optimisation only
                self.cache.put(path, parts)

    def _multipart(self, full: str, parts: Iterable[bytes | memoryview]) -> None:
        """One object from many parts: invisible until the upload is completed."""
        f = self.fs.open(full, "wb", autocommit=False, block_size=self.part_size)
        try:
            for chunk in parts:
                f.write(chunk)
            f.close()
            f.commit()
        except BaseException:
            with contextlib.suppress(Exception):
                f.discard()
            raise

    def _write_then_move(self, full: str, parts: list[bytes | memoryview]) -> None:
        directory = full.rsplit("/", 1)[0]
        if directory not in self._made:
            self.fs.makedirs(directory, exist_ok=True)
            with self._lock:
                self._made.add(directory)
        tmp = f"{directory}/{TMP_PREFIX}{os.getpid()}-{secrets.token_hex(6)}"
        try:
            with self.fs.open(tmp, "wb") as f:
                for chunk in parts:
                    f.write(chunk)
            self.fs.mv(tmp, full)
        except BaseException:
            with contextlib.suppress(Exception):
                self.fs.rm_file(tmp)
            raise

    def remove(self, path: str) -> None:
        self.cache.drop(path)
        self._confirmed.pop(path, None)
        self._fallback.pop(path, None)
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self._full(path))

    def touch(self, path: str) -> None:
        """Mark used: the local copy always; the remote file where the filesystem allows it."""
        if self.cache.enabled:
            with contextlib.suppress(OSError):
                os.utime(self.cache.path(path))
        if not self.object_store:  # object stores cannot update a time without rewriting
            with contextlib.suppress(Exception):
                self.fs.touch(self._full(path), truncate=False)

    def walk(self, prefix: str) -> Iterator[FileInfo]:
        base = self._full(prefix)
        try:
            found = self.fs.find(base, detail=True, withdirs=False)
        except FileNotFoundError:
            return
        start = len(self.base.lstrip("/")) + 1
        for name, info in sorted(found.items()):
            if info.get("type", "file") != "file":
                continue
            rel = name.lstrip("/")[start:]
            yield FileInfo(rel, int(info.get("size") or 0), _mtime(info))


__all__ = ["FsspecBackend", "LocalCache", "parse_size"]
