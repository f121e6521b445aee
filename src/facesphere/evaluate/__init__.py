"""Evaluation in three layers: file-format readers (``facesphere.data``) -> protocol logic (this package) ->
pure numpy metrics (:mod:`facesphere.metrics`)."""
