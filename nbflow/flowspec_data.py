"""Artifacts of Metaflow-style flows and the task states that carry them from step to step.

A task's state is small: for each artifact its content digest, the step that set it, and either
its pickled bytes inline (small values) or nothing (a large value lives in its own store entry,
keyed by its digest, written once however many steps pass it on). States are the values the
engine moves between steps, so a step's cache key covers the digest of every artifact it
receives, identical values compare equal by digest (``merge_artifacts``), and a past run's
``.data.x`` loads one artifact, not the whole state.

Invariant: a state pickles to one canonical JSON string, so equal states always have equal
digests (pickle's memo would otherwise make the bytes depend on object identity).
Must never import IPython.
"""

from __future__ import annotations

import base64
import json
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import NbflowError, NbflowWarning
from .hashing import digest_parts
from .store import Encoded, Store, StoreWriteError, decode, encode

if TYPE_CHECKING:
    from .runs import RunRecord, TaskRecord
    from .store import Manifest

ARTIFACT_FORMAT = "nbflow-artifact-1"
#: pickles up to this size travel inside the state; larger ones get their own store entry
INLINE_MAX = 1024

Ref = tuple[str, str]  # (content digest, base64 pickle when inline else "")


class ArtifactError(NbflowError):
    """An artifact cannot be kept (it does not pickle, or it is missing from the store)."""


class MissingArtifact(ArtifactError):
    """An artifact's store entry is gone (cleared or evicted) or damaged."""

    def __init__(self, name: str, digest: str, origin: str) -> None:
        self.name = name
        self.digest = digest
        self.origin = origin
        super().__init__(
            f"artifact '{name}' (set by step '{origin}') is no longer in the store; "
            f"rerun step '{origin}' (resume {origin}) to recompute it"
        )

    def __reduce__(self) -> tuple[Any, ...]:  # travels back from pool workers as itself
        return (MissingArtifact, (self.name, self.digest, self.origin))


def artifact_key(digest: str) -> str:
    """The store key of a stored artifact: a function of its content only."""
    return digest_parts([ARTIFACT_FORMAT, digest])


def encode_artifact(value: Any, step: str, name: str) -> Encoded:
    try:
        return encode(value)
    except Exception as e:
        raise ArtifactError(
            f"step '{step}' sets self.{name}, which cannot be pickled "
            f"({type(e).__name__}: {e}); artifacts must be picklable: keep it in a local "
            f"variable, or `del self.{name}` before the step ends"
        ) from e


def store_encoded(store: Store, enc: Encoded, *, flow: str, step: str, name: str) -> Ref:
    """A reference to ``enc``: inline when small, else an entry of its own (written once)."""
    if not enc.buffers and len(enc.stream) <= INLINE_MAX:
        return (enc.digest, base64.b64encode(enc.stream).decode("ascii"))
    key = artifact_key(enc.digest)
    if store.get(key, quiet=True) is None:
        try:
            store.put(key, {"value": enc},
                      {"kind": "artifact", "flow": flow, "step": step, "artifact": name})
        except StoreWriteError as e:
            warnings.warn(
                f"nbflow: artifact '{name}' of step '{step}' could not be stored separately "
                f"({e}); it travels inside the step's state instead",
                NbflowWarning, stacklevel=2,
            )
            return (enc.digest, base64.b64encode(_flat(enc)).decode("ascii"))
    return (enc.digest, "")


def _flat(enc: Encoded) -> bytes:
    """A pickle with every buffer in band (used only when a separate entry cannot be written)."""
    import pickle

    return pickle.dumps(decode(enc.stream, list(enc.buffers)), protocol=5)


def load_ref(store: Store, ref: Ref, name: str = "?", origin: str = "?") -> Any:
    """The value behind ``ref``; a missing or damaged entry raises :class:`MissingArtifact`."""
    digest, inline = ref
    if inline:  # the bytes come from a signed entry (the state is a step's stored value)
        return decode(base64.b64decode(inline))
    manifest = store.get(artifact_key(digest))
    if manifest is None:
        raise MissingArtifact(name, digest, origin)
    values = store.load_outputs(manifest, ["value"])
    if values is None:
        raise MissingArtifact(name, digest, origin)
    return values["value"]


# -- task states --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Frame:
    """One enclosing foreach: the step that split, its list's name, this task's index and item."""

    step: str
    var: str
    index: int
    input: Ref


