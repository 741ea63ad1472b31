"""The AudioSet source: segment CSVs, ontology matching, file naming schemes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from s2i_data.classes import resolve_classes
from s2i_data.sources.audioset import FileIndex, prepare_audioset, video_id

HEADER = (
    "# Segments csv created Sun Mar  5 10:54:31 2017\n"
    "# num_ytids=5, num_segs=5, num_unique_labels=527, num_positive_labels=9\n"
    "# YTID, start_seconds, end_seconds, positive_labels\n"
)
DOG, BARK, BABY, CRYING, TRAIN, FIREWORKS, SPEECH = (
    "/m/0bt9lr", "/m/05tny_", "/t/dd00002", "/m/0463cq4", "/m/07jdr", "/m/0g6b5", "/m/09x0r",
)


Row = tuple[str, float, float, list[str]]


def write_csv(path: Path, rows: list[Row], header: str = HEADER) -> Path:
    lines = [f'{y}, {s:.3f}, {e:.3f}, "{",".join(labels)}"\n' for y, s, e, labels in rows]
    path.write_text(header + "".join(lines), encoding="utf-8")
    return path


def touch(root: Path, *relpaths: str) -> None:
    for rel in relpaths:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()


@pytest.fixture
def videos(tmp_path) -> Path:
    root = tmp_path / "videos"
    root.mkdir()
    return root


def by_id(items):
    return {item.video_id: item for item in items}


def test_real_header_format_and_descendant_matching(tmp_path, videos):
    csv = write_csv(
        tmp_path / "balanced_train_segments.csv",
        [
            ("-0RWZT-miFs", 420.0, 430.0, [SPEECH, BARK]),  # Bark is below Dog
            ("--PJHxphWEs", 30.0, 40.0, [SPEECH]),  # no requested class: not in the corpus
            ("AbC_dEf-123", 0.0, 10.0, [TRAIN]),  # Train is below Rail transport
            ("zzzzzzzzzzz", 10.0, 20.0, [CRYING]),  # "Crying, sobbing" is not baby cry
        ],
    )
    touch(videos, "-0RWZT-miFs.mp4", "AbC_dEf-123.mkv", "zzzzzzzzzzz.mp4")
    items = prepare_audioset([csv], videos, resolve_classes(["dog", "rail", "baby"]))
    assert [(i.video_id, i.cls, i.reason) for i in items] == [
        ("-0RWZT-miFs_420000", "dog", None),
        ("AbC_dEf-123_0", "rail", None),
    ]
    dog = items[0]
    assert dog.source == str(videos / "-0RWZT-miFs.mp4")
    assert (dog.start_s, dog.end_s) == (420.0, 430.0)


def test_exact_label_match_not_substring(tmp_path, videos):
    # /m/0bt9lrX contains Dog's id as a prefix but is another label.
    csv = write_csv(tmp_path / "s.csv", [("aaaaaaaaaaa", 0.0, 10.0, ["/m/0bt9lrX"])])
    assert prepare_audioset([csv], videos, resolve_classes(["dog"])) == []


def test_rows_matching_several_classes_are_recorded_as_skipped(tmp_path, videos):
    csv = write_csv(
        tmp_path / "s.csv",
        [
            ("aaaaaaaaaaa", 0.0, 10.0, [DOG, FIREWORKS]),
            ("bbbbbbbbbbb", 0.0, 10.0, [BARK]),
        ],
    )
    touch(videos, "aaaaaaaaaaa.mp4", "bbbbbbbbbbb.mp4")
    items = by_id(prepare_audioset([csv], videos, resolve_classes(["fireworks", "dog"])))
    several = items["aaaaaaaaaaa_0"]
    assert several.cls == ""
    assert several.reason == "labels match several requested classes: fireworks, dog"
    assert several.source == str(videos / "aaaaaaaaaaa.mp4")
    assert items["bbbbbbbbbbb_0"].reason is None
    # A class and one of its own descendants both requested: Bark rows are ambiguous too.
    items = by_id(prepare_audioset([csv], videos, resolve_classes(["dog", "Bark"])))
    assert items["bbbbbbbbbbb_0"].reason == "labels match several requested classes: dog, bark"


def test_two_ids_of_one_class_are_not_several_classes(tmp_path, videos):
    csv = write_csv(tmp_path / "s.csv", [("aaaaaaaaaaa", 0.0, 10.0, ["/m/0j6m2", "/m/0j2kx"])])
    touch(videos, "aaaaaaaaaaa.mp4")
    (item,) = prepare_audioset([csv], videos, resolve_classes(["water"]))
    assert (item.cls, item.reason) == ("water", None)


@pytest.mark.parametrize(
    "name",
    ["a_b-c_d-e_f_30_40.mp4", "a_b-c_d-e_f_30.000_40.000.mkv", "a_b-c_d-e_f_30000_40000.webm"],
)
def test_cut_clip_names_seconds_and_milliseconds(tmp_path, videos, name):
    csv = write_csv(tmp_path / "s.csv", [("a_b-c_d-e_f", 30.0, 40.0, [DOG])])
    touch(videos, f"sub/dir/{name}")
    (item,) = prepare_audioset([csv], videos, resolve_classes(["dog"]))
    assert item.reason is None
    assert item.source == str(videos / "sub" / "dir" / name)
    assert (item.start_s, item.end_s) == (0.0, 10.0)
    assert item.video_id == "a_b-c_d-e_f_30000"


def test_cut_clip_preferred_over_whole_video_and_must_name_this_segment(tmp_path, videos):
    csv = write_csv(
        tmp_path / "s.csv",
        [("aaaaaaaaaaa", 30.0, 40.0, [DOG]), ("bbbbbbbbbbb", 30.0, 40.0, [DOG])],
    )
    touch(videos, "aaaaaaaaaaa.mp4", "aaaaaaaaaaa_30_40.mp4", "bbbbbbbbbbb_50_60.mp4")
    items = by_id(prepare_audioset([csv], videos, resolve_classes(["dog"])))
    assert Path(items["aaaaaaaaaaa_30000"].source).name == "aaaaaaaaaaa_30_40.mp4"
    assert "no video file for YTID bbbbbbbbbbb" in items["bbbbbbbbbbb_30000"].reason


def test_ytid_that_looks_like_a_clip_name(tmp_path, videos):
    # An 11-character YTID ending in _<digits>_<digits>: only the CSV's YTID can tell.
    csv = write_csv(tmp_path / "s.csv", [("abcde_12_34", 30.0, 40.0, [DOG])])
    touch(videos, "abcde_12_34.mp4")
    (item,) = prepare_audioset([csv], videos, resolve_classes(["dog"]))
    assert item.reason is None and (item.start_s, item.end_s) == (30.0, 40.0)


def test_whole_video_versus_clips_flag(tmp_path, videos):
    csv = write_csv(tmp_path / "s.csv", [("aaaaaaaaaaa", 30.0, 40.0, [DOG])])
    touch(videos, "aaaaaaaaaaa.mp4")
    classes = resolve_classes(["dog"])
    (whole,) = prepare_audioset([csv], videos, classes)
    assert (whole.start_s, whole.end_s) == (30.0, 40.0)
    (cut,) = prepare_audioset([csv], videos, classes, clips=True)
    assert (cut.start_s, cut.end_s) == (0.0, 10.0)


def test_missing_file_is_recorded(tmp_path, videos):
    csv = write_csv(tmp_path / "s.csv", [("aaaaaaaaaaa", 30.0, 40.0, [DOG])])
    touch(videos, "other.mp4", "aaaaaaaaaaa.txt", ".aaaaaaaaaaa.mp4")
    (item,) = prepare_audioset([csv], videos, resolve_classes(["dog"]))
    assert item.cls == "dog"
    assert item.source == str(videos / "aaaaaaaaaaa")
    assert item.reason == f"no video file for YTID aaaaaaaaaaa under {videos}"


def test_empty_window_is_recorded(tmp_path, videos):
    csv = write_csv(tmp_path / "s.csv", [("aaaaaaaaaaa", 40.0, 40.0, [DOG])])
    touch(videos, "aaaaaaaaaaa.mp4")
    (item,) = prepare_audioset([csv], videos, resolve_classes(["dog"]))
    assert "not after its start" in item.reason


def test_duplicate_rows_across_csvs_kept_once(tmp_path, videos):
    rows = [("aaaaaaaaaaa", 30.0, 40.0, [DOG]), ("bbbbbbbbbbb", 0.0, 10.0, [DOG])]
    first = write_csv(tmp_path / "balanced.csv", rows)
    second = write_csv(
        tmp_path / "unbalanced.csv", [*rows, ("aaaaaaaaaaa", 50.0, 60.0, [DOG])]
    )
    items = prepare_audioset([first, second], videos, resolve_classes(["dog"]))
    ids = [i.video_id for i in items]
    assert ids == ["aaaaaaaaaaa_30000", "aaaaaaaaaaa_50000", "bbbbbbbbbbb_0"]


def test_items_sorted_by_video_id_and_key_safe(tmp_path, videos):
    ytids = ["zzzzzzzzzzz", "-aaaaaaaaaa", "_bbbbbbbbbb", "Mmmmmmmmmmm"]
    rows = [(y, 0.0, 10.0, [DOG]) for y in ytids]
    csv = write_csv(tmp_path / "s.csv", rows)
    ids = [i.video_id for i in prepare_audioset([csv], videos, resolve_classes(["dog"]))]
    assert ids == sorted(ids)
    assert all(re.fullmatch(r"[A-Za-z0-9_-]+", i) for i in ids)
    assert video_id("abc", 30.0) == "abc_30000"
    assert video_id("a.b/c", 1.5) == "a_b_c_1500"


def test_single_label_without_quotes_and_crlf(tmp_path, videos):
    path = tmp_path / "s.csv"
    path.write_bytes((HEADER + f"aaaaaaaaaaa, 1.000, 11.000, {DOG}\r\n").encode())
    (item,) = prepare_audioset([path], videos, resolve_classes(["dog"]))
    assert item.video_id == "aaaaaaaaaaa_1000" and item.cls == "dog"


@pytest.mark.parametrize(
    "content",
    ["", HEADER, "\n\n"],
    ids=["empty", "header-only", "blank-lines"],
)
def test_empty_csv_is_an_error(tmp_path, videos, content):
    path = tmp_path / "empty.csv"
    path.write_text(content)
    with pytest.raises(ValueError) as err:
        prepare_audioset([path], videos, resolve_classes(["dog"]))
    assert "\n" not in str(err.value) and str(path) in str(err.value)


@pytest.mark.parametrize(
    "body",
    [
        'aaaaaaaaaaa, thirty, 40.000, "/m/0bt9lr"\n',
        "aaaaaaaaaaa, 30.000\n",
        'aaaaaaaaaaa, 30.000, 40.000, "/m/0bt9lr", extra\n',
        "<html><body>Not Found</body></html>\n",
    ],
    ids=["non-numeric", "short", "long", "html"],
)
def test_malformed_csv_is_one_line_error_naming_the_file(tmp_path, videos, body):
    good = f'bbbbbbbbbbb, 0.000, 10.000, "{SPEECH}"\n'
    path = tmp_path / "bad.csv"
    path.write_text(HEADER + good + body)
    with pytest.raises(ValueError) as err:
        prepare_audioset([path], videos, resolve_classes(["dog"]))
    message = str(err.value)
    assert "\n" not in message and str(path) in message and "row 2" in message


def test_wrong_column_header_is_an_error(tmp_path, videos):
    header = HEADER.replace("positive_labels", "labels")
    path = write_csv(tmp_path / "s.csv", [("aaaaaaaaaaa", 0.0, 10.0, [DOG])], header=header)
    with pytest.raises(ValueError, match="columns"):
        prepare_audioset([path], videos, resolve_classes(["dog"]))


def test_missing_root_or_csv_list(tmp_path):
    csv = write_csv(tmp_path / "s.csv", [("aaaaaaaaaaa", 0.0, 10.0, [DOG])])
    with pytest.raises(ValueError, match="does not exist"):
        prepare_audioset([csv], tmp_path / "nope", resolve_classes(["dog"]))
    with pytest.raises(ValueError):
        prepare_audioset([], tmp_path, resolve_classes(["dog"]))


def test_no_matching_rows_gives_no_items(tmp_path, videos):
    csv = write_csv(tmp_path / "s.csv", [("aaaaaaaaaaa", 0.0, 10.0, [SPEECH])])
    assert prepare_audioset([csv], videos, resolve_classes(["dog"])) == []


def test_file_index_ignores_hidden_and_non_video(tmp_path):
    touch(tmp_path, "a.mp4", "b_1_2.MKV", ".c.mp4", "d.txt", ".hidden/e.mp4")
    index = FileIndex.scan(str(tmp_path))
    assert sorted(index.whole) == ["a", "b_1_2"]
    assert index.clip("b", 1.0, 2.0) == str(tmp_path / "b_1_2.MKV")
    assert index.clip("b", 1.0, 3.0) is None
