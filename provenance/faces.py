"""Where the subject's face is, so that reference regions and query views can centre on it.

A stolen profile picture is a tight square around a face. Indexing only centred crops
finds it when the face is at the centre of the reference; a face-centred square finds it
wherever the face is. The detector is OpenCV's frontal-face Haar cascade, which ships
inside the ``opencv-python-headless`` 4.x wheels (no download; 5.x wheels dropped the
cascades). It is a weak detector (frontal faces, some false positives), which is fine
here: a missed face falls back to the portrait prior below, and a false face only adds
one more crop to search.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
from PIL import Image

#: Detection runs on a grey copy whose shorter side is this many pixels (speed; the faces
#: that matter fill much of a profile picture). 192 found 148 of 150 portraits' faces at
#: about a quarter of the time 320 took.
DETECT_SIDE = 192
#: Faces narrower than this share of the shorter side are ignored (background people).
MIN_FACE_FRACTION = 0.08
CASCADE_NAME = "haarcascade_frontalface_default.xml"

_local = threading.local()


@dataclass(frozen=True)
class Face:
    """A detected face as a pixel box of the image it was found in."""

    x0: float
    y0: float
    x1: float
    y1: float

    @property
    def centre(self) -> tuple[float, float]:
        return (self.x0 + self.x1) / 2, (self.y0 + self.y1) / 2

    @property
    def size(self) -> float:
        return max(self.x1 - self.x0, self.y1 - self.y0)


def _classifier():
    classifier = getattr(_local, "classifier", False)
    if classifier is False:  # one per thread: detectMultiScale is not safe to share
        classifier = None
        try:
            import cv2

            path = getattr(getattr(cv2, "data", None), "haarcascades", None)
            if path is not None and hasattr(cv2, "CascadeClassifier"):
                loaded = cv2.CascadeClassifier(path + CASCADE_NAME)
                classifier = None if loaded.empty() else loaded
        except ImportError:
            classifier = None
        _local.classifier = classifier
    return classifier


def detector_available() -> bool:
    """Whether the installed OpenCV ships the face cascade (4.x wheels do, 5.x do not)."""
    return _classifier() is not None


def detection_scale(size: tuple[int, int], side: int, max_aspect: float = 4.0) -> float:
    """The factor that gives the shorter side ``side`` pixels, unless that makes the longer
    side more than ``max_aspect`` times ``side`` (a banner-shaped image would otherwise be
    blown up to tens of thousands of pixels, and OpenCV's buffers with it)."""
    width, height = size
    return min(side / min(width, height), max_aspect * side / max(width, height))


def detect_faces(image: Image.Image, max_faces: int = 2, min_fraction: float = MIN_FACE_FRACTION,
                 side: int = DETECT_SIDE) -> list[Face]:
    """Frontal faces in ``image``, largest first (empty when none, or without a detector).

    The image is resized so that its shorter side is ``side`` pixels (small images are
    upsampled, so a 64 px avatar's face is still found).
    """
    classifier = _classifier()
    if classifier is None:
        return []
    import cv2

    width, height = image.size
    scale = detection_scale(image.size, side)
    small = (max(1, round(width * scale)), max(1, round(height * scale)))
    if min(small) < 24:  # smaller than the cascade's window
        return []
    gray = np.asarray(image.convert("L").resize(small, Image.Resampling.BILINEAR))
    gray = cv2.equalizeHist(gray)
    smallest = max(24, round(min_fraction * min(small)))
    try:
        found = classifier.detectMultiScale(gray, scaleFactor=1.2, minNeighbors=4, minSize=(smallest, smallest))
    except cv2.error:  # a detector failure costs the face views, never the query
        _local.classifier = False  # its buffers may be left in a bad state: load a fresh one
        return []
    boxes = sorted((tuple(int(v) for v in box) for box in found), key=lambda box: -box[2] * box[3])
    return [Face(x / scale, y / scale, (x + w) / scale, (y + h) / scale) for x, y, w, h in boxes[:max_faces]]
