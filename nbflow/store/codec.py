"""Encoding values to bytes and back: pickle protocol 5 with large buffers out of band.

A value becomes one pickle stream plus zero or more raw buffers (NumPy/pandas data), each hashed
once, while it is encoded. The value's **content digest** covers the stream and every buffer, so
it folds in dtype and shape (they live in the stream) and changes with any byte of the data.
Decoding from read-only buffers yields read-only arrays: a user who mutates a loaded value gets an
error instead of silently corrupting what the next reader sees.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from typing import Any

import cloudpickle

from ..hashing import digest_bytes, digest_parts

#: buffers smaller than this stay inside the pickle stream (one file per tiny array is waste)
OUT_OF_BAND_MIN = 64 * 1024


@dataclass(frozen=True)
class Encoded:
    """A value as bytes: the pickle stream, its out-of-band buffers, and their digests."""

    stream: bytes
    buffers: tuple[memoryview, ...]
    stream_digest: str
    buffer_digests: tuple[str, ...]
    digest: str  # content digest of the whole value

    @property
    def size(self) -> int:
        return len(self.stream) + sum(b.nbytes for b in self.buffers)

    def decode(self) -> Any:
        """A fresh copy of the value (large buffers shared read-only)."""
        return decode(self.stream, [b.toreadonly() for b in self.buffers])


def encode(value: Any) -> Encoded:
    """Pickle ``value``; raises whatever pickling raises (the caller decides what to do)."""
    buffers: list[memoryview] = []

    def keep(buf: pickle.PickleBuffer) -> bool:
        view = buf.raw()
        if view.nbytes < OUT_OF_BAND_MIN:
            return True  # in band
        buffers.append(view)
        return False

    if type(value) in SCALARS:  # the same bytes either way; the C pickler is quicker to start
        stream = pickle.dumps(value, protocol=5)
    else:
        stream = cloudpickle.dumps(value, protocol=5, buffer_callback=keep)
    stream_digest = digest_bytes(stream)
    buffer_digests = tuple(digest_bytes(b) for b in buffers)
    digest = (
        stream_digest
        if not buffers
        else digest_parts([stream_digest, *buffer_digests])
    )
    return Encoded(stream, tuple(buffers), stream_digest, buffer_digests, digest)


def decode(stream: bytes | memoryview, buffers: list[memoryview] | None = None) -> Any:
    return pickle.loads(stream, buffers=buffers or [])


# immutable scalar types: nothing can change such a value in place
SCALARS = frozenset({int, float, complex, str, bytes, bool, type(None)})
_scalar_digests: dict[tuple[type, Any], str] = {}


def value_digest(value: Any) -> str:
    """The content digest of ``value`` (as :func:`encode` would compute it).

    Small immutable scalars are memoized: parameters are digested on every run's key.
    """
    t = type(value)
    if t in SCALARS and (t not in (str, bytes) or len(value) <= 256):
        memo = _scalar_digests.get((t, value))
        if memo is None:
            memo = encode(value).digest
            if len(_scalar_digests) < 4096:
                _scalar_digests[(t, value)] = memo
        return memo
    return encode(value).digest
