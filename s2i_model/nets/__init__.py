"""The networks every model shares: the building blocks (`blocks`) and the informativity / real-frame
judge (`informativity`). Each model's own networks live in its folder, `s2i_model/models/<name>/`."""

from .informativity import InformativityClassifier

__all__ = ["InformativityClassifier"]
