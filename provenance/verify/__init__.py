"""Exact-copy verification primitives: local keypoints, geometric verification, PDQ.

These modules are standalone building blocks. ``keypoints`` extracts compact local
features that can be stored per reference; ``geometry`` decides whether a query is a
geometric copy (crop, resize, rotation, mirror) of a reference and where it sits;
``pdq`` computes PDQ perceptual hashes and searches them with faiss.

Heavy dependencies (OpenCV, faiss, pdqhash) are imported lazily inside functions.
"""

from .geometry import DEFAULT_THRESHOLDS, Thresholds, Verification, verify_pair, verify_with_mirror
from .keypoints import Keypoints, extract_keypoints, extract_keypoints_with_mirror
from .pdq import MATCH_THRESHOLD, PdqIndex, pdq_dihedral, pdq_hash

__all__ = [
    "DEFAULT_THRESHOLDS",
    "MATCH_THRESHOLD",
    "Keypoints",
    "PdqIndex",
    "Thresholds",
    "Verification",
    "pdq_dihedral",
    "pdq_hash",
    "extract_keypoints",
    "extract_keypoints_with_mirror",
    "verify_pair",
    "verify_with_mirror",
]
