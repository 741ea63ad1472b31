"""s2i_model: the Sound-to-Imagination translator (Fanzeres & Nadeu 2023) trained on s2i shards."""

__version__ = "0.1.0"
