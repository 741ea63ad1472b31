"""Labelling: the pool of pictures to label, the label store, the local labelling page."""