@dataclass(frozen=True)
class TaskState:
    """Artifacts a task ends with: ``(name, digest, inline pickle, step that set it)``, sorted,
    plus the foreach frames the task is inside (outermost first)."""

    step: str
    artifacts: tuple[tuple[str, str, str, str], ...] = ()
    frames: tuple[Frame, ...] = ()

    @staticmethod
    def build(step: str, refs: Mapping[str, tuple[Ref, str]], frames: tuple[Frame, ...]) -> TaskState:
        rows = tuple(sorted((n, r[0], r[1], origin) for n, (r, origin) in refs.items()))
        return TaskState(step, rows, tuple(frames))

    def refs(self) -> dict[str, tuple[Ref, str]]:
        """name -> (ref, origin step)."""
        return {n: ((d, i), o) for n, d, i, o in self.artifacts}

    def digests(self) -> dict[str, str]:
        return {n: d for n, d, _, _ in self.artifacts}

    def names(self) -> list[str]:
        return [n for n, _, _, _ in self.artifacts]

    def to_data(self) -> dict[str, Any]:
        return {
            "s": self.step,
            "a": [list(a) for a in self.artifacts],
            "f": [[f.step, f.var, f.index, list(f.input)] for f in self.frames],
        }

    @staticmethod
    def from_data(data: Mapping[str, Any]) -> TaskState:
        return TaskState(
            str(data["s"]),
            tuple((str(a[0]), str(a[1]), str(a[2]), str(a[3])) for a in data["a"]),
            tuple(Frame(str(f[0]), str(f[1]), int(f[2]), (str(f[3][0]), str(f[3][1]))) for f in data["f"]),
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (_state_from_json, (_canonical(self.to_data()),))

    def __repr__(self) -> str:
        where = "".join(f"[{f.index}]" for f in self.frames)
        return f"TaskState({self.step}{where}: {', '.join(self.names())})"


@dataclass(frozen=True)
class Split:
    """What a step ending in ``self.next(self.x, foreach="v")`` hands on: its own state and one
    reference per item of ``v``. Iterating gives one seed state per item, which is what the
    engine's foreach runs the next step on, and caches, one by one.

    ``hoist``: when no step inside the foreach reads ``self.v`` itself, the seeds leave ``v`` out,
    so an item's cache key covers its own item, not the whole list: editing one item of the list
    reruns that item's tasks only. A join still sees ``v`` through the split.
    """

    state: TaskState
    var: str
    inputs: tuple[Ref, ...]
    hoist: bool = True

    def seeds(self) -> list[TaskState]:
        rows = tuple(a for a in self.state.artifacts if not (self.hoist and a[0] == self.var))
        frames = self.state.frames
        return [
            TaskState(self.state.step, rows, (*frames, Frame(self.state.step, self.var, i, ref)))
            for i, ref in enumerate(self.inputs)
        ]

    def __iter__(self) -> Iterator[TaskState]:
        return iter(self.seeds())

    def __len__(self) -> int:
        return len(self.inputs)

    def to_data(self) -> dict[str, Any]:
        return {"state": self.state.to_data(), "var": self.var,
                "inputs": [list(r) for r in self.inputs], "hoist": self.hoist}

    @staticmethod
    def from_data(data: Mapping[str, Any]) -> Split:
        return Split(TaskState.from_data(data["state"]), str(data["var"]),
                     tuple((str(r[0]), str(r[1])) for r in data["inputs"]), bool(data["hoist"]))

    def __reduce__(self) -> tuple[Any, ...]:
        return (_split_from_json, (_canonical(self.to_data()),))

    def __repr__(self) -> str:
        return f"Split({self.state.step} over {self.var}: {len(self.inputs)} items)"


def _canonical(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def _state_from_json(text: str) -> TaskState:
    return TaskState.from_data(json.loads(text))


def _split_from_json(text: str) -> Split:
    return Split.from_data(json.loads(text))


def task_states(value: Any) -> list[TaskState]:
    """The task states in an engine value of a step: one state, a split, or a list of them."""
    if isinstance(value, TaskState):
        return [value]
    if isinstance(value, Split):
        return [value.state]
    if isinstance(value, list | tuple):
        out: list[TaskState] = []
        for v in value:
            out.extend(task_states(v))
        return out
    raise TypeError(f"not a task state: {type(value).__name__}")


# -- past runs: a step's stored value -> its tasks (see nbflow.runs) -------------------------------
def decode_tasks(store: Store, step: str, manifest: Manifest, run: RunRecord) -> list[TaskRecord]:
    from .runs import DataView, TaskRecord

    value = store.load(manifest, step) if step in manifest.outputs else None
    if value is None:
        return []
    states = task_states(value)
    record = run[step]
    tasks = []
    many = not isinstance(value, TaskState | Split)
    for i, state in enumerate(states):
        loaders = {
            name: _loader(store, ref, name, origin) for name, (ref, origin) in state.refs().items()
        }
        where = f"{record.pathspec}/{i}"
        tasks.append(TaskRecord(record, i if many else None, DataView(loaders, where, run.params),
                                frames=state.frames))
    return tasks


def _loader(store: Store, ref: Ref, name: str, origin: str) -> Any:
    return lambda: load_ref(store, ref, name, origin)
