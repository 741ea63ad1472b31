"""The VEGAS-style folder source. Files are empty placeholders: sources never open media."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from s2i_data.classes import resolve_classes
from s2i_data.sources.folders import prepare_folders

KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def touch(root: Path, *relpaths: str) -> None:
    for rel in relpaths:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()


def by_source(items, root: Path) -> dict[str, object]:
    return {Path(item.source).relative_to(root).as_posix(): item for item in items}


def test_nested_files_and_folder_spellings(tmp_path):
    touch(
        tmp_path,
        "Baby cry/a.mp4",
        "Baby cry/sub/deeper/b.MKV",
        "rail_transport/c.webm",
        "DOG/d.mov",
    )
    items = prepare_folders(tmp_path, resolve_classes(["baby", "dog", "rail"]))
    got = {rel: item.cls for rel, item in by_source(items, tmp_path).items()}
    assert got == {
        "Baby cry/a.mp4": "baby",
        "Baby cry/sub/deeper/b.MKV": "baby",
        "rail_transport/c.webm": "rail",
        "DOG/d.mov": "dog",
    }
    for item in items:
        assert os.path.isabs(item.source)
        assert (item.start_s, item.end_s, item.reason) == (0.0, None, None)


def test_order_is_deterministic_and_ids_are_stable(tmp_path):
    touch(tmp_path, "dog/z.mp4", "dog/a.mp4", "dog/m/b.mp4", "baby/x.mp4")
    classes = resolve_classes(["dog", "baby"])
    first = prepare_folders(tmp_path, classes)
    assert [Path(i.source).relative_to(tmp_path).as_posix() for i in first] == [
        "baby/x.mp4", "dog/a.mp4", "dog/m/b.mp4", "dog/z.mp4",
    ]
    assert prepare_folders(tmp_path, classes) == first
    assert len({i.video_id for i in first}) == len(first)


def test_same_stem_in_two_folders_gives_two_ids(tmp_path):
    touch(tmp_path, "dog/a/clip.mp4", "dog/b/clip.mp4")
    items = prepare_folders(tmp_path, resolve_classes(["dog"]))
    assert len({i.video_id for i in items}) == 2


def test_odd_file_names_give_key_safe_ids(tmp_path):
    names = ["chien été.mp4", "my clip (1).v2.mp4", "日本語.mp4", "a.b.c.webm", "-_-.mp4"]
    touch(tmp_path, *(f"dog/{n}" for n in names))
    items = prepare_folders(tmp_path, resolve_classes(["dog"]))
    assert len(items) == len(names)
    for item in items:
        assert KEY.match(item.video_id), item.video_id
        assert "." not in item.video_id
    assert len({i.video_id for i in items}) == len(names)


def test_extensions_case_insensitive_and_non_video_ignored(tmp_path):
    touch(
        tmp_path,
        "dog/a.MP4",
        "dog/b.3gp",
        "dog/c.ogv",
        "dog/notes.txt",
        "dog/d.mp4.part",
        "dog/noext",
        "dog/.hidden.mp4",
        "dog/.cache/e.mp4",
    )
    items = prepare_folders(tmp_path, resolve_classes(["dog"]))
    assert sorted(Path(i.source).name for i in items) == ["a.MP4", "b.3gp", "c.ogv"]


def test_custom_extensions(tmp_path):
    touch(tmp_path, "dog/a.mp4", "dog/b.xyz")
    items = prepare_folders(tmp_path, resolve_classes(["dog"]), extensions=[".XYZ"])
    assert [Path(i.source).name for i in items] == ["b.xyz"]


def test_unknown_folder_is_recorded_once(tmp_path):
    touch(tmp_path, "dog/a.mp4", "Cats and more/x.mp4", "Cats and more/y.mp4")
    items = prepare_folders(tmp_path, resolve_classes(["dog"]))
    unknown = [i for i in items if i.reason]
    assert len(unknown) == 1
    (item,) = unknown
    assert item.cls == ""
    assert item.reason == "folder 'Cats and more' matches no requested class"
    assert item.source == str(tmp_path / "Cats and more")
    assert KEY.match(item.video_id)


def test_unrequested_table_class_folder_is_ignored(tmp_path):
    touch(tmp_path, "dog/a.mp4", "Snoring/s.mp4", "baby_cry/b.mp4", ".git/x.mp4")
    items = prepare_folders(tmp_path, resolve_classes(["dog"]))
    assert [(i.cls, i.reason) for i in items] == [("dog", None)]


def test_loose_video_in_root_is_recorded(tmp_path):
    touch(tmp_path, "dog/a.mp4", "stray.mp4", "README.txt")
    items = prepare_folders(tmp_path, resolve_classes(["dog"]))
    stray = [i for i in items if i.reason]
    assert len(stray) == 1 and "not inside a class folder" in stray[0].reason


def test_missing_root_is_one_line_error(tmp_path):
    with pytest.raises(ValueError) as err:
        prepare_folders(tmp_path / "nope", resolve_classes(["dog"]))
    assert "\n" not in str(err.value) and "nope" in str(err.value)


def test_root_without_requested_class_folder_is_an_error(tmp_path):
    touch(tmp_path, "Snoring/a.mp4", "misc/b.mp4")
    with pytest.raises(ValueError) as err:
        prepare_folders(tmp_path, resolve_classes(["dog", "baby"]))
    message = str(err.value)
    assert "\n" not in message and "dog, baby" in message and "'misc'" in message


def test_a_file_as_root_is_an_error(tmp_path):
    touch(tmp_path, "f.mp4")
    with pytest.raises(ValueError):
        prepare_folders(tmp_path / "f.mp4", resolve_classes(["dog"]))


def test_symlink_loop_is_not_followed(tmp_path):
    touch(tmp_path, "dog/a.mp4")
    try:
        os.symlink(tmp_path / "dog", tmp_path / "dog" / "loop")
    except OSError:
        pytest.skip("no symlinks here")
    items = prepare_folders(tmp_path, resolve_classes(["dog"]))
    assert [Path(i.source).name for i in items] == ["a.mp4"]


def test_ontology_class_folders(tmp_path):
    touch(tmp_path, "Cat/a.mp4", "bird_vocalization_bird_call_bird_song/b.mp4")
    classes = resolve_classes(["Cat", "Bird vocalization, bird call, bird song"])
    items = prepare_folders(tmp_path, classes)
    assert sorted(i.cls for i in items) == ["bird_vocalization_bird_call_bird_song", "cat"]
