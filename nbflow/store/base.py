"""The store: content-addressed blobs plus one signed manifest per cache key.

Layout under the root::

    blobs/ab/<digest>          a pickle stream or one raw buffer, named by its xxh3 digest
    manifests/ab/<key>.json    {"manifest": {...}, "sig": HMAC-SHA256}: the commit point
    records/<kind>/<name>.json signed records (runs of a flow, ...)

A small pickle stream (at most ``INLINE_MAX`` bytes, no out-of-band buffers) is kept inside its
manifest instead (``stream.inline``, base64): most step outputs are scalars and small containers,
and a hit then needs no second file read (on a remote store, no second request). The signature
covers it like every other field.

Invariants: a manifest is written only after every blob it names; a key is never served for
content other than what was stored under it; an entry whose signature, size or digest does not
check out is a miss plus one warning, and its pickle is never loaded.
"""

from __future__ import annotations

import base64
import functools
import json
import re
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import NbflowWarning
from ..hashing import digest_bytes
from . import signing
from .backend import TMP_PREFIX, Backend
from .codec import SCALARS, Encoded, decode
from .jsontext import canonical, canonical_forms, canonical_json, loads

MANIFEST_FORMAT = 1
#: pickle streams up to this size (and without out-of-band buffers) live inside the manifest
INLINE_MAX = 2048
_HEX = re.compile(r"^[0-9a-f]{16,64}$")
_RECORD_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,200}$")


class CorruptEntry(Exception):
    """An entry failed verification (internal: callers turn it into a miss plus a warning)."""


class StoreWriteError(Exception):
    """Writing an entry failed (disk full, I/O error); nothing partial is visible."""


def not_cached(step: str, error: object) -> str:
    """What a step whose entry could not be written warns, wherever the write failed."""
    return (f"nbflow: step '{step}' ran but its outputs were not cached ({error}); earlier "
            "cache entries are intact")


@dataclass(frozen=True)
class Manifest:
    """A verified manifest. ``outputs[name]`` has digest, stream, buffers, size, type, preview."""

    key: str
    data: Mapping[str, Any]

    @property
    def outputs(self) -> Mapping[str, Mapping[str, Any]]:
        return self.data["outputs"]

    @property
    def step(self) -> str:
        return str(self.data.get("step", ""))

    @property
    def flow(self) -> str:
        return str(self.data.get("flow", ""))

    @property
    def duration(self) -> float:
        return float(self.data.get("duration") or 0.0)

    @property
    def created(self) -> float:
        return float(self.data.get("created") or 0.0)

    @property
    def displays(self) -> list[Any]:
        return list(self.data.get("displays") or [])

    @property
    def record(self) -> Mapping[str, Any]:
        return self.data.get("record") or {}

    def digest(self, name: str) -> str:
        return self.digests[name]

    @functools.cached_property
    def digests(self) -> dict[str, str]:
        """Content digest per output (computed once: a run re-checking an ancestor takes its
        digests from the same verified manifest every time)."""
        return {n: str(o["digest"]) for n, o in self.outputs.items()}

    @property
    def size(self) -> int:
        return sum(int(o.get("size", 0)) for o in self.outputs.values())

    @functools.cached_property
    def sizes(self) -> dict[str, int]:
        """Bytes per output (computed once: the verified manifest is reused on every hit)."""
        return {n: int(o.get("size", 0)) for n, o in self.outputs.items()}


@dataclass
class CheckReport:
    """What :meth:`Store.check` found (and removed, with ``fix``)."""

    entries: int = 0
    bad_entries: list[str] = field(default_factory=list)
    orphan_blobs: list[str] = field(default_factory=list)
    temp_files: list[str] = field(default_factory=list)
    fixed: bool = False

    @property
    def clean(self) -> bool:
        return not (self.bad_entries or self.orphan_blobs or self.temp_files)

    def __str__(self) -> str:
        return (
            f"{self.entries} entries; {len(self.bad_entries)} bad, "
            f"{len(self.orphan_blobs)} orphan blobs, {len(self.temp_files)} temp files"
            + (" (removed)" if self.fixed and not self.clean else "")
        )


