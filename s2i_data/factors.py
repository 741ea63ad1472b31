"""Within-class factors of the built-in ``factors`` preset (issue 28): what each video's picture
shows and its sound carries, drawn per video and coupled through one physical story.

The definitions live here, in code; a data set only supplies values. `synth --preset factors`
writes them beside the videos (``ROOT/factors.csv``: one row per video), the build copies them into
every sample's manifest row (a column ``factor_<name>`` per factor, empty for the other classes'
rows) and records the preset in build.json; `verify` checks them against these definitions and the
evaluation reads them back to score how much of each factor a model's pictures carry.

Continuous factors are a latent ``u`` in [0, 1] (how ``u`` becomes a pitch, a size, a loudness is
written beside each factor and in docs/data.md); counted factors are integers in [low, high]. No
factor of this preset changes within a video, so a sample's value is its video's.
"""

from __future__ import annotations

from dataclasses import dataclass

SIDECAR = "factors.csv"  # ROOT/factors.csv, written by synth beside the class folders
COLUMN_PREFIX = "factor_"
CONTINUOUS, COUNT = "continuous", "count"


@dataclass(frozen=True)
class Factor:
    name: str  # unique over the preset: "<class>_<what>"
    cls: str
    kind: str  # CONTINUOUS (u in [low, high] = [0, 1]) or COUNT (an integer in [low, high])
    low: float
    high: float
    heard: str  # how the sound carries it
    seen: str  # how the picture shows it

    @property
    def column(self) -> str:
        return COLUMN_PREFIX + self.name


def _u(name: str, cls: str, heard: str, seen: str) -> Factor:
    return Factor(name, cls, CONTINUOUS, 0.0, 1.0, heard, seen)


PRESETS: dict[str, tuple[Factor, ...]] = {
    "factors": (
        _u("baby_size", "baby", "cry pitch falls from 650 to 350 Hz as u grows",
           "the face's radius grows from 0.20 to 0.38 of the frame height"),
        _u("baby_loudness", "baby", "the cries' peak level rises from 0.12 to 0.95 of full scale",
           "the open mouth grows from 0.10 to 0.45 of the face's height"),
        _u("dog_size", "dog", "bark pitch falls from 560 to 230 Hz",
           "the body's length grows from 0.22 to 0.50 of the frame width"),
        _u("dog_distance", "dog", "barks' peak level falls from 0.95 to 0.12 of full scale",
           "the dog stands higher in the frame, nearer the horizon (feet from 0.92 to 0.62 of the height)"),
        _u("rail_spacing", "rail", "the clack period grows from 0.22 to 0.55 s (fixed speed)",
           "the carriages (a seam and one window each) are 36 to 90 px long"),
        _u("rail_height", "rail", "the rumble's hum falls from 130 to 45 Hz",
           "the train's band grows from 0.22 to 0.62 of the frame height"),
        Factor("fireworks_count", "fireworks", COUNT, 1, 3,
               "bangs a second, evenly spaced: any 1 s window holds this many bangs",
               "each burst glows for exactly 1 s: this many bursts are in the sky at any instant"),
        _u("fireworks_size", "fireworks", "bangs' peak level rises from 0.15 to 0.95; the boom lowers",
           "the bursts' radius grows from 10 to 34 px"),
        _u("water_density", "water", "the noise's upper edge rises from 1.2 to 6 kHz (brighter)",
           "the waves' wavelength shrinks from 40 to 9 px (denser)"),
        _u("water_roughness", "water", "the level rises from 0.12 to 0.95 and droplets grow more frequent",
           "the crests grow brighter (0.15 to 1 of the way to the light colour) and glint"),
    ),
}


def preset(name: str) -> tuple[Factor, ...]:
    """The factors of preset ``name`` (ValueError naming the known presets otherwise)."""
    if name not in PRESETS:
        raise ValueError(f"unknown factor preset {name!r}; known: {', '.join(sorted(PRESETS))}")
    return PRESETS[name]


def of_class(name: str, cls: str) -> tuple[Factor, ...]:
    return tuple(f for f in preset(name) if f.cls == cls)


def columns(name: str) -> list[str]:
    return [f.column for f in preset(name)]


def of_classes(name: str, classes) -> tuple[Factor, ...]:
    """The factors of preset ``name`` whose class is one of ``classes`` (a build's), in preset order."""
    wanted = set(classes)
    return tuple(f for f in preset(name) if f.cls in wanted)


@dataclass(frozen=True)
class Sidecar:
    """``ROOT/factors.csv`` once checked (`untrusted.factor_table`): its preset, and per
    (class, video file name) the values of that class's factors by column."""

    preset: str
    values: dict  # {(class, video): {column: value}}
