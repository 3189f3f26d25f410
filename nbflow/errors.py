"""Exceptions and warnings users see. Every message names the user's thing and the fix."""

from __future__ import annotations


class NbflowError(Exception):
    """Base class of every error nbflow raises on purpose."""


class GraphError(NbflowError):
    """The graph of steps is not valid (a cycle, a missing input, a duplicate output)."""


class CycleError(GraphError):
    """Steps depend on each other in a loop; ``path`` is the whole cycle, first step repeated."""

    def __init__(self, path: list[str]) -> None:
        self.path = path
        super().__init__(
            "steps form a cycle: " + " -> ".join(path) + "; break it by renaming an output "
            "or removing one of these reads"
        )


class MissingInputError(GraphError):
    """A step reads a name that no step, parameter or flow input provides."""

    def __init__(self, step: str, name: str, unset: bool = False) -> None:
        self.step = step
        self.name = name
        if unset:  # a declared flow input that has no value (and no default)
            super().__init__(
                f"step '{step}' reads flow input '{name}', which has no value; pass it "
                f"(flow({name}=...), flow.run(params={{'{name}': ...}}), --{name}) or give it a default"
            )
            return
        super().__init__(
            f"step '{step}' reads '{name}', which no step defines; define it in a step, "
            f"add a flow input/parameter, or pass --in"
        )


class DuplicateOutputError(GraphError):
    """Two steps bind the same output name."""

    def __init__(self, name: str, first: str, second: str) -> None:
        self.name = name
        self.steps = (first, second)
        super().__init__(
            f"steps '{first}' and '{second}' both define '{name}'; rename one of them "
            f"or drop it from one step's outputs (--out)"
        )


class UnknownStepError(NbflowError, KeyError):
    """A step name that the flow does not have."""

    def __init__(self, name: str, known: list[str] | None = None) -> None:
        self.name = name
        hint = f"; known steps: {', '.join(sorted(known))}" if known else ""
        super().__init__(f"no step named '{name}'{hint}")

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


class StepFailed(NbflowError):
    """A step raised; ``step`` names it and ``__cause__`` is the original exception."""

    def __init__(self, step: str, error: BaseException) -> None:
        self.step = step
        self.error = error
        super().__init__(f"step '{step}' failed: {type(error).__name__}: {error}")


class NbflowWarning(UserWarning):
    """Something nbflow could not do safely (cache a value, trust an entry, fingerprint a name)."""
