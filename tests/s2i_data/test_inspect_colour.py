"""inspect's mean-colour judge (issue 28) against the same judge computed from the tars directly."""

import io
import tarfile

import numpy as np
import pandas as pd
from PIL import Image

from s2i_data.inspect import colour_judge


def _mean_colours(build, split):
    out = {}
    for tar in sorted((build / split).glob("*.tar")):
        with tarfile.open(tar) as t:
            for m in t.getmembers():
                if m.name.endswith(".png"):
                    img = np.asarray(Image.open(io.BytesIO(t.extractfile(m).read())).convert("RGB"), float)
                    out[m.name[:-4]] = img.reshape(-1, 3).mean(0) / 255.0
    return out


def test_colour_judge_is_the_nearest_class_mean_colour(tiny_build):
    cls = dict(pd.read_parquet(tiny_build / "manifest.parquet", columns=["key", "class"]).values)
    learn, judge = _mean_colours(tiny_build, "train"), _mean_colours(tiny_build, "test")
    classes = sorted({cls[k] for k in learn})
    centre = {c: np.mean([v for k, v in learn.items() if cls[k] == c], 0) for c in classes}
    right = [min(classes, key=lambda c: np.sum((v - centre[c]) ** 2)) == cls[k] for k, v in judge.items()]
    found = colour_judge(tiny_build)
    assert found["frames"] == len(judge)
    assert found["accuracy"] == np.mean(right)
    assert found["accuracy"] > 0.5  # the default preset: colour names the class
