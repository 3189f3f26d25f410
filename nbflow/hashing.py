"""Digests: xxh3-128 over raw bytes, hex-encoded. One place so the algorithm can change once.

Why xxh3 and not md5/sha: fingerprinting must run at memory speed on large arrays (GB/s);
integrity against tampering is the HMAC's job (see :mod:`nbflow.store.signing`), not this one's.
"""

from __future__ import annotations

from collections.abc import Iterable

import xxhash

ALGORITHM = "xxh3_128"


def digest_bytes(data: bytes | bytearray | memoryview) -> str:
    return xxhash.xxh3_128_hexdigest(data)


def digest_parts(parts: Iterable[bytes | bytearray | memoryview | str]) -> str:
    """Digest of a sequence, unambiguous: ("ab", "c") and ("a", "bc") differ.

    Strings and bytes are hashed through their ``repr`` in one call (the hot path of every cache
    key); other buffers are length-prefixed.
    """
    items = list(parts)
    if all(isinstance(p, str | bytes) for p in items):
        return xxhash.xxh3_128_hexdigest(repr(items).encode("utf-8", "surrogatepass"))
    h = xxhash.xxh3_128()
    for part in items:
        if isinstance(part, str):
            part = part.encode("utf-8", "surrogatepass")
        data = memoryview(part)
        h.update(data.nbytes.to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()
