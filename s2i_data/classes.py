"""Classes: the project's class table, the AudioSet ontology, and turning user names into classes.

Owns ``manifests/classes.csv`` (the ten VEGAS classes with their folder spellings and AudioSet ids)
and the shipped AudioSet ``ontology.json``. Both ship inside the package as ``s2i_data/manifests/``:
in the repository that is a symbolic link to the top-level ``manifests/`` folder (the one copy), and
a wheel carries the files themselves, so an installed s2i never looks for the checkout. Any class the ontology names is usable as well: its
alias is the slug of its display name ("Bird vocalization, bird call, bird song" →
``bird_vocalization_bird_call_bird_song``).

How a requested name resolves, first hit wins:

1. a class-table alias or display name (``dog``, ``Rail transport``, ``rail_transport``);
2. an AudioSet id or ontology display name / slug (``/m/07jdr``, ``Train``). When the ontology
   class is exactly a table class (same single id, e.g. ``Baby cry, infant cry``) the table class
   is returned, so one class never appears under two aliases;
3. a folder spelling from the table (``baby_crying``, ``trains``). It comes last so that a folder
   spelling never hides an ontology class of the same name ("Train" is the ontology class Train,
   not Rail transport).

Names are compared case-insensitively, ignoring everything but letters and digits, so ``Baby cry``,
``baby_cry`` and ``BABY-CRY`` are the same name.
"""

from __future__ import annotations

import csv
import difflib
import functools
import io
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

# Package data next to this module (a wheel's copy, or the checkout's link to manifests/). A
# checkout made where git writes links as plain files (core.symlinks=false) has no usable link,
# and reads the top-level folder beside the package instead.
_PACKAGE_MANIFESTS = Path(__file__).resolve().parent / "manifests"
_CHECKOUT_MANIFESTS = Path(__file__).resolve().parent.parent / "manifests"
MANIFESTS_DIR = (_CHECKOUT_MANIFESTS if not _PACKAGE_MANIFESTS.is_dir() and _CHECKOUT_MANIFESTS.is_dir()
                 else _PACKAGE_MANIFESTS)
CLASS_TABLE = "classes.csv"
ONTOLOGY = "audioset/ontology.json"

_NON_ALNUM = re.compile(r"[\W_]+")
_SLUG_SEP = re.compile(r"[^0-9a-z]+")


@dataclass(frozen=True)
class ClassInfo:
    alias: str  # short key-safe name used in manifests and shards
    display_name: str
    folder_names: tuple[str, ...]  # spellings a VEGAS-style class folder may use
    audioset_ids: tuple[str, ...]  # ontology ids; descendants match too


def normalize(name: str) -> str:
    """Comparison form of a name: case-folded, letters and digits only."""
    return _NON_ALNUM.sub("", name.casefold())


def slugify(name: str) -> str:
    """Alias form of a display name: lower case ASCII words joined by '_'."""
    return _SLUG_SEP.sub("_", name.lower()).strip("_")


def manifest_path(relative: str) -> Path:
    """A file under the package's ``manifests/`` folder, with a clear error when it is absent."""
    path = MANIFESTS_DIR / relative
    try:
        found = path.is_file()
    except OSError as e:  # a folder on the way that this user may not enter
        raise _unreadable(path, e) from None
    if not found:
        raise FileNotFoundError(
            f"s2i data file {path} is missing: s2i reads its class table and the AudioSet ontology "
            "from s2i_data/manifests/, package data that a wheel carries and that a checkout links "
            "to the top-level manifests/ folder; reinstall s2i (`pip install .`, or `pip install -e .` "
            "from a checkout)"
        )
    return path


class PackageDataError(OSError):
    """A file of s2i's own data (class table, ontology) that exists but cannot be read. Its
    message says so: the build reports any other OSError as one of its output."""


def _unreadable(path: Path, e: OSError) -> PackageDataError:
    return PackageDataError(f"cannot read {path}: {e.strerror or e} (s2i's own package data: the user "
                            "running s2i must be able to read its installation)")


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as e:
        raise _unreadable(path, e) from None


def read_manifest(relative: str) -> str:
    """The text of a file under the package's ``manifests/`` folder (`manifest_path`); a file
    that cannot be read raises `PackageDataError` naming it."""
    return _read(manifest_path(relative))


