"""Class table, ontology and name resolution."""

from __future__ import annotations

import pytest

from s2i_data.classes import (
    ClassInfo,
    Ontology,
    class_table,
    match_folder,
    ontology,
    resolve_classes,
    slugify,
)

PAPER = ["baby", "dog", "rail", "fireworks", "water"]


def aliases(names):
    return [c.alias for c in resolve_classes(names)]


def test_table_has_the_ten_vegas_classes_with_their_ids():
    table = {c.alias: c for c in class_table()}
    assert list(table) == [
        "baby", "chainsaw", "dog", "drum", "fireworks",
        "helicopter", "printer", "rail", "snoring", "water",
    ]
    assert table["baby"].audioset_ids == ("/t/dd00002",)
    assert table["dog"].audioset_ids == ("/m/0bt9lr",)
    assert table["rail"].audioset_ids == ("/m/06d_3",)
    assert table["fireworks"].audioset_ids == ("/m/0g6b5",)
    assert table["water"].audioset_ids == ("/m/0j6m2", "/m/0j2kx")
    onto = ontology()
    for info in table.values():
        assert info.audioset_ids and all(mid in onto for mid in info.audioset_ids)
        assert info.display_name in info.folder_names and info.alias in info.folder_names


def test_every_table_id_names_its_class_in_the_ontology():
    onto = ontology()
    names = {c.alias: onto.name(c.audioset_ids[0]) for c in class_table()}
    assert names["chainsaw"] == "Chainsaw"
    assert names["drum"] == "Drum"
    assert names["helicopter"] == "Helicopter"
    assert names["printer"] == "Printer"
    assert names["snoring"] == "Snoring"
    assert names["baby"] == "Baby cry, infant cry"
    assert names["water"] == "Stream"


@pytest.mark.parametrize(
    "name, alias",
    [
        ("dog", "dog"),
        ("DOG", "dog"),
        ("Rail transport", "rail"),
        ("rail transport", "rail"),
        ("rail_transport", "rail"),
        ("Baby cry", "baby"),
        ("baby_cry", "baby"),
        ("baby-cry", "baby"),
        ("Baby cry, infant cry", "baby"),  # the ontology's name for the table class
        ("baby_crying", "baby"),  # a folder spelling
        ("/m/0bt9lr", "dog"),
        ("/t/dd00002", "baby"),
        ("Water flowing", "water"),
        ("water", "water"),
    ],
)
def test_table_classes_resolve_from_any_spelling(name, alias):
    assert aliases([name]) == [alias]


def test_any_ontology_class_resolves_by_name_slug_or_id():
    (cat,) = resolve_classes(["Cat"])
    assert cat == ClassInfo("cat", "Cat", ("Cat", "cat"), ("/m/01yrx",))
    bird = "Bird vocalization, bird call, bird song"
    (by_name,) = resolve_classes([bird])
    assert by_name.alias == "bird_vocalization_bird_call_bird_song"
    assert resolve_classes(["bird_vocalization_bird_call_bird_song"]) == [by_name]
    assert resolve_classes([by_name.audioset_ids[0]]) == [by_name]
    assert resolve_classes(["BARK"])[0].audioset_ids == ("/m/05tny_",)


def test_ontology_names_win_over_folder_spellings():
    # "train" is a folder spelling of rail, but Train is its own ontology class.
    (train,) = resolve_classes(["Train"])
    assert (train.alias, train.audioset_ids) == ("train", ("/m/07jdr",))
    # Stream is one of water's two ids; asked for alone it is the ontology class.
    assert resolve_classes(["/m/0j6m2"])[0].alias == "stream"


def test_ontology_class_whose_slug_is_a_table_alias_gets_a_distinct_alias():
    (water,) = resolve_classes(["/m/0838f"])  # ontology "Water", not the table's Water flowing
    assert water.display_name == "Water"
    assert water.alias != "water" and water.alias.startswith("water_")
    assert aliases(["water", "/m/0838f"]) == ["water", water.alias]


def test_order_is_kept():
    assert aliases(["water", "dog", "Cat", "baby"]) == ["water", "dog", "cat", "baby"]
    assert aliases(PAPER) == PAPER


def test_unknown_name_is_one_line_with_suggestion():
    with pytest.raises(ValueError) as err:
        resolve_classes(["dog", "fireworx"])
    message = str(err.value)
    assert "\n" not in message
    assert "'fireworx'" in message and "fireworks" in message


