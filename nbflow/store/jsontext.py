"""The store's JSON text: one canonical encoding of a document, and reading it back exactly.

Encoding a manifest and parsing it back is a large part of storing a step's result: a typical
cell's entry is a 1 KB document, and the json module's work on it was a tenth of a cache-miss
cell's instructions. orjson does both several times faster, but differs from the json module
at the edges, so a document it cannot write as the json module would goes to it instead:

* a value of a type the json module writes through ``str`` (a dataclass, a date, a subclass
  of a built-in type), a key that is not a string, an integer beyond 64 bits, a lone surrogate;
* reading: a text with an integer of 19 or more digits (orjson would turn one beyond 64 bits
  into a float) or that orjson refuses (``NaN``, written by the json module).

orjson writes a NaN or an infinity as ``null``, as JSON has neither; the json module writes
``NaN``. Either text is signed as written and read back as written, so a reader always gets
what the signature covers. The signature of a document some tool reformatted is checked over
both encodings (:func:`canonical_forms`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import orjson

_OPTIONS = (orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_SUBCLASS
            | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME)
# what json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str) makes, without
# building an encoder per document
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str)
# a text's shape: a digit is "0", what continues a float (".eE") is ".", anything else " "
_SHAPE = bytes(48 if chr(c).isdigit() and c < 128 else 46 if c in b".eE" else 32
               for c in range(256))
_LONG_RUN = b" " + b"0" * 19  # 19 digits or more, not after a point


def _not_plain(obj: Any) -> Any:
    raise TypeError(f"{type(obj).__name__} is written by the json module")


def canonical(obj: Any) -> bytes:
    """Compact text with sorted keys: orjson's where it writes what the json module would."""
    try:
        return orjson.dumps(obj, default=_not_plain, option=_OPTIONS)
    except TypeError:
        return canonical_json(obj)


def canonical_json(obj: Any) -> bytes:
    """The json module's compact text with sorted keys (``str`` of what it cannot write)."""
    return _ENCODER.encode(obj).encode()


def canonical_forms(obj: Any) -> Iterator[bytes]:
    """Each encoding a writer may have signed ``obj`` in, the likelier first."""
    first = canonical(obj)
    yield first
    second = canonical_json(obj)
    if second != first:
        yield second


def exact_in_orjson(text: bytes) -> bool:
    """Whether orjson reads every number of ``text`` as the json module does: it has no
    integer of 19 or more digits (orjson reads one beyond 64 bits as a float). A long run of
    digits after a point is a fraction, which orjson writes out in full for a small float
    (0.00015510999946855009), or before a point or an exponent, a float's."""
    shape = (b" " + text).translate(_SHAPE)  # a bytes pass, ~20x cheaper than a regex scan
    at = shape.find(_LONG_RUN)
    while at >= 0:
        end = at + len(_LONG_RUN)
        while end < len(shape) and shape[end] == 48:
            end += 1
        if end == len(shape) or shape[end] != 46:
            return False  # an integer: not followed by a point or an exponent
        at = shape.find(_LONG_RUN, end)
    return True


def loads(text: bytes) -> Any:
    """Parse JSON text as the json module would."""
    if exact_in_orjson(text):
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass
    return json.loads(text)


__all__ = ["canonical", "canonical_forms", "canonical_json", "exact_in_orjson", "loads"]
