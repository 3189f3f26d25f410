"""What runs on a worker: open the shared store, load a step's inputs from it, run, commit.

A task carries keys, digests and small values only. The worker reads its inputs from the store
(``("entry", key, name)`` references) and writes its outputs there itself, exactly as the serial
walk would (same keys, same manifest metadata, manifest last), then returns a small
:class:`StepResult`. Values travel inline only where they cannot live in the store (a step with
``cache=False``, an output that could not be stored).

Works the same in a worker process, a Dask worker or a thread of this process (which gets the
store object itself instead of a :class:`StoreSpec`). Must never import Dask or IPython.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import marshal
import os
import pickle
import socket
import threading
import time
import traceback
import types
from collections import ChainMap, OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cloudpickle

from ..errors import NbflowError
from ..executor import VOLATILE, _split, foreach_item_key
from ..store import Encoded, Store, StoreWriteError, decode, encode
from ..store.backend import LocalBackend
from ..store.codec import value_digest

# -- the store, as a worker opens it ----------------------------------------------------------------


def key_id(key: bytes) -> str:
    """A fingerprint of the signing key that reveals nothing about it."""
    return hmac.new(key, b"nbflow key id", hashlib.sha256).hexdigest()[:16]


@dataclass(frozen=True)
class StoreSpec:
    """How another process opens the same store: its location, options and signing key file."""

    kind: str  # "dir" or "url"
    location: str
    options: tuple[tuple[str, Any], ...]
    key_file: str
    key_id: str


def store_spec(store: Store) -> StoreSpec:
    """The spec of ``store`` for worker processes; a clear error if they could not share it."""
    from ..store import signing

    backend = store.backend
    kid = key_id(store._key)
    key_file = str(signing.key_path())
    if isinstance(backend, LocalBackend):
        return StoreSpec("dir", backend.root, (("fsync", backend.fsync),), key_file, kid)
    from ..store.remote import FsspecBackend

    if isinstance(backend, FsspecBackend):
        if not backend.shared:
            raise NbflowError(
                f"the store {backend.url} lives in this process's memory, so workers cannot "
                "reach it; use a directory or a shared fsspec URL (e.g. s3://bucket/prefix)"
            )
        return StoreSpec("url", backend.url, tuple(sorted(backend.options.items())), key_file, kid)
    raise NbflowError(
        f"the store {store.root} ({type(backend).__name__}) cannot be opened by workers; "
        "use a directory or an fsspec URL"
    )


_stores: dict[StoreSpec, Store] = {}
_stores_lock = threading.Lock()


def open_spec(spec: StoreSpec | Store) -> Store:
    """The worker's store for ``spec`` (opened once per process and reused)."""
    if isinstance(spec, Store):
        return spec
    store = _stores.get(spec)
    if store is not None:
        return store
    from ..store import signing

    host = socket.gethostname()
    if not os.path.exists(spec.key_file):
        raise NbflowError(
            f"worker {host} has no nbflow signing key at {spec.key_file}, so it could not sign "
            "entries this session trusts; copy the key file there (or set NBFLOW_KEY_FILE on "
            "the workers to a copy of it)"
        )
    os.environ["NBFLOW_KEY_FILE"] = spec.key_file  # Store() reads the key from here
    if key_id(signing.load_key(Path(spec.key_file))) != spec.key_id:
        raise NbflowError(
            f"worker {host} holds a different nbflow signing key at {spec.key_file} than this "
            "session; give the workers the same key file"
        )
    options = dict(spec.options)
    if spec.kind == "dir":
        if not os.path.isdir(spec.location):
            raise NbflowError(
                f"the store directory {spec.location} does not exist on worker {host}; workers "
                "must share the store: use a directory they all see or an fsspec URL (s3://...)"
            )
        store = Store(LocalBackend(spec.location, fsync=bool(options.get("fsync"))))
    else:
        from ..store.remote import FsspecBackend

        store = Store(FsspecBackend(spec.location, **options))
    with _stores_lock:
        _stores[spec] = store
    return store


