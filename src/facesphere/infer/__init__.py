"""Inference: load recognisers, detect and align faces, embed, verify, search, export."""