def test_unknown_name_without_close_match():
    with pytest.raises(ValueError, match="unknown class 'qqqqzzzz'"):
        resolve_classes(["qqqqzzzz"])


@pytest.mark.parametrize(
    "names", [["dog", "dog"], ["dog", "/m/0bt9lr"], ["rail", "Rail transport"]]
)
def test_duplicates_are_rejected(names):
    with pytest.raises(ValueError, match="twice"):
        resolve_classes(names)


def test_empty_request_is_rejected():
    with pytest.raises(ValueError):
        resolve_classes([])


def test_descendants_of_dog_include_bark_and_itself():
    dog = ontology().descendants("/m/0bt9lr")
    assert {"/m/0bt9lr", "/m/05tny_"} <= dog
    assert len(dog) == 8


def test_rail_transport_includes_train_and_its_children():
    rail = ontology().descendants("/m/06d_3")
    assert {"/m/07jdr", "/m/01g50p", "/t/dd00048", "/m/0195fx"} <= rail
    assert ontology().descendants("/m/07jdr") <= rail


def test_crying_sobbing_is_not_baby_cry():
    assert "/m/0463cq4" not in ontology().descendants("/t/dd00002")
    (baby,) = resolve_classes(["baby"])
    assert "/m/0463cq4" not in baby.audioset_ids
    assert resolve_classes(["/m/0463cq4"])[0].alias == "crying_sobbing"


def test_descendants_survive_a_cycle_and_reject_unknown_ids():
    onto = Ontology(
        [
            {"id": "a", "name": "A", "child_ids": ["b"]},
            {"id": "b", "name": "B", "child_ids": ["a", "c"]},
            {"id": "c", "name": "C", "child_ids": []},
        ]
    )
    assert onto.descendants("a") == {"a", "b", "c"}
    assert onto.descendants("c") == {"c"}
    with pytest.raises(ValueError):
        onto.descendants("zz")


def test_ontology_is_loaded_once():
    assert ontology() is ontology()


@pytest.mark.parametrize(
    "folder, alias",
    [
        ("Baby cry", "baby"),
        ("baby_cry", "baby"),
        ("BABY-CRY", "baby"),
        ("baby", "baby"),
        ("Rail_transport", "rail"),
        ("rail transport", "rail"),
        ("Dog", "dog"),
        ("Water flowing", "water"),
        ("Fireworks", "fireworks"),
    ],
)
def test_match_folder_ignores_case_and_separators(folder, alias):
    info = match_folder(folder, resolve_classes(PAPER))
    assert info is not None and info.alias == alias


def test_match_folder_only_among_given_classes():
    assert match_folder("Dog", resolve_classes(["baby", "rail"])) is None
    assert match_folder("Snoring", resolve_classes(PAPER)) is None
    assert match_folder("", resolve_classes(PAPER)) is None
    (bird,) = resolve_classes(["Bird vocalization, bird call, bird song"])
    assert match_folder("bird vocalization bird call bird song", [bird]) == bird


def test_slugify():
    bird = "Bird vocalization, bird call, bird song"
    assert slugify(bird) == "bird_vocalization_bird_call_bird_song"
    assert slugify("Whimper (dog)") == "whimper_dog"


def test_manifests_are_package_data_linked_to_the_one_top_level_copy():
    """s2i_data/manifests is what an installed package reads; in a checkout it is the link to
    manifests/ (so the files exist once), and a wheel carries the files (tests/test_packaging.py)."""
    from pathlib import Path

    from s2i_data import classes

    # classes.__file__, not s2i_data.__file__: under pytest, tests/s2i_data/ can shadow the
    # package's top level as a namespace package while its modules still come from s2i_data/
    package = Path(classes.__file__).resolve().parent
    assert classes.MANIFESTS_DIR == package / "manifests"
    repo_copy = package.parent / "manifests"
    if repo_copy.is_dir():  # running from a checkout
        assert (package / "manifests").is_symlink(), "s2i_data/manifests must link to manifests/, not copy it"
        assert (package / "manifests").resolve() == repo_copy.resolve()
    assert classes.manifest_path("classes.csv").is_file()
    assert classes.manifest_path("audioset/ontology.json").is_file()


def test_a_missing_manifest_file_says_where_s2i_looked(tmp_path, monkeypatch):
    from s2i_data import classes

    monkeypatch.setattr(classes, "MANIFESTS_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"classes\.csv is missing: .*s2i_data/manifests/.*reinstall"):
        classes.manifest_path("classes.csv")
