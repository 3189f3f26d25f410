"""Stores: where step outputs live. ``open_store`` picks the backend from a path or URL."""

from __future__ import annotations

import os
from typing import Any

from .backend import Backend, LocalBackend
from .base import CheckReport, CorruptEntry, Manifest, Store, StoreWriteError, not_cached
from .codec import Encoded, decode, encode, value_digest

__all__ = [
    "Backend",
    "CheckReport",
    "CorruptEntry",
    "Encoded",
    "LocalBackend",
    "Manifest",
    "Store",
    "StoreWriteError",
    "decode",
    "encode",
    "not_cached",
    "open_store",
    "value_digest",
]


def open_store(location: Any = None, **options: Any) -> Store:
    """A :class:`Store` for a directory (default ``./.nbflow``), a URL, or a store itself."""
    if isinstance(location, Store):
        return location
    if location is None:
        location = os.environ.get("NBFLOW_STORE") or ".nbflow"
    location = os.fspath(location)
    if "://" in location and not location.startswith("file://"):
        from .remote import FsspecBackend  # optional dependency, loaded only for URLs

        return Store(FsspecBackend(location, **options))
    if location.startswith("file://"):
        location = location[len("file://"):]
    return Store(LocalBackend(location, fsync=bool(options.get("fsync", False))))
