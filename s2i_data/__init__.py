"""s2i-data: audiovisual video collections → video-disjoint, class-balanced webdataset shards."""

__version__ = "0.1.0"
