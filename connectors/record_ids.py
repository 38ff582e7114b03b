"""Record ids: derive stable ones from content (:func:`content_ids`) and reject duplicates.

Every record needs an id that is unique in the dataset and stable across runs, because reports
("record ``a41f...`` is likely poisoned") and decisions must be traceable back to the input.
When the input has an id column, its values are used as they are and must be unique
(:func:`find_duplicate`). When it has none, :func:`content_ids` hashes what the record holds:
its features (pixels, feature values, samples, or the UTF-8 of a text), its label vector, its trusted flag and its
contributor. The id is the first 16 hex digits (64 bits) of a BLAKE2b digest, so re-reading the
same data, in any order, gives the same ids.

Identical records (same content, same contributor) would get the same hash. They are legitimate
in crowdsourced data (two uploads of one picture), so instead of failing, the second copy gets
``-2`` appended, the third ``-3``, and so on, in input order. Copies are interchangeable, so this
keeps ids stable as long as the number of copies does not change.
"""

from __future__ import annotations

import hashlib

import numpy as np


def content_ids(
    features: np.ndarray,
    labels: np.ndarray,
    trusted: np.ndarray,
    contributors: np.ndarray | None = None,
) -> np.ndarray:
    """One 16-hex-digit content hash per record (object array of ``str``); see module docstring."""
    n = len(features)
    if features.dtype == object:  # texts: hash their UTF-8, not the objects' memory addresses
        rows = [str(t).encode("utf-8") for t in features]
    else:
        rows = [r.tobytes() for r in np.ascontiguousarray(features).reshape(n, -1)]
    labels = np.ascontiguousarray(labels, dtype=np.float32)
    ids = np.empty(n, dtype=object)
    seen: dict[str, int] = {}
    for i in range(n):
        digest = hashlib.blake2b(rows[i], digest_size=8)
        digest.update(labels[i].tobytes())
        digest.update(b"T" if trusted[i] else b"C")
        if contributors is not None and contributors[i] is not None:
            digest.update(str(contributors[i]).encode())
        key = digest.hexdigest()
        copies = seen.get(key, 0) + 1
        seen[key] = copies
        ids[i] = key if copies == 1 else f"{key}-{copies}"
    return ids


def find_duplicate(ids: np.ndarray) -> tuple[int, int] | None:
    """Rows ``(first, second)`` of the earliest repeated id (by its second row), or ``None``."""
    if len(ids) < 2:
        return None
    values = np.asarray(ids).astype(str)
    order = np.argsort(values, kind="stable")
    repeats = np.flatnonzero(values[order][1:] == values[order][:-1])
    if not len(repeats):
        return None
    seconds = order[repeats + 1]
    pick = int(np.argmin(seconds))
    return int(order[repeats[pick]]), int(seconds[pick])
