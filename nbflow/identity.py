"""Task identity: read back the record of exactly what produced a stored output.

Every cache entry carries a signed record (see ``describe_record`` in :mod:`nbflow.executor`):
flow, step, key, code digest, significant parameters, input digests, external fingerprints,
package versions, output digests, Python and nbflow versions. ``flow.describe(step)`` returns it
as JSON-serializable data; :func:`load_record` reads it back from any of the places a user has it:

* ``load_record(flow, "train")`` — the record of the step's current output (``flow.describe``);
* ``load_record("3fa9…", store=...)`` — by cache key;
* ``load_record("demo", "train", store=...)`` — the newest entry of step ``train`` of flow ``demo``;
* ``load_record("train.json", store=...)`` — a file written from ``describe()``; with a store, the
  file is checked against the store's signed record (a file someone edited is refused).

Must never import IPython or widget code.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import NbflowError
from .store import Store, open_store

if TYPE_CHECKING:
    from .flow import Flow

_KEY = re.compile(r"^[0-9a-f]{16,64}$")
_REQUIRED = ("key", "step", "code_digest", "inputs")


class RecordError(NbflowError):
    """A record cannot be found, read, or verified."""


def load_record(
    source: Flow | str | os.PathLike[str],
    step: str | None = None,
    *,
    store: Store | str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """The record of what produced an output (see the module docstring for the four forms)."""
    from .flow import Flow

    if isinstance(source, Flow):
        if step is None:
            raise RecordError("load_record(flow, step): name the step whose record you want")
        return source.describe(str(step))
    if isinstance(source, os.PathLike) or (
        isinstance(source, str) and step is None and (source.endswith(".json") or os.path.isfile(source))
    ):
        return _from_file(Path(source), store)
    if not isinstance(source, str):
        raise RecordError(f"load_record: cannot read a record from {type(source).__name__}")
    st = open_store(store)
    if step is None:
        if not _KEY.match(source):
            raise RecordError(
                f"load_record({source!r}): not a cache key or a file; to look a step up by name "
                f"pass it too: load_record({source!r}, 'step', store=...)"
            )
        return _by_key(st, source)
    return _latest(st, source, str(step))


def _by_key(store: Store, key: str) -> dict[str, Any]:
    manifest = store.get(key)
    if manifest is None:
        raise RecordError(f"no entry with key {key[:16]}… in {store.root}; it was never stored, "
                          "was removed, or failed verification")
    record = dict(manifest.record)
    if not record:
        raise RecordError(f"entry {key[:16]}… has no record (a foreach item's entry?)")
    return record


def _latest(store: Store, flow: str, step: str) -> dict[str, Any]:
    newest = None
    for m in store.entries():
        if m.flow == flow and m.step == step and m.record:
            if newest is None or m.created > newest.created:
                newest = m
    if newest is None:
        raise RecordError(f"store {store.root} holds no entry of step '{step}' of flow '{flow}'; "
                          "run it first (or check the flow name)")
    return dict(newest.record)


def _from_file(path: Path, store: Store | str | os.PathLike[str] | None) -> dict[str, Any]:
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise RecordError(f"no record file {path}") from None
    except (OSError, ValueError) as e:
        raise RecordError(f"{path} is not a JSON record: {e}") from None
    if not isinstance(record, Mapping) or any(k not in record for k in _REQUIRED):
        raise RecordError(f"{path} is not an nbflow record (it lacks {', '.join(_REQUIRED)}); "
                          "write one with json.dump(flow.describe(step), f)")
    record = dict(record)
    if store is not None:
        stored = _by_key(open_store(store), str(record["key"]))
        if _canonical(stored) != _canonical(record):
            raise RecordError(
                f"{path} does not match the store's signed record for key "
                f"{str(record['key'])[:16]}…; the file was edited or comes from another entry"
            )
    return record


def _canonical(record: Mapping[str, Any]) -> str:
    return json.dumps(record, sort_keys=True, default=str)


__all__ = ["RecordError", "load_record"]
