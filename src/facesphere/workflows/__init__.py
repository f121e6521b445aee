"""Workflows built on a trained run: sub-center ArcFace data cleaning (:mod:`.clean`) and face synthesis from the
embedding space with BatchNorm priors (:mod:`.invert`)."""
