"""Matching millions of text keys (CSV rows, records, file names) without a hash table of strings.

pyarrow's own (``unique``, ``index_in``, ``dictionary_encode``) builds one that holds a copy of
every string and doubles as it grows: on two million keys about 350 MB for a moment, a third of
the download's memory budget before its first request (issue 29). Here each key becomes a 64-bit
FNV-1a hash computed with numpy a byte position at a time over all keys; hashes are sorted and
searched, and every match is checked on the strings themselves, so the answer is exact: the rare
keys whose hash is shared by another string are settled one by one in Python.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_OFFSET = np.uint64(0xCBF29CE484222325)
_PRIME = np.uint64(0x100000001B3)
_CHECK = 1 << 18  # matches checked on the strings at a time (each check copies both sides' strings)


def _text(array) -> pa.Array:
    array = array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array
    array = array.cast(pa.string())
    return pc.fill_null(array, "") if array.null_count else array  # callers pass no nulls


def hash64(array) -> np.ndarray:
    """FNV-1a of each string's UTF-8 bytes (a null as the empty string)."""
    array = _text(array)
    n = len(array)
    h = np.full(n, _OFFSET, np.uint64)
    if not n:
        return h
    offsets = np.frombuffer(array.buffers()[1], np.int32, n + 1, array.offset * 4)
    if offsets[-1] == offsets[0]:
        return h
    data = np.frombuffer(array.buffers()[2], np.uint8)
    starts, lengths = offsets[:-1], np.diff(offsets)
    shortest, longest = int(lengths.min()), int(lengths.max())
    with np.errstate(over="ignore"):
        for j in range(shortest):  # the bytes every key has: all rows at once
            np.bitwise_xor(h, data[starts + j], out=h, casting="unsafe")
            np.multiply(h, _PRIME, out=h)
        if longest > shortest:  # the rest: the longer keys, longest first, a prefix of them a byte
            rows = np.flatnonzero(lengths > shortest)
            rows = rows[np.argsort(-lengths[rows], kind="stable")]
            by_length, rest, tail = lengths[rows], starts[rows], h[rows]
            for j in range(shortest, longest):
                live = int(np.searchsorted(-by_length, -j, side="left"))  # rows longer than j
                tail[:live] = (tail[:live] ^ data[rest[:live] + j]) * _PRIME
            h[rows] = tail
    return h


class Lookup:
    """A set of strings hashed and sorted once, to look many arrays up in (a part read in pieces)."""

    def __init__(self, value_set) -> None:
        self.values = _text(value_set)
        self.hashes = hash64(self.values)
        self.order = np.argsort(self.hashes, kind="stable")  # equal hashes: lowest index first
        self.sorted = self.hashes[self.order]

    def index_in(self, array) -> np.ndarray:
        """Each string's index among the values (its first occurrence), -1 where it is not there."""
        array = _text(array)
        out = np.full(len(array), -1, np.int64)
        if not len(array) or not len(self.values):
            return out
        ha = hash64(array)
        pos = np.minimum(np.searchsorted(self.sorted, ha), len(self.sorted) - 1)
        candidate = np.flatnonzero(self.sorted[pos] == ha)
        if not len(candidate):
            return out
        at = self.order[pos[candidate]]
        same = np.concatenate([_equal(array, candidate[i:i + _CHECK], self.values, at[i:i + _CHECK])
                               for i in range(0, len(candidate), _CHECK)])
        out[candidate[same]] = at[same]
        clash = candidate[~same]  # a hash shared by another string: look among all of that hash
        if len(clash):
            wanted = set(ha[clash].tolist())
            rows = np.flatnonzero(np.isin(self.hashes, np.fromiter(wanted, np.uint64, len(wanted))))
            first: dict[str, int] = {}
            for i, v in zip(rows.tolist(), self.values.take(pa.array(rows)).to_pylist()):
                first.setdefault(v, i)
            for i, v in zip(clash.tolist(), array.take(pa.array(clash)).to_pylist()):
                out[i] = first.get(v, -1)
        return out


def index_in(array, value_set) -> np.ndarray:
    """Each string's index in ``value_set`` (its first occurrence), -1 where it is not there."""
    return Lookup(value_set).index_in(array)


def _equal(array, rows: np.ndarray, value_set, at: np.ndarray) -> np.ndarray:
    return pc.equal(array.take(pa.array(rows)), value_set.take(pa.array(at))).to_numpy(zero_copy_only=False)


def _first_index(array) -> np.ndarray | None:
    """Each row's index of the first row with its string; None when no string occurs twice."""
    array = _text(array)
    n = len(array)
    h = hash64(array)
    order = np.argsort(h, kind="stable")
    sorted_h = h[order]
    repeated = np.flatnonzero(sorted_h[1:] == sorted_h[:-1])
    if not len(repeated):
        return None
    rows = np.unique(order[np.concatenate([repeated, repeated + 1])])  # rows whose hash occurs twice
    first_of: dict[str, int] = {}
    out = np.arange(n)
    for i, s in zip(rows.tolist(), array.take(pa.array(rows)).to_pylist()):  # ascending: first wins
        out[i] = first_of.setdefault(s, i)
    return out


def first_of_each(array) -> np.ndarray | None:
    """Rows holding the first occurrence of their string; None when no string occurs twice."""
    first = _first_index(array)
    return None if first is None else first == np.arange(len(first))


def last_of_each(array) -> np.ndarray | None:
    """Rows holding the last occurrence of their string; None when no string occurs twice."""
    array = _text(array)
    n = len(array)
    if _first_index(array) is None:
        return None
    first = _first_index(array.take(pa.array(np.arange(n - 1, -1, -1))))  # the last is the first backwards
    return (first == np.arange(n))[::-1]
