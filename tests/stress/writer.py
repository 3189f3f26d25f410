"""A store writer for the fault tests: writes entry ``i`` with a value derived from ``i`` forever
(or ``count`` times), so a reader can tell a right value from a wrong one."""

from __future__ import annotations

import sys

import numpy as np

from nbflow.hashing import digest_parts
from nbflow.store import encode, open_store


def key_of(i: int) -> str:
    return digest_parts([f"entry-{i}"])


def value_of(i: int) -> dict:
    return {"i": i, "data": np.full(200_000 + (i % 7) * 10_000, i, dtype=np.int64), "text": f"v{i}" * 50}


def check_value(i: int, value: dict) -> None:
    assert value["i"] == i, value["i"]
    assert value["text"] == f"v{i}" * 50
    data = value["data"]
    assert data.shape == (200_000 + (i % 7) * 10_000,) and int(data.min()) == int(data.max()) == i


def main() -> None:
    root, start, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    store = open_store(root)
    i = start
    while count < 0 or i < start + count:
        store.put(key_of(i % 40), {"v": encode(value_of(i % 40))}, {"step": "w", "flow": "stress"})
        i += 1


if __name__ == "__main__":
    main()