class Ontology:
    """The AudioSet ontology: names and the child hierarchy."""

    def __init__(self, entries: Iterable[dict]):
        self._names: dict[str, str] = {}
        self._children: dict[str, tuple[str, ...]] = {}
        for entry in entries:
            self._names[entry["id"]] = entry["name"]
            self._children[entry["id"]] = tuple(entry.get("child_ids", ()))
        self._by_norm = {normalize(name): mid for mid, name in self._names.items()}
        self._descendants: dict[str, frozenset[str]] = {}

    @classmethod
    def load(cls, path: Path) -> Ontology:
        return cls(json.loads(_read(path)))

    def __contains__(self, mid: str) -> bool:
        return mid in self._names

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(self._names)

    def name(self, mid: str) -> str:
        self._check(mid)
        return self._names[mid]

    def find(self, name: str) -> str | None:
        """Id of the class named ``name`` (display name or slug, any case or punctuation)."""
        return self._by_norm.get(normalize(name))

    def descendants(self, mid: str) -> frozenset[str]:
        """``mid`` and every class below it."""
        if mid not in self._descendants:
            self._descendants[mid] = self._walk(mid)
        return self._descendants[mid]

    def _walk(self, mid: str) -> frozenset[str]:
        self._check(mid)
        seen = {mid}
        stack = [mid]
        while stack:
            for child in self._children.get(stack.pop(), ()):
                if child not in seen:  # guards against a cycle in a hand-edited ontology
                    seen.add(child)
                    stack.append(child)
        return frozenset(seen)

    def _check(self, mid: str) -> None:
        if mid not in self._names:
            raise ValueError(f"unknown AudioSet id {mid!r}")


@functools.lru_cache(maxsize=1)
def ontology() -> Ontology:
    """The shipped AudioSet ontology, loaded once."""
    return Ontology.load(manifest_path(ONTOLOGY))


def _split(cell: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in cell.split(";") if part.strip())


def _unique(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values))


@functools.lru_cache(maxsize=1)
def class_table_rows() -> tuple[dict[str, str], ...]:
    """The rows of ``manifests/classes.csv`` as read, every column (read once per process)."""
    return tuple(csv.DictReader(io.StringIO(read_manifest(CLASS_TABLE), newline="")))


@functools.lru_cache(maxsize=1)
def class_table() -> tuple[ClassInfo, ...]:
    """The project's class table (``manifests/classes.csv``), in file order."""
    table = []
    for row in class_table_rows():
        alias, display = row["alias"].strip(), row["display_name"].strip()
        folders = _unique((*_split(row["vegas_folders"]), display, alias))
        table.append(ClassInfo(alias, display, folders, _split(row["audioset_ids"])))
    return tuple(table)


def _ontology_class(mid: str) -> ClassInfo:
    """The table class that is exactly ``mid``, else a class made from the ontology entry."""
    for info in class_table():
        if info.audioset_ids == (mid,):
            return info
    name = ontology().name(mid)
    alias = slugify(name)
    if any(info.alias == alias for info in class_table()):
        # e.g. ontology "Water" vs the table's "water" (Water flowing): keep aliases unique
        alias = f"{alias}_{slugify(mid.rsplit('/', 1)[-1])}"
    return ClassInfo(alias, name, _unique((name, slugify(name))), (mid,))


def _resolve_one(name: str) -> ClassInfo | None:
    key = normalize(name)
    if not key:
        return None
    table = class_table()
    for info in table:
        if key in (normalize(info.alias), normalize(info.display_name)):
            return info
    onto = ontology()
    mid = name.strip() if name.strip() in onto else onto.find(name)
    if mid is not None:
        return _ontology_class(mid)
    for info in table:
        if any(key == normalize(folder) for folder in info.folder_names):
            return info
    return None


def _suggestions(name: str) -> list[str]:
    vocabulary = {normalize(info.alias): info.alias for info in class_table()}
    for mid in ontology().ids:
        vocabulary.setdefault(normalize(ontology().name(mid)), ontology().name(mid))
    close = difflib.get_close_matches(normalize(name), list(vocabulary), n=3, cutoff=0.6)
    return [vocabulary[c] for c in close]


def resolve_classes(names: Sequence[str]) -> list[ClassInfo]:
    """Classes for user-given names (aliases, display names, folder names or AudioSet ids).

    Order is kept: a class's index is its position. Unknown names and two names for the same
    class raise ``ValueError`` with a one-line message.
    """
    if isinstance(names, str):
        names = [names]
    if not names:
        raise ValueError("no classes requested")
    resolved: list[ClassInfo] = []
    first_name: dict[str, str] = {}
    for name in names:
        info = _resolve_one(name)
        if info is None:
            hint = _suggestions(name)
            more = f"; did you mean: {', '.join(repr(h) for h in hint)}?" if hint else ""
            raise ValueError(f"unknown class {name!r}{more}")
        if info.alias in first_name:
            raise ValueError(
                f"class {name!r} is requested twice (same class as {first_name[info.alias]!r})"
            )
        first_name[info.alias] = name
        resolved.append(info)
    return resolved


def match_folder(folder_name: str, classes: Sequence[ClassInfo]) -> ClassInfo | None:
    """The first class one of whose folder spellings, alias or display name equals ``folder_name``.

    Comparison ignores case, spaces, underscores, hyphens, commas and other punctuation.
    """
    key = normalize(folder_name)
    if not key:
        return None
    for info in classes:
        spellings = (info.alias, info.display_name, *info.folder_names)
        if any(key == normalize(s) for s in spellings):
            return info
    return None
