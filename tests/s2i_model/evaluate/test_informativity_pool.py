"""The judges' file says which models' pictures trained them (issue 27): `pool_models` gives the
models of the labelled pictures that a judge learnt from (not those of unlabelled pictures, nor of
a class too thin to get a judge), None for judges that do not say (an older file, or an older pool
whose ids name no run), and a hostile value in the file (a path, markup, a wrong type) is refused
in one line, by `pool_models` and by `Judges.load` alike."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from PIL import Image

from s2i_data.untrusted import Untrusted
from s2i_model import checkpoint
from s2i_model.evaluate.informativity import FILE, InformativityConfig, Judges, pool_models, train_informativity
from s2i_model.labelling.store import append_label
from s2i_model.nets import InformativityClassifier

QUIET = dict(log=lambda *_: None)
FAST = InformativityConfig(epochs=1, batch_size=8)

# run: (model, {class: (informative, not, unlabelled)}) -- what the pool below holds
POOL = {
    "s2i_a": ("s2i", {"dog": (4, 4, 2), "rail": (4, 4, 0)}),
    "vae": ("aivae", {"dog": (4, 4, 0), "rail": (0, 0, 3)}),
    "mm": ("mmgan", {"dog": (0, 0, 6), "rail": (0, 0, 6)}),  # never labelled
    "scene": ("sound2scene", {"baby": (2, 2, 0)}),  # labelled, but too few for baby to get a judge
}


def make_pool(root: Path, older: bool = False) -> Path:
    """A real pool in the format `sample` writes (``older``: as before ids named their run), its
    pictures bright when labelled informative and dark when not, labels appended as the page does."""
    rows, labels, n = [], [], 0
    for run, (model, per_class) in POOL.items():
        for cls, (pos, neg, unlabelled) in per_class.items():
            for i, label in enumerate(["informative"] * pos + ["not"] * neg + [None] * unlabelled):
                n += 1
                key = f"{cls}_{n:03d}-clip_0000"
                pid = f"{key}-s0-0" if older else f"{run}.{key}-s0-0"
                (root / "images" / cls).mkdir(parents=True, exist_ok=True)
                level = 200 + 5 * (i % 8) if label == "informative" else 30 + 5 * (i % 8)
                Image.new("RGB", (96, 96), (level, level, level)).save(root / "images" / cls / f"{pid}.png")
                row = {"id": pid, "file": f"images/{cls}/{pid}.png", "class": cls, "key": key, "sample": "0"}
                rows.append(row if older else {**row, "run": run, "model": model})
                if label:
                    labels.append((pid, label))
    with open(root / "pool.csv", "w", newline="") as f:
        w = csv.DictWriter(f, list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    (root / "pool.json").write_text(json.dumps({"classes": ["baby", "dog", "rail"], "target": 4}))
    for pid, label in labels:
        append_label(root, pid, label)
    return root


def test_the_judges_record_the_models_they_learnt_from(tmp_path):
    pool = make_pool(tmp_path / "pool")
    summary = train_informativity(pool, tmp_path / "judges", FAST, **QUIET)
    # worked out from POOL by hand: dog's judge learnt from s2i and aivae pictures, rail's from s2i
    # ones; mmgan's were never labelled, and baby (2 + 2 labels) got no judge to learn sound2scene's
    assert pool_models(tmp_path / "judges") == {"s2i", "aivae"}
    assert Judges.load(tmp_path / "judges").pool_models == {"s2i", "aivae"}
    written = json.loads((tmp_path / "judges" / "informativity.json").read_text())
    assert written["pool_models"] == ["aivae", "s2i"] and written["pool_runs"] == {"s2i_a": "s2i", "vae": "aivae"}
    assert written["pool_unattributed"] == 0 and "skipped" in summary["classes"]["baby"]
    dog = written["classes"]["dog"]
    assert dog["models"]["s2i"] + dog["models"]["aivae"] == dog["train"]


def test_judges_of_an_older_pool_do_not_say(tmp_path):
    pool = make_pool(tmp_path / "pool", older=True)  # ids without a run: any model's pictures
    train_informativity(pool, tmp_path / "judges", FAST, **QUIET)
    assert pool_models(tmp_path / "judges") is None
    assert Judges.load(tmp_path / "judges").pool_models is None
    written = json.loads((tmp_path / "judges" / "informativity.json").read_text())
    assert written["pool_models"] is None and written["pool_unattributed"] > 0


def judges_file(folder: Path, **fields) -> Path:
    """A judges' file as train-informativity writes it, with ``fields`` added (or not)."""
    folder.mkdir(parents=True, exist_ok=True)
    checkpoint.save(folder / FILE, {"classes": ["dog"], "judges": {"dog": InformativityClassifier(2).state_dict()},
                                    "report": {}, **fields})
    return folder


def test_an_older_judges_file_does_not_say(tmp_path):
    assert pool_models(judges_file(tmp_path / "older")) is None
    assert Judges.load(tmp_path / "older").pool_models is None
    said = judges_file(tmp_path / "new", pool_runs={"r1": "s2i", "r2": "s2i"}, pool_unattributed=0)
    assert pool_models(said) == {"s2i"}


HOSTILE = {
    "run a path": ({"../../etc": "s2i"}, 0, "pool_runs"),
    "model markup": ({"r1": "<img src=x onerror=alert(1)>"}, 0, "pool_runs"),
    "model a path": ({"r1": "../s2i"}, 0, "pool_runs"),
    "runs a list": (["s2i"], 0, "pool_runs"),
    "runs a string": ("s2i", 0, "pool_runs"),
    "model a list": ({"r1": ["s2i"]}, 0, "pool_runs"),
    "count a string": ({"r1": "s2i"}, "0", "pool_unattributed"),
    "count negative": ({"r1": "s2i"}, -1, "pool_unattributed"),
    "count missing": ({"r1": "s2i"}, None, "pool_unattributed"),
}


@pytest.mark.parametrize("case", HOSTILE, ids=list(HOSTILE))
def test_a_hostile_pool_record_is_refused_in_one_line(tmp_path, case):
    runs, count, field = HOSTILE[case]
    folder = judges_file(tmp_path / "j", pool_runs=runs, **({} if count is None else {"pool_unattributed": count}))
    for read in (pool_models, Judges.load):
        with pytest.raises(Untrusted, match=field) as e:
            read(folder)
        assert str(folder / FILE) in str(e.value) and "\n" not in str(e.value)