def _blob_path(digest: str) -> str:
    return f"blobs/{digest[:2]}/{digest}"


def _manifest_path(key: str) -> str:
    return f"manifests/{key[:2]}/{key}.json"


def _blob_refs(m: Manifest) -> Iterator[str]:
    """Digests of the blobs an entry names (an inline stream names none)."""
    for info in m.outputs.values():
        if "inline" not in info["stream"]:
            yield info["stream"]["digest"]
        for b in info.get("buffers", ()):
            yield b["digest"]


_SIG_TAIL = b',"sig":"'
_SCALARS_MAX = 1024  # values of up to INLINE_MAX bytes: a few MB at most
# verified manifests kept in memory: a long session edits and reruns cells all day, and a
# manifest holds the cell's captured displays (images, tables)
_MANIFESTS_MAX = 4096


class Store:
    """Signed, content-addressed cache over a :class:`Backend`. Thread- and process-safe."""

    def __init__(self, backend: Backend, *, strict: bool = False, verify_buffers: bool = True) -> None:
        self.backend = backend
        self.strict = strict
        self.verify_buffers = verify_buffers
        self._key = signing.load_key()
        self._memo: dict[str, tuple[tuple[int, int] | None, Manifest]] = {}
        # an inline stream's text -> its digest, size and immutable value (see :meth:`load`)
        self._scalars: dict[str, tuple[Any, Any, Any]] = {}
        self._warned: set[str] = set()
        self._lock = threading.Lock()
        # entries whose manifest waits for :meth:`defer_writes`'s callable (see there)
        self._pending: dict[str, Manifest] = {}
        self._defer: Callable[[Callable[[], None]], None] | None = None
        self._defer_thread: threading.Thread | None = None

    @property
    def root(self) -> str:
        return self.backend.root

    def __repr__(self) -> str:
        return f"Store({self.root!r})"

    # -- warnings ---------------------------------------------------------------------------------
    def _bad(self, key: str, why: str) -> None:
        msg = f"nbflow: ignoring cache entry {key[:12]} ({why}); it will be recomputed"
        if self.strict:
            raise CorruptEntry(msg)
        with self._lock:
            if key in self._warned:
                return
            self._warned.add(key)
        warnings.warn(msg, NbflowWarning, stacklevel=3)

    # -- reading ----------------------------------------------------------------------------------
    def has(self, key: str) -> bool:
        return self.get(key, quiet=True) is not None

    def get(self, key: str, *, quiet: bool = False) -> Manifest | None:
        """The verified manifest for ``key``, or None (a bad one also warns, once)."""
        memo = self._memo.get(key)  # a key in the memo was checked to be a key already
        if memo is None and not _HEX.match(key):
            raise ValueError(f"not a cache key: {key!r}")
        if self._pending:
            pending = self._pending.get(key)
            if pending is not None:
                return pending
        path = _manifest_path(key)
        sig = self.backend.signature(path)
        if sig is None:
            self._memo.pop(key, None)
            return None
        if memo is not None and memo[0] == sig:
            return memo[1]
        try:
            raw = self.backend.read(path)
        except FileNotFoundError:
            return None
        except OSError as e:
            self._bad(key, f"unreadable: {e}")
            return None
        manifest = self._verify_manifest(key, raw)
        if manifest is None:
            return None
        self._remember(key, sig, manifest)
        return manifest

    def _remember(self, key: str, sig: tuple[int, int] | None, manifest: Manifest) -> None:
        if len(self._memo) >= _MANIFESTS_MAX:
            self._memo.clear()  # those still in use are verified again, once
        self._memo[key] = (sig, manifest)

    def _open_signed(self, field: str, raw: bytes) -> tuple[Any, str | None]:
        """(body, None) for a document signed with this user's key, else (None, why).

        The layout :meth:`_signed` writes, ``{"<field>":<body>,"sig":"<64 hex>"}``, is checked
        over the body's bytes as stored (no re-encoding: verifying is most of the first hit of
        an entry in a process). A document in any other layout, e.g. rewritten by a tool, is
        parsed and checked over its canonical form.
        """
        head = b'{"' + field.encode() + b'":'
        tail = len(_SIG_TAIL) + 66  # ,"sig":" + 64 hex + "}
        if raw.startswith(head) and len(raw) > len(head) + tail and raw.endswith(b'"}'):
            text, end = raw[len(head):-tail], raw[-tail:]
            if end.startswith(_SIG_TAIL) and signing.verify(text, end[len(_SIG_TAIL):-2].decode(
                    "ascii", "replace"), self._key):
                try:
                    return loads(text), None
                except ValueError:
                    return None, f"{field} is truncated or not JSON"
        try:
            doc = json.loads(raw)
            body, signature = doc[field], doc["sig"]
        except (ValueError, KeyError, TypeError):
            return None, f"{field} is truncated or not JSON"
        if not isinstance(signature, str) or not any(
                signing.verify(text, signature, self._key) for text in canonical_forms(body)):
            return None, "signature does not match this user's key: tampered or foreign entry"
        return body, None

    def _verify_manifest(self, key: str, raw: bytes) -> Manifest | None:
        data, why = self._open_signed("manifest", raw)
        if why is not None or not isinstance(data, dict):
            self._bad(key, why or "manifest is not a JSON object")
            return None
        if data.get("key") != key or data.get("format") != MANIFEST_FORMAT:
            self._bad(key, "manifest belongs to another key or format")
            return None
        return Manifest(key, data)

    def load(self, manifest: Manifest, name: str) -> Any:
        """Load output ``name`` after verifying every blob; raises :class:`CorruptEntry`.

        A small value of an immutable type (a number, a string) is decoded once per process:
        the same inline text under the same digest is the same verified bytes, and nobody can
        change the value in place, so one object serves every later load (a step's inputs are
        loaded each time it runs)."""
        info = manifest.outputs[name]
        ref = info["stream"]
        inline = ref.get("inline")
        if inline is not None:
            known = self._scalars.get(inline)
            if known is not None and known[0] == ref["digest"] and known[1] == ref["size"]:
                return known[2]
        stream = self._read_blob(ref)
        buffers = [self._map_blob(b) for b in info.get("buffers", ())]
        try:
            value = decode(stream, buffers)
        except Exception as e:  # signed and verified, yet unloadable: e.g. a missing module
            raise CorruptEntry(f"cannot unpickle '{name}': {type(e).__name__}: {e}") from e
        if inline is not None and not buffers and type(value) in SCALARS:
            if len(self._scalars) >= _SCALARS_MAX:
                self._scalars.clear()
            self._scalars[inline] = (ref["digest"], ref["size"], value)
        return value

    def _read_blob(self, ref: Mapping[str, Any], repair: bool = True) -> bytes:
        digest, size = str(ref["digest"]), int(ref["size"])
        inline = ref.get("inline")
        if inline is not None:
            try:
                data = base64.b64decode(inline, validate=True)
            except ValueError as e:
                raise CorruptEntry(f"inline stream {digest[:12]} is not base64") from e
            if len(data) != size or digest_bytes(data) != digest:
                raise CorruptEntry(f"inline stream {digest[:12]} does not match its digest")
            return data
        try:
            data = self.backend.read(_blob_path(digest))
        except OSError as e:
            raise CorruptEntry(f"blob {digest[:12]} missing: {e}") from e
        if len(data) != size or digest_bytes(data) != digest:
            if repair:  # content-addressed: a blob whose bytes do not match its name is garbage
                self.backend.remove(_blob_path(digest))
            raise CorruptEntry(f"blob {digest[:12]} is truncated or altered")
        return data

    def _map_blob(self, ref: Mapping[str, Any], repair: bool = True) -> memoryview:
        digest, size = str(ref["digest"]), int(ref["size"])
        try:
            view = self.backend.map(_blob_path(digest))
        except (OSError, ValueError) as e:
            raise CorruptEntry(f"blob {digest[:12]} missing: {e}") from e
        if view.nbytes != size or (self.verify_buffers and digest_bytes(view) != digest):
            view.release()
            if repair:
                self.backend.remove(_blob_path(digest))
            raise CorruptEntry(f"blob {digest[:12]} is truncated or altered")
        return view.toreadonly()

    def load_outputs(self, manifest: Manifest, names: list[str] | None = None) -> dict[str, Any] | None:
        """Every (or the named) output of an entry, or None plus one warning if it is bad."""
        try:
            return {n: self.load(manifest, n) for n in (names or list(manifest.outputs))}
        except CorruptEntry as e:
            self.forget(manifest.key)
            self._bad(manifest.key, str(e))
            return None

    # -- writing ----------------------------------------------------------------------------------
    def put(
        self,
        key: str,
        encoded: Mapping[str, Encoded],
        meta: Mapping[str, Any] | None = None,
    ) -> Manifest:
        """Write blobs, then the signed manifest (the commit point; perhaps later, see
        :meth:`defer_writes`). Raises StoreWriteError."""
        outputs: dict[str, Any] = {}
        try:
            for name, enc in encoded.items():
                stream: dict[str, Any] = {"digest": enc.stream_digest, "size": len(enc.stream)}
                if not enc.buffers and len(enc.stream) <= INLINE_MAX:
                    stream["inline"] = base64.b64encode(enc.stream).decode("ascii")
                else:
                    self._put_blob(enc.stream_digest, [enc.stream])
                refs = []
                for digest, buf in zip(enc.buffer_digests, enc.buffers, strict=True):
                    self._put_blob(digest, [buf])
                    refs.append({"digest": digest, "size": buf.nbytes})
                outputs[name] = {
                    "digest": enc.digest,
                    "stream": stream,
                    "buffers": refs,
                    "size": enc.size,
                }
                extra = (meta or {}).get("output_info", {}).get(name)
                if extra:
                    outputs[name].update(extra)
            data: dict[str, Any] = {
                "format": MANIFEST_FORMAT,
                "key": key,
                "created": time.time(),
                **{k: v for k, v in (meta or {}).items() if k != "output_info"},
                "outputs": outputs,
            }
        except OSError as e:
            raise StoreWriteError(f"{type(e).__name__}: {e}") from e
        defer = self._defer
        if defer is not None and threading.current_thread() is self._defer_thread:
            manifest = Manifest(key, data)
            self._pending[key] = manifest
            defer(functools.partial(self._write_pending, key, manifest))
            return manifest
        return self._write_manifest(key, data)

    def _write_manifest(self, key: str, data: Mapping[str, Any]) -> Manifest:
        try:
            body, doc = self._signed("manifest", data)
            self.backend.write_atomic(_manifest_path(key), [doc])
        except OSError as e:
            raise StoreWriteError(f"{type(e).__name__}: {e}") from e
        manifest = Manifest(key, body)
        self._remember(key, self.backend.signature(_manifest_path(key)), manifest)
        return manifest

    # -- writing manifests later ------------------------------------------------------------------
    def defer_writes(self, defer: Callable[[Callable[[], None]], None] | None) -> None:
        """Have :meth:`put`, called from this thread, hand its manifest's writing to ``defer``
        (None: write at once again, and write what waits now).

        A notebook kernel passes "once the kernel is idle": encoding, signing and writing the
        manifest are a sixth of a cache-miss cell's own work and most of its I/O, and the cell
        need not wait for them. The blobs are written at once (a large output's disk-full
        error shows in its cell). Until its manifest is written, an entry is served from memory
        in this process; a process killed first loses that entry, never an earlier one, and
        serves nothing partial: the manifest is still the commit point. A write that fails
        then warns, as a failed :meth:`put` does, and the entry is forgotten.
        """
        if defer is None:
            self._defer = self._defer_thread = None
            self.flush()
        else:
            self._defer, self._defer_thread = defer, threading.current_thread()

    def flush(self) -> None:
        """Write every manifest that waits (see :meth:`defer_writes`) now."""
        for key, manifest in list(self._pending.items()):
            self._write_pending(key, manifest)

    def pending(self) -> list[str]:
        """Keys whose manifest waits to be written."""
        return list(self._pending)

    def _write_pending(self, key: str, manifest: Manifest) -> None:
        if self._pending.get(key) is not manifest:
            return  # written by a flush meanwhile, or deleted
        try:
            self._write_manifest(key, manifest.data)
        except StoreWriteError as e:
            self._memo.pop(key, None)
            warnings.warn(not_cached(manifest.step, e), NbflowWarning, stacklevel=2)
        finally:
            self._pending.pop(key, None)

    def _signed(self, field: str, data: Mapping[str, Any]) -> tuple[Any, bytes]:
        """(body, document bytes) of ``{field: body, "sig": ...}``: the canonical text of
        ``data`` is signed and written as is; ``body`` is what a reader parses back from it."""
        text = canonical(data)
        return loads(text), self._wrap(field, text)

    def _document(self, field: str, data: Mapping[str, Any]) -> bytes:
        """The document bytes of a record, for a writer that keeps no body: the json module's
        text, which keeps a NaN among a run's parameters a NaN."""
        return self._wrap(field, canonical_json(data))

    def _wrap(self, field: str, text: bytes) -> bytes:
        sig = signing.sign(text, self._key)
        return b'{"' + field.encode() + b'":' + text + _SIG_TAIL + sig.encode() + b'"}'

    def _put_blob(self, digest: str, chunks: list[bytes | memoryview]) -> None:
        path = _blob_path(digest)
        expected = sum(len(c) if isinstance(c, bytes) else c.nbytes for c in chunks)
        if self.backend.size(path) == expected:
            return  # content-addressed: same name, same bytes (verified again on read)
        self.backend.write_atomic(path, chunks)

    # -- records (runs of a flow, ...) -------------------------------------------------------------
    def put_record(self, kind: str, name: str, data: Mapping[str, Any]) -> None:
        if not (_RECORD_NAME.match(kind) and _RECORD_NAME.match(name)):
            raise ValueError(f"bad record name {kind!r}/{name!r}")
        doc = self._document("record", data)
        try:
            self.backend.write_atomic(f"records/{kind}/{name}.json", [doc])
        except OSError as e:
            raise StoreWriteError(f"{type(e).__name__}: {e}") from e

    def get_record(self, kind: str, name: str) -> dict[str, Any] | None:
        if not (_RECORD_NAME.match(kind) and _RECORD_NAME.match(name)):
            return None
        try:
            raw = self.backend.read(f"records/{kind}/{name}.json")
        except OSError:
            return None
        body, why = self._open_signed("record", raw)
        if why is not None or not isinstance(body, dict):
            if why is not None and "signature" in why:
                self._bad(f"{kind}/{name}", "record signature does not match")
            return None
        return dict(body)

    def records(self, kind: str) -> list[str]:
        if not _RECORD_NAME.match(kind):
            return []
        names = []
        for info in self.backend.walk(f"records/{kind}"):
            base = info.path.rsplit("/", 1)[-1]
            if base.endswith(".json") and not base.startswith(TMP_PREFIX):
                names.append(base[: -len(".json")])
        return sorted(names)

    # -- maintenance ------------------------------------------------------------------------------
    def forget(self, key: str) -> None:
        """Drop what memory holds of ``key``, found bad while loading: it is read and verified
        again, and a manifest still waiting to be written never is."""
        self._memo.pop(key, None)
        self._pending.pop(key, None)

    def delete(self, key: str) -> None:
        """Remove the manifest (blobs become orphans, reclaimed by :meth:`gc`/:meth:`check`)."""
        self._memo.pop(key, None)
        self._pending.pop(key, None)
        self.backend.remove(_manifest_path(key))

    def entries(self) -> Iterator[Manifest]:
        """Every valid entry (bad ones warn and are skipped)."""
        self.flush()  # an entry waiting to be written is one, and its blobs are no orphans
        for info in self.backend.walk("manifests"):
            base = info.path.rsplit("/", 1)[-1]
            if base.startswith(TMP_PREFIX) or not base.endswith(".json"):
                continue
            key = base[: -len(".json")]
            if _HEX.match(key):
                m = self.get(key)
                if m is not None:
                    yield m

    def clear(self, *, step: str | None = None, flow: str | None = None) -> int:
        """Delete entries (all, or of one step/flow); returns how many. Blobs go with gc."""
        n = 0
        for m in list(self.entries()):
            if (step is None or m.step == step) and (flow is None or m.flow == flow):
                self.delete(m.key)
                n += 1
        self.remove_orphans()
        return n

    def referenced_blobs(self) -> set[str]:
        refs: set[str] = set()
        for m in self.entries():
            refs.update(_blob_refs(m))
        return refs

    def remove_orphans(self, min_age: float = 0.0) -> list[str]:
        """Delete blobs no manifest names (older than ``min_age`` s, so in-flight writes survive)."""
        refs = self.referenced_blobs()
        now = time.time()
        removed = []
        for info in list(self.backend.walk("blobs")):
            name = info.path.rsplit("/", 1)[-1]
            if name.startswith(TMP_PREFIX):
                continue
            if name not in refs and now - info.mtime >= min_age:
                self.backend.remove(info.path)
                removed.append(name)
        return removed

    def size(self) -> int:
        self.flush()
        return sum(i.size for i in self.backend.walk(""))

    def gc(self, max_size: int) -> list[str]:
        """Evict least recently used entries until blobs + manifests fit in ``max_size`` bytes."""
        entries = sorted(self.entries(), key=lambda m: self._last_used(m))
        total = self.size()
        evicted = []
        for m in entries:
            if total <= max_size:
                break
            self.delete(m.key)
            evicted.append(m.key)
            self.remove_orphans()
            total = self.size()
        return evicted

    def _last_used(self, m: Manifest) -> float:
        sig = self.backend.signature(_manifest_path(m.key))
        return sig[0] / 1e9 if sig else 0.0

    def touch(self, key: str) -> None:
        """Mark an entry used (for LRU gc)."""
        if key in self._pending:
            return  # it is written once the caller is idle, as new as it gets
        self.backend.touch(_manifest_path(key))

    def check(self, fix: bool = False, temp_age: float = 3600.0) -> CheckReport:
        """Reconcile manifests and blobs: bad entries, orphan blobs, leftover temp files."""
        self.flush()
        report = CheckReport(fixed=fix)
        refs: set[str] = set()
        now = time.time()
        for info in list(self.backend.walk("manifests")):
            base = info.path.rsplit("/", 1)[-1]
            if base.startswith(TMP_PREFIX):
                if now - info.mtime >= temp_age or temp_age == 0:
                    report.temp_files.append(info.path)
                continue
            key = base[: -len(".json")]
            m = self.get(key, quiet=True) if _HEX.match(key) else None
            ok = m is not None
            if ok and m is not None:
                report.entries += 1
                try:
                    for info_out in m.outputs.values():
                        self._read_blob(info_out["stream"], repair=fix)
                        for b in info_out.get("buffers", ()):
                            self._map_blob(b, repair=fix).release()
                except CorruptEntry:
                    ok = False
            if not ok:
                report.bad_entries.append(key)
                continue
            assert m is not None
            refs.update(_blob_refs(m))
        for info in list(self.backend.walk("blobs")):
            name = info.path.rsplit("/", 1)[-1]
            if name.startswith(TMP_PREFIX):
                if now - info.mtime >= temp_age or temp_age == 0:
                    report.temp_files.append(info.path)
            elif name not in refs:
                report.orphan_blobs.append(name)
        if fix:
            for key in report.bad_entries:
                self.delete(key)
            for name in report.orphan_blobs:
                self.backend.remove(_blob_path(name))
            for path in report.temp_files:
                self.backend.remove(path)
        return report
