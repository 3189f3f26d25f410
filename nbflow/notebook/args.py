"""Parsing what users type after ``%%step`` and ``%flow``.

Hand-written rather than argparse: argparse prints usage walls and exits; here every mistake is
one :class:`UsageError` naming the bad word and the fix, and the kernel carries on.
"""

from __future__ import annotations

import keyword
import re
import shlex
from dataclasses import dataclass

from IPython.core.error import UsageError

STEP_USAGE = """\
%%step NAME [--in a,b] [--out x,y] [--no-cache] [--ignore v] [--foreach ITEMS] [--remote]

Make this cell a step of the notebook's flow. Its outputs are the names it binds at top level;
its inputs are the names it reads that another step binds. A cell whose inputs and code are
unchanged is not run again: its outputs are bound from the cache and its output is replayed.

  NAME            the step's name (a Python identifier)
  --in a,b        names the cell reads that analysis cannot see (exec, globals()); they must be
                  bound by other steps
  --out x,y       the step's outputs, instead of every name the cell binds
  --no-cache      always run the cell; its outputs still feed later steps
  --ignore v      read v but leave it out of the cache key (e.g. verbose, n_jobs)
  --foreach ITEMS run the cell once per element of ITEMS (bound to that element inside the
                  cell), each element cached on its own; outputs become lists
  --remote        run the cell on the configured Dask cluster
  --help          this text
"""

FLOW_USAGE = """\
%flow status                      steps, status, cached?, last run time, time saved
%flow run [STEP|FlowSpecClass]    bring STEP (default: every step) up to date
%flow rerun STEP                  force STEP, then bring its descendants up to date
%flow invalidate STEP             drop STEP's cache entry; it and its descendants become stale
%flow remove STEP                 forget a step (e.g. after renaming a cell's step)
%flow show                        the live DAG (text table where widgets are missing)
%flow cache ls                    this notebook's cache entries
%flow cache clear [STEP]          delete this notebook's entries (or one step's)
%flow cache gc --max-size 2G      evict least recently used entries until the store fits
%flow config [key=value ...]      mode=manual|auto  store=PATH  lazy=SIZE  (no args: show)
%flow export PATH                 write this notebook as a flow script
"""

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def is_identifier(name: str) -> bool:
    return name.isidentifier() and not keyword.iskeyword(name)


def parse_size(text: str, what: str = "size") -> int:
    """``2G`` / ``512M`` / ``1.5GiB`` / ``1000`` -> bytes (binary units)."""
    m = _SIZE.match(text)
    if not m:
        raise UsageError(f"{what} {text!r} is not a size; write e.g. 2G, 512M or 100000")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


@dataclass(frozen=True)
class StepArgs:
    """The options of one ``%%step`` line."""

    name: str
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] | None = None
    cache: bool = True
    ignore: tuple[str, ...] = ()
    foreach: str | None = None
    remote: bool = False
    help: bool = False


def _names(value: str, option: str, step: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in value.split(",") if n.strip())
    if not names:
        raise UsageError(f"%%step {step}: {option} needs names, e.g. {option} a,b")
    for n in names:
        if not is_identifier(n):
            raise UsageError(
                f"%%step {step}: {option} {n!r} is not a Python identifier; "
                "use letters, digits and _ separated by commas"
            )
    return names


_VALUE_OPTIONS = ("--in", "--out", "--ignore", "--foreach")
_FLAG_OPTIONS = ("--no-cache", "--remote", "--help", "-h")


def split_words(line: str, what: str) -> list[str]:
    if not any(c in line for c in "'\"\\#"):
        return line.split()  # what shlex would give, without its tokenizer
    try:
        return shlex.split(line)
    except ValueError as e:
        raise UsageError(f"{what}: cannot read {line.strip()!r}: {e}") from None


def suggest_name(name: str) -> str:
    """An identifier close to ``name`` for the error message."""
    fixed = re.sub(r"[^0-9A-Za-z_]", "_", name).lstrip("0123456789") or "step"
    return fixed + "_step" if keyword.iskeyword(fixed) else fixed


def parse_step_line(line: str) -> StepArgs:
    """Parse ``NAME [options]``; raises UsageError with the fix on anything wrong."""
    words = split_words(line, "%%step")
    if any(w in ("--help", "-h") for w in words):
        return StepArgs(name=words[0] if words and is_identifier(words[0]) else "", help=True)
    if not words or words[0].startswith("-"):
        raise UsageError("%%step needs a step name first, e.g. '%%step load' (see %%step --help)")
    name = words[0]
    if not is_identifier(name):
        raise UsageError(
            f"step name {name!r} is not a Python identifier; use letters, digits and _ "
            f"(e.g. %%step {suggest_name(name)})"
        )
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] | None = None
    ignore: list[str] = []
    foreach: str | None = None
    cache, remote = True, False
    i = 1
    while i < len(words):
        word = words[i]
        option, eq, value = word.partition("=")
        if option in _VALUE_OPTIONS:
            if not eq:
                if i + 1 >= len(words) or words[i + 1].startswith("--"):
                    raise UsageError(f"%%step {name}: {option} needs a value, e.g. {option} x")
                i += 1
                value = words[i]
            if option == "--in":
                inputs = tuple(dict.fromkeys([*inputs, *_names(value, option, name)]))
            elif option == "--out":
                outputs = tuple(dict.fromkeys([*(outputs or ()), *_names(value, option, name)]))
            elif option == "--ignore":
                ignore.extend(n for n in _names(value, option, name) if n not in ignore)
            else:
                (foreach,) = _names(value, option, name)[:1]
        elif word == "--no-cache":
            cache = False
        elif word == "--remote":
            remote = True
        elif word.startswith("-"):
            known = ", ".join([*_VALUE_OPTIONS, "--no-cache", "--remote", "--help"])
            raise UsageError(f"%%step {name}: unknown option {word!r}; options are {known}")
        else:
            raise UsageError(
                f"%%step {name}: unexpected {word!r}; a step has one name "
                "(separate several names with commas after --in/--out)"
            )
        i += 1
    return StepArgs(name, inputs, outputs, cache, tuple(ignore), foreach, remote)


def parse_assignments(words: list[str], what: str) -> dict[str, str]:
    """``key=value`` words -> dict; anything else is a UsageError."""
    out: dict[str, str] = {}
    for w in words:
        key, eq, value = w.partition("=")
        if not eq or not key:
            raise UsageError(f"{what}: expected key=value, got {w!r}")
        out[key.strip()] = value.strip()
    return out


__all__ = [
    "FLOW_USAGE",
    "STEP_USAGE",
    "StepArgs",
    "is_identifier",
    "parse_assignments",
    "parse_size",
    "parse_step_line",
    "split_words",
]