# -- payloads ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Payload:
    """An encoded value in transit (bytes, so any pickler carries it)."""

    stream: bytes
    buffers: tuple[bytes, ...]
    stream_digest: str
    buffer_digests: tuple[str, ...]
    digest: str

    @classmethod
    def of(cls, enc: Encoded) -> Payload:
        return cls(enc.stream, tuple(bytes(b) for b in enc.buffers), enc.stream_digest,
                   enc.buffer_digests, enc.digest)

    def encoded(self) -> Encoded:
        return Encoded(self.stream, tuple(memoryview(b) for b in self.buffers),
                       self.stream_digest, self.buffer_digests, self.digest)

    def decode(self) -> Any:
        return decode(self.stream, [memoryview(b).toreadonly() for b in self.buffers])

    @property
    def size(self) -> int:
        return len(self.stream) + sum(len(b) for b in self.buffers)


#: an input reference: ("entry", manifest key, output name) or ("inline", Payload)
InputRef = tuple[Any, ...]


@dataclass(frozen=True)
class WorkerStep:
    """The part of a :class:`~nbflow.graph.Step` a worker needs (no externals, no metadata)."""

    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    action: Callable[[dict[str, Any]], Any]
    code: str
    version: str | None
    cache: bool
    foreach: str | None


@dataclass(frozen=True)
class StepTask:
    """One step (or one foreach item, with ``index``) to run on a worker."""

    flow: str
    run_id: str
    step: bytes | WorkerStep  # cloudpickled for other processes, the object for threads
    step_digest: str
    key: str
    inputs: Mapping[str, InputRef]
    meta: Mapping[str, Any]  # manifest metadata the driver knows (step, flow, record)
    store_outputs: bool  # False for cache=False and volatile keys: outputs come back inline
    base: Mapping[str, str] = field(default_factory=dict)  # foreach: key inputs minus the list


@dataclass
class StepResult:
    """What a worker sends back: digests and sizes; values only when they are not stored."""

    digests: dict[str, str] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    duration: float = 0.0
    stored: bool = False
    inline: dict[str, Payload] = field(default_factory=dict)
    unpicklable: list[str] = field(default_factory=list)
    stale: str | None = None  # key of an input entry that failed verification
    put_error: str | None = None
    worker: str = ""


@dataclass
class SplitResult:
    """A foreach step's items: their keys, and which the store already holds."""

    count: int
    keys: list[str]
    cached: list[bool]
    volatile: list[bool]
    stale: str | None = None


@dataclass
class ItemResult:
    index: int
    stored: bool
    duration: float = 0.0
    inline: dict[str, Payload] = field(default_factory=dict)
    stale: str | None = None


class RemoteStepError(Exception):
    """A step's exception that could not travel back as itself (it does not pickle)."""

    def __init__(self, type_name: str, message: str, remote_traceback: str) -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.nbflow_traceback = remote_traceback

    def __reduce__(self) -> tuple[Any, ...]:
        return (RemoteStepError, (self.type_name, str(self), self.nbflow_traceback))


class _StaleInput(Exception):
    def __init__(self, key: str) -> None:
        self.key = key


# -- worker-side caches -----------------------------------------------------------------------------

_step_cache: OrderedDict[str, WorkerStep] = OrderedDict()
_input_cache: OrderedDict[str, dict[str, Any]] = OrderedDict()
_cache_lock = threading.Lock()


def _load_step(task: StepTask) -> WorkerStep:
    if isinstance(task.step, WorkerStep):
        return task.step
    with _cache_lock:
        hit = _step_cache.get(task.step_digest)
        if hit is not None:
            _step_cache.move_to_end(task.step_digest)
            return hit
    step = pickle.loads(task.step)
    with _cache_lock:
        _step_cache[task.step_digest] = step
        while len(_step_cache) > 64:
            _step_cache.popitem(last=False)
    return step


