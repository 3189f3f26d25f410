"""The store's JSON text: orjson where it writes and reads what the json module would, the
json module everywhere else; entries written either way verify and read back alike."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nbflow.store import encode, open_store, signing
from nbflow.store.base import _manifest_path
from nbflow.store.jsontext import canonical, canonical_forms, canonical_json, exact_in_orjson, loads

KEY = "ab" * 16


class Color(enum.IntEnum):
    RED = 1


@dataclasses.dataclass
class Point:
    x: int


PLAIN = {"b": [1, 2.5, -0.0, 1e-05, 1e300, None, True], "a": {"z": "é\u2028", "y": (1, 2)},
         "n": 2**63, "m": -(2**63), "s": "tab\t\"quote\""}


def test_a_plain_document_reads_back_as_the_json_module_reads_its_own_text() -> None:
    text = canonical(PLAIN)
    assert text != canonical_json(PLAIN)  # orjson's: UTF-8, its own float spelling
    assert loads(text) == json.loads(canonical_json(PLAIN)) == json.loads(text)
    assert canonical(loads(text)) == text  # parse and encode again: the same bytes


@pytest.mark.parametrize("value", [
    np.float64(1.5), Color.RED, Point(1), datetime.datetime(2026, 1, 2, 3, 4, 5), {1: "int key"},
    2**64, -(2**63) - 1, "\ud800", type("S", (str,), {})("sub"),
], ids=["numpy-float", "int-enum", "dataclass", "datetime", "int-key", "big-int", "small-int",
        "surrogate", "str-subclass"])
def test_what_orjson_would_write_differently_is_written_by_the_json_module(value: Any) -> None:
    doc = {"value": value, "other": [1, 2]}
    assert canonical(doc) == canonical_json(doc)
    assert loads(canonical(doc)) == json.loads(canonical_json(doc))


@pytest.mark.parametrize("text", [
    b'{"n":123456789012345678901234567890}', b'{"n":-9223372036854775809}', b'[NaN,Infinity]',
    b'"\\ud800"', b'{"a":1,"a":2}',
], ids=["big-int", "below-int64", "nan", "surrogate", "repeated-key"])
def test_reading_gives_what_the_json_module_gives(text: bytes) -> None:
    got, want = loads(text), json.loads(text)
    if isinstance(want, list):
        assert all(math.isnan(a) and math.isnan(b) or a == b for a, b in zip(got, want, strict=True))
    else:
        assert got == want and type(got) is type(want)


def test_a_nan_is_null_in_orjson_text_and_both_forms_are_offered() -> None:
    doc = {"x": math.nan}
    assert canonical(doc) == b'{"x":null}' and canonical_json(doc) == b'{"x":NaN}'
    assert list(canonical_forms(doc)) == [b'{"x":null}', b'{"x":NaN}']
    assert list(canonical_forms({"x": 1})) == [b'{"x":1}']


def test_entries_written_by_either_encoder_verify_and_load(tmp_path: Path) -> None:
    """A manifest whose meta only the json module can write (a date) and one orjson writes;
    both also verify once a tool has reformatted them."""
    store = open_store(tmp_path / "s")
    other = "cd" * 16
    store.put(KEY, {"v": encode([1, 2])}, {"step": "s", "flow": "f", "when": datetime.date(2026, 1, 2)})
    store.put(other, {"v": encode("é")}, {"step": "s", "flow": "f", "duration": 1e-05, "note": "é"})
    raw = (tmp_path / "s" / _manifest_path(KEY)).read_bytes()
    assert b'"when":"2026-01-02"' in raw and b"\\u" not in raw
    assert "é".encode() in (tmp_path / "s" / _manifest_path(other)).read_bytes()
    for key, value in ((KEY, [1, 2]), (other, "é")):
        path = tmp_path / "s" / _manifest_path(key)
        fresh = open_store(tmp_path / "s")
        assert fresh.load_outputs(fresh.get(key)) == {"v": value}
        path.write_text(json.dumps(json.loads(path.read_bytes()), indent=1))
        fresh = open_store(tmp_path / "s")
        assert fresh.load_outputs(fresh.get(key)) == {"v": value}
    doc = json.loads((tmp_path / "s" / _manifest_path(other)).read_bytes())
    assert doc["manifest"]["duration"] == 1e-05
    assert signing.verify(canonical(doc["manifest"]), doc["sig"], signing.load_key())


def test_only_long_integers_send_a_text_to_the_json_module() -> None:
    """A small float orjson wrote digit by digit is read by orjson; a long integer is not."""
    small = canonical({"duration": 0.00015510999946855009, "created": 1795507992.2262144})
    assert b"0.00015510999946855009" in small and exact_in_orjson(small)
    assert loads(small) == {"duration": 0.00015510999946855009, "created": 1795507992.2262144}
    for text in (b'{"n":1234567890123456789}', b'[-12345678901234567890]', b'[1,99999999999999999999]',
                 b'12345678901234567890'):
        assert not exact_in_orjson(text) and loads(text) == json.loads(text)
    floats = b'[1.2345678901234567890123, 1e-05, 123456789012345678, 1234567890123456789.5, 1234567890123456789e3]'
    assert exact_in_orjson(floats) and loads(floats) == json.loads(floats)
