"""An encoded split as a columnar table of numpy arrays, stored as .npy files and memory-mapped back.

Token ids are int32, flat, with int64 offsets per row; every rank that maps an entry shares its pages (the page
cache), so a rank's private memory holds only what it copies out for a batch. Columns:

    input_tokens, input_offsets        source ids of instance i: input_tokens[input_offsets[i]:input_offsets[i+1]]
    label_tokens, label_offsets        target ids of reference r (same layout)
    ref_offsets                        references of instance i: r in ref_offsets[i]:ref_offsets[i+1]
    id_bytes, id_offsets               instance ids, utf-8
    task_index                         index into meta["tasks"] per instance
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, overload

import numpy as np

COLUMNS = ("input_tokens", "input_offsets", "label_tokens", "label_offsets", "ref_offsets", "id_bytes",
           "id_offsets", "task_index")


def _position(i: int, n: int) -> int:
    """A sequence index as Python reads it (negative from the end), checked against the length n."""
    j = i + n if i < 0 else i
    if not 0 <= j < n:
        raise IndexError(i)
    return j


class Rows(Sequence[list[int]]):
    """Rows of token ids (lists on access, as collation wants them)."""

    def __init__(self, flat: np.ndarray, offsets: np.ndarray):
        self.flat, self.offsets = flat, offsets

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @overload
    def __getitem__(self, i: int) -> list[int]: ...
    @overload
    def __getitem__(self, i: slice) -> list[list[int]]: ...
    def __getitem__(self, i: int | slice) -> list[int] | list[list[int]]:
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        i = _position(i, len(self))
        return self.flat[self.offsets[i] : self.offsets[i + 1]].tolist()

    def lengths(self) -> list[int]:
        return np.diff(self.offsets).tolist()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and len(other) == len(self) and all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]


class References(Sequence[list[list[int]]]):
    """Per instance, the token ids of each of its references."""

    def __init__(self, refs: Rows, ref_offsets: np.ndarray):
        self.refs, self.ref_offsets = refs, ref_offsets

    def __len__(self) -> int:
        return len(self.ref_offsets) - 1

    def one(self, i: int, k: int) -> list[int]:
        return self.refs[int(self.ref_offsets[i]) + k]

    def __getitem__(self, i: int | slice) -> Any:
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        i = _position(i, len(self))
        return [self.refs[r] for r in range(int(self.ref_offsets[i]), int(self.ref_offsets[i + 1]))]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and len(other) == len(self) and all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]


class Strings(Sequence[str]):
    def __init__(self, blob: np.ndarray, offsets: np.ndarray):
        self.blob, self.offsets = blob, offsets

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> str:  # type: ignore[override]
        i = _position(i, len(self))
        return bytes(self.blob[self.offsets[i] : self.offsets[i + 1]]).decode("utf-8")

    def __iter__(self) -> Iterator[str]:
        text = bytes(self.blob).decode("utf-8")
        if len(text) != len(self.blob):  # not ASCII: offsets count bytes, not characters
            yield from (self[i] for i in range(len(self)))
        else:
            offs = self.offsets.tolist()
            yield from (text[a:b] for a, b in zip(offs, offs[1:], strict=False))


class Named(Sequence[str]):
    def __init__(self, names: list[str], task_index: np.ndarray):
        self.names, self.task_index = names, task_index

    def __len__(self) -> int:
        return len(self.task_index)

    def __getitem__(self, i: int) -> str:  # type: ignore[override]
        return self.names[int(self.task_index[i])]


class EncodedTable:
    """The arrays of an encoded split. Build with `TableBuilder`, store with `write`, map back with `open`."""

    def __init__(self, arrays: dict[str, np.ndarray], tasks: list[str]):
        self.arrays, self.task_names = arrays, tasks
        a = arrays
        self.input_ids = Rows(a["input_tokens"], a["input_offsets"])
        self.labels = References(Rows(a["label_tokens"], a["label_offsets"]), a["ref_offsets"])
        self.ids = Strings(a["id_bytes"], a["id_offsets"])
        self.tasks = Named(tasks, a["task_index"])

    def write(self, directory: Path) -> None:
        for name in COLUMNS:
            with open(directory / f"{name}.npy", "wb") as fh:
                np.save(fh, self.arrays[name], allow_pickle=False)
                fh.flush()
                os.fsync(fh.fileno())

    @classmethod
    def open(cls, directory: Path, tasks: list[str]) -> EncodedTable:
        return cls({name: np.load(directory / f"{name}.npy", mmap_mode="r", allow_pickle=False)
                    for name in COLUMNS}, tasks)


class TableBuilder:
    """Appends encoded instances a task at a time; Python lists live only for one task."""

    def __init__(self) -> None:
        self.parts: dict[str, list[np.ndarray]] = {name: [] for name in COLUMNS}
        self.tasks: list[str] = []
        self.ends = {"input": 0, "label": 0, "ref": 0, "id": 0}

    def add_task(self, name: str, ids: list[str], inputs: list[list[int]], labels: list[list[list[int]]]) -> None:
        k = len(self.tasks)
        self.tasks.append(name)
        refs = [r for refs in labels for r in refs]
        id_blobs = [i.encode("utf-8") for i in ids]
        self._ragged("input", inputs, "input_tokens", "input_offsets")
        self._ragged("label", refs, "label_tokens", "label_offsets")
        self._offsets("ref", [len(r) for r in labels], "ref_offsets")
        self._offsets("id", [len(b) for b in id_blobs], "id_offsets")
        self.parts["id_bytes"].append(np.frombuffer(b"".join(id_blobs), dtype=np.uint8))
        self.parts["task_index"].append(np.full(len(ids), k, dtype=np.int32))

    def _ragged(self, end: str, rows: list[list[int]], tokens: str, offsets: str) -> None:
        total = sum(len(r) for r in rows)
        self.parts[tokens].append(np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int32, count=total))
        self._offsets(end, [len(r) for r in rows], offsets)

    def _offsets(self, end: str, lengths: list[int], column: str) -> None:
        ends = np.cumsum(np.asarray(lengths, dtype=np.int64)) + self.ends[end]
        self.parts[column].append(ends)
        if len(ends):
            self.ends[end] = int(ends[-1])

    def finish(self) -> EncodedTable:
        arrays = {}
        for name, parts in self.parts.items():
            dtype = {"id_bytes": np.uint8, "task_index": np.int32}.get(name, np.int32 if name.endswith("tokens")
                                                                        else np.int64)
            joined = np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype=dtype)
            if name.endswith("offsets"):
                joined = np.concatenate([np.zeros(1, dtype=np.int64), joined])
            arrays[name] = joined
        return EncodedTable(arrays, self.tasks)


def describe(table: EncodedTable) -> dict[str, Any]:
    return {"instances": len(table.input_ids), "source_tokens": int(table.arrays["input_tokens"].size),
            "bytes": int(sum(a.nbytes for a in table.arrays.values()))}
