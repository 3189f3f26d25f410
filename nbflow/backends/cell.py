"""A notebook cell as a portable step action: ``%%step NAME --remote``.

The kernel's own cell action runs in the user namespace, which cannot leave the kernel. A
:class:`RemoteCell` carries the cell's source and what it needs from the notebook (imports and
helpers, pickled by value where they were defined in the notebook), runs in a *fresh* namespace
on a worker with the step's inputs bound from the store, and returns the names the cell binds.

The notebook adapter makes a remote cell step with::

    step = step.with_(action=RemoteCell(source, step.outputs, namespace, step.name),
                      meta={**step.meta, "placement": "remote"})

``source`` must be plain Python (IPython's ``transform_cell`` applied; magics are not run).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import NbflowError


@dataclass(frozen=True)
class RemoteCell:
    """``action(inputs) -> {output: value}`` for a cell's source, in a fresh namespace."""

    source: str
    outputs: tuple[str, ...]
    namespace: Mapping[str, Any] = field(default_factory=dict)
    name: str = "cell"

    def __call__(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        ns: dict[str, Any] = {"__name__": "__main__", **self.namespace, **inputs}
        code = compile(self.source, f"<step {self.name}>", "exec")
        exec(code, ns)
        missing = [o for o in self.outputs if o not in ns]
        if missing:
            raise NbflowError(
                f"step '{self.name}' ran on a worker but did not bind {', '.join(missing)}; "
                "a remote cell's outputs must be names it assigns"
            )
        return {o: ns[o] for o in self.outputs}


__all__ = ["RemoteCell"]