def _load_inputs(store: Store, refs: Mapping[str, InputRef]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, ref in refs.items():
        if ref[0] == "inline":
            values[name] = ref[1].decode()
            continue
        _, key, output = ref
        manifest = store.get(key)
        loaded = store.load_outputs(manifest, [output]) if manifest is not None else None
        if loaded is None:
            raise _StaleInput(key)
        values[name] = loaded[output]
    return values


def _shared_inputs(store: Store, task: StepTask, foreach: str) -> dict[str, Any]:
    """The inputs of a foreach step, decoded once per worker for all its items of one run (as
    the serial walk decodes them once for its whole loop); the list is made a list once."""
    cache_key = f"{task.run_id}:{task.key}"
    with _cache_lock:
        hit = _input_cache.get(cache_key)
        if hit is not None:
            return hit
    values = _load_inputs(store, task.inputs)
    values[foreach] = list(values[foreach])
    with _cache_lock:
        _input_cache[cache_key] = values
        while len(_input_cache) > 2:
            _input_cache.popitem(last=False)
    return values


def _fail(e: BaseException) -> BaseException:
    """The exception to raise to the driver, with the worker's traceback text attached."""
    text = "".join(traceback.format_exception(type(e), e, e.__traceback__))
    try:
        e.nbflow_traceback = text  # type: ignore[attr-defined]
        pickle.loads(pickle.dumps(e))
        return e
    except Exception:
        return RemoteStepError(type(e).__name__, str(e), text)


def _encode_all(step: WorkerStep, values: Mapping[str, Any]) -> tuple[dict[str, Encoded], list[str]]:
    encoded: dict[str, Encoded] = {}
    bad: list[str] = []
    for out in step.outputs:
        try:
            encoded[out] = encode(values[out])
        except Exception:
            bad.append(out)
    return encoded, bad


def _commit(store: Store, task: StepTask, step: WorkerStep, encoded: dict[str, Encoded],
            meta: Mapping[str, Any], duration: float) -> StepResult:
    """Store the outputs under the task's key (or send them back inline)."""
    result = StepResult(
        digests={o: e.digest for o, e in encoded.items()},
        sizes={o: e.size for o, e in encoded.items()},
        duration=duration,
        worker=socket.gethostname(),
    )
    if task.store_outputs:
        entry = {**task.meta, "duration": duration, **meta}
        record = dict(entry.get("record") or {})
        if record:
            record["output_digests"] = dict(result.digests)
            entry["record"] = record
        try:
            store.put(task.key, encoded, entry)
            result.stored = True
            return result
        except StoreWriteError as e:
            result.put_error = str(e)
    result.inline = {o: Payload.of(e) for o, e in encoded.items()}
    return result


# -- the tasks --------------------------------------------------------------------------------------


def run_step(spec: StoreSpec | Store, task: StepTask) -> StepResult:
    """Run one (non-foreach) step: inputs from the store, outputs into it."""
    store = open_spec(spec)
    step = _load_step(task)
    try:
        inputs = _load_inputs(store, task.inputs)
    except _StaleInput as s:
        return StepResult(stale=s.key)
    started = time.perf_counter()
    try:
        values, meta = _split(step, step.action(inputs))  # type: ignore[arg-type]
    except BaseException as e:  # noqa: BLE001 - sent back to the driver, which reports it
        raise _fail(e) from None
    duration = time.perf_counter() - started
    encoded, bad = _encode_all(step, values)
    if bad:
        return StepResult(unpicklable=bad, duration=duration)
    return _commit(store, task, step, encoded, meta, duration)


def split_foreach(spec: StoreSpec | Store, task: StepTask) -> SplitResult:
    """A foreach step's item keys and which items the store already holds."""
    store = open_spec(spec)
    step = _load_step(task)
    assert step.foreach is not None
    try:
        items = _shared_inputs(store, task, step.foreach)[step.foreach]
    except _StaleInput as s:
        return SplitResult(0, [], [], [], stale=s.key)
    keys: list[str] = []
    volatile: list[bool] = []
    for item in items:
        try:
            digest = value_digest(item)
        except Exception:
            digest = VOLATILE + os.urandom(16).hex()
        volatile.append(digest.startswith(VOLATILE))
        keys.append(foreach_item_key(step.name, step.code, step.outputs, step.version,
                                     task.base, digest))

    def held(i: int) -> bool:
        if volatile[i] or not step.cache:
            return False
        manifest = store.get(keys[i], quiet=True)
        return manifest is not None and all(o in manifest.outputs for o in step.outputs)

    if len(items) > 8 and not isinstance(store.backend, LocalBackend):
        from concurrent.futures import ThreadPoolExecutor  # remote lookups overlap their latency

        with ThreadPoolExecutor(16) as pool:
            cached = list(pool.map(held, range(len(items))))
    else:
        cached = [held(i) for i in range(len(items))]
    return SplitResult(len(items), keys, cached, volatile)


def run_item(spec: StoreSpec | Store, task: StepTask, index: int, item_key: str,
             volatile: bool) -> ItemResult:
    """Run a foreach step on item ``index`` and store that item's entry."""
    store = open_spec(spec)
    step = _load_step(task)
    assert step.foreach is not None
    try:
        inputs = _shared_inputs(store, task, step.foreach)
    except _StaleInput as s:
        return ItemResult(index, False, stale=s.key)
    started = time.perf_counter()
    try:
        result = step.action({**inputs, step.foreach: inputs[step.foreach][index]})
        values, _meta = _split(step, result)  # type: ignore[arg-type]
    except BaseException as e:  # noqa: BLE001
        raise _fail(e) from None
    duration = time.perf_counter() - started
    encoded, bad = _encode_all(step, values)
    if not bad and step.cache and not volatile:
        try:
            store.put(item_key, encoded, {"step": step.name, "flow": task.flow, "item": index,
                                          "duration": duration})
            return ItemResult(index, True, duration)
        except StoreWriteError:
            pass
    if bad:
        raise _fail(NbflowError(
            f"output {', '.join(repr(b) for b in bad)} of foreach step '{step.name}' (item "
            f"{index}) cannot be pickled, so it cannot come back from a worker; make it "
            "picklable or run this flow without a parallel executor"
        ))
    return ItemResult(index, False, duration, {o: Payload.of(e) for o, e in encoded.items()})


def join_foreach(spec: StoreSpec | Store, task: StepTask, split: SplitResult,
                 items: Sequence[ItemResult | None], elapsed: float) -> StepResult:
    """Collect every item's outputs into lists and commit the step's own entry."""
    store = open_spec(spec)
    step = _load_step(task)
    assert step.foreach is not None
    started = time.perf_counter()
    by_index = {r.index: r for r in items if r is not None}
    results: list[dict[str, Any]] = []
    for i in range(split.count):
        r = by_index.get(i)
        if r is not None and not r.stored and r.stale is None:
            results.append({o: p.decode() for o, p in r.inline.items()})
            continue
        manifest = store.get(split.keys[i])
        loaded = store.load_outputs(manifest) if manifest is not None else None
        if loaded is None or not all(o in loaded for o in step.outputs):
            # the entry went bad since the split: compute the item here, as the serial walk would
            try:
                inputs = _shared_inputs(store, task, step.foreach)
            except _StaleInput as s:
                return StepResult(stale=s.key)
            try:
                out = step.action({**inputs, step.foreach: inputs[step.foreach][i]})
                loaded, _ = _split(step, out)  # type: ignore[arg-type]
            except BaseException as e:  # noqa: BLE001
                raise _fail(e) from None
        results.append(loaded)
    values = {o: [r[o] for r in results] for o in step.outputs}
    encoded, bad = _encode_all(step, values)
    duration = elapsed + time.perf_counter() - started
    if bad:
        return StepResult(unpicklable=bad, duration=duration)
    return _commit(store, task, step, encoded, {}, duration)


def _code_whole(code: types.CodeType) -> tuple[Callable[[bytes], Any], tuple[bytes]]:
    return marshal.loads, (marshal.dumps(code),)


class _StepPickler(cloudpickle.Pickler):
    """cloudpickle, with code objects sent whole, file name included (marshal, as in ``.pyc``
    files: workers run the same Python, as cloudpickle's code objects require anyway).

    cloudpickle 3.1.3 names every code object it pickles by value ``<dynamic-code>``, so that
    a payload does not depend on where its function was defined. A step failing on a worker
    then named no file, and its traceback lost the line that raised. The payload's digest only
    names a worker's copy of the step: a payload that differs from one run to the next (marshal
    marks shared objects by reference count) costs a worker one more unpickling, no more."""

    dispatch_table = ChainMap({types.CodeType: _code_whole}, cloudpickle.Pickler.dispatch_table)


def pickle_step(step: WorkerStep) -> tuple[bytes, str]:
    """(cloudpickled step, its digest); raises if the step's action cannot be pickled."""
    from ..hashing import digest_bytes

    with io.BytesIO() as f:
        _StepPickler(f, protocol=5).dump(step)
        data = f.getvalue()
    return data, digest_bytes(data)


__all__ = [
    "InputRef",
    "ItemResult",
    "Payload",
    "RemoteStepError",
    "SplitResult",
    "StepResult",
    "StepTask",
    "StoreSpec",
    "WorkerStep",
    "join_foreach",
    "open_spec",
    "pickle_step",
    "run_item",
    "run_step",
    "split_foreach",
    "store_spec",
]
