"""Vector ids: a reference's vectors (whole image, regions) under one int64 each.

Each reference may own several vectors (whole image, regions). A vector id packs the
reference id and the region number: ``ref_id << REGION_BITS | region``, so FAISS keeps
only int64 ids and no side table is needed to map a hit back to its reference. The
vectors themselves live in the segments (:mod:`.segments`).
"""

from __future__ import annotations

import numpy as np


REGION_BITS = 4
MAX_REGIONS = 1 << REGION_BITS


def vector_ids(ref_ids: np.ndarray, regions: np.ndarray) -> np.ndarray:
    """Pack reference ids and region numbers into FAISS ids."""
    regions = np.asarray(regions, dtype=np.int64)
    if regions.size and (regions.min() < 0 or regions.max() >= MAX_REGIONS):
        raise ValueError(f"region numbers must lie in [0, {MAX_REGIONS})")
    return (np.asarray(ref_ids, dtype=np.int64) << REGION_BITS) | regions


def reference_ids(ids: np.ndarray) -> np.ndarray:
    """The reference id of each FAISS id (-1 stays -1)."""
    ids = np.asarray(ids, dtype=np.int64)
    return np.where(ids < 0, -1, ids >> REGION_BITS)


def region_numbers(ids: np.ndarray) -> np.ndarray:
    """The region number of each FAISS id (-1 for a missing hit)."""
    ids = np.asarray(ids, dtype=np.int64)
    return np.where(ids < 0, -1, ids & (MAX_REGIONS - 1))
