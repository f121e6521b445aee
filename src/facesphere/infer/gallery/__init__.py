"""A persistent face gallery on disk: identities, image paths and embeddings, searched by cosine similarity.

    from facesphere.infer.gallery import Gallery
    gallery = Gallery.create("my_gallery", dim=512, model="r50.onnx | ...")   # or Gallery.open("my_gallery")
    ids = gallery.add(embeddings, ["alice", "alice", "bob"], paths=["a1.jpg", "a2.jpg", "b.jpg"])
    gallery.search(query_embeddings, k=5)      # -> [[Match(identity, score, path, id), ...], ...] per query

A gallery is a directory holding

* ``gallery.sqlite`` — **the source of truth**: table ``meta`` (format, dim, metric, index kind and options, the
  model fingerprint, a version counter), ``entries`` (id = vector id, identity, image path, added timestamp, optional
  JSON extra) and ``vectors`` (id, float32 little-endian BLOB). SQLite makes every ``add`` / ``remove`` one atomic,
  durable transaction, and its WAL journal lets any number of readers work while one writer commits.
* ``index.faiss`` — a **cache** of the FAISS index built from those vectors (``faiss.write_index`` bytes followed
  by a checksummed trailer naming the gallery version it reflects). It is replaced atomically (temp file +
  ``os.replace``); when it is missing, corrupt, from another gallery or behind the database it is brought up to date
  from SQLite (rows added since are appended; after a removal it is rebuilt), with a :class:`GalleryWarning` when it
  was missing or corrupt. Losing it never loses data.
* ``gallery.lock`` — writers hold an exclusive ``fcntl.flock`` on it while they change the database and rewrite the
  index, so concurrent ``add`` / ``remove`` calls from several processes are serialised.

Search is exact by default (``index="flat"``): candidates come from FAISS (``IndexFlatIP``) or from a numpy
float32 matrix product when faiss is not installed, and are then re-scored in float64; the candidate set is grown
until float32 rounding provably cannot change the answer, so both backends return the same entries, scores and
order. Ties are broken by the smaller entry id (the earlier added). ``index="ivf"`` / ``"hnsw"`` are approximate
FAISS indexes for large galleries (exact numpy search when faiss is missing). See ``docs/gallery.md``.

:mod:`facesphere.infer.enrol` does the everyday work on top: folders of people to identities, enrolling without duplicates, the
recogniser recipe recorded in the gallery, and known / unknown decisions at the model's threshold.
"""

from ...errors import GalleryLockedError
from .storage import DB_NAME, INDEX_NAME, LOCK_NAME
from .store import (
    BACKENDS,
    FORMAT_NAME,
    FORMAT_VERSION,
    INDEX_KINDS,
    METRICS,
    Entry,
    Gallery,
    GalleryWarning,
    Match,
    model_fingerprint,
)

__all__ = ["Gallery", "Match", "Entry", "GalleryWarning", "GalleryLockedError", "model_fingerprint", "METRICS",
           "INDEX_KINDS", "BACKENDS", "FORMAT_NAME", "FORMAT_VERSION", "DB_NAME", "INDEX_NAME", "LOCK_NAME"]
