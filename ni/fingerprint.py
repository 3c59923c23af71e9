"""Content hashes of data files, remembered by (size, mtime, inode) so a second look costs a stat, not a read.

A split's identity is the sha256 of every task file it names; on a real data root that is gigabytes. The hashes
are kept in a small JSON file (one per cache directory); a file whose size, mtime or inode changed is hashed
again. Concurrent writers each replace the file whole (last one wins; a lost entry is only hashed again).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import orjson

from ni.io import atomic_open

_CHUNK = 1 << 20


def file_sha256(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


class HashCache:
    """sha256 of files, cached by their stat. `save()` writes the cache back if anything was hashed."""

    def __init__(self, store: str | os.PathLike[str] | None):
        self.store = Path(store) if store is not None else None
        self.entries: dict[str, list[int | str]] = {}
        self.changed = False
        if self.store is not None and self.store.is_file():
            try:
                loaded = orjson.loads(self.store.read_bytes())
                self.entries = loaded if isinstance(loaded, dict) else {}
            except orjson.JSONDecodeError:
                self.entries = {}  # a damaged cache is only a slower start

    def sha256(self, path: str | os.PathLike[str]) -> str:
        real = os.path.realpath(path)
        st = os.stat(real)
        stamp: list[int | str] = [st.st_size, st.st_mtime_ns, st.st_ino]
        got = self.entries.get(real)
        if got is not None and got[:3] == stamp:
            return str(got[3])
        digest = file_sha256(real)
        self.entries[real] = [*stamp, digest]
        self.changed = True
        return digest

    def save(self) -> None:
        if self.changed and self.store is not None:
            with atomic_open(self.store, "wb") as fh:
                fh.write(orjson.dumps(self.entries))
            self.changed = False
