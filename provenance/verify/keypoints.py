"""Local keypoints (SIFT or ORB) with a compact, storable serialisation.

Images are converted to grey and resized so that the longer side is ``max_side``
pixels (upsampling small images by at most ``max_upscale``) before detection, so that
keypoint density and RANSAC tolerances mean the same thing for a 250 px portrait and
a 4000 px photo. Keypoint coordinates are then mapped back to the *original* image's
pixel coordinates (pixel centres at integer positions, as in OpenCV).

Only the strongest ``max_keypoints`` are kept, taken in rounds over a coarse grid so
that one very textured area cannot starve the rest of the picture (a crop of a quiet
corner must still find reference keypoints there).

SIFT descriptors are stored as OpenCV computes them: integers in 0..255, hence
lossless as ``uint8``. ``geometry`` turns them into RootSIFT at matching time.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from PIL import Image, ImageOps

METHODS = ("sift", "orb")
DESCRIPTOR_SIZES = {"sift": 128, "orb": 32}

#: Longer side of the working image. SIFT doubles it again internally, so detection costs
#: grow with its square: 384 finds ~94 % of the keypoints found at 512 for 40 % of the time.
DEFAULT_MAX_SIDE = 384
DEFAULT_MAX_KEYPOINTS = 500
#: A 250 px portrait is upsampled ~1.5x to 384; thumbnails never more than 4x (beyond
#: that there is no detail left to find, only interpolation artefacts).
DEFAULT_MAX_UPSCALE = 4.0
#: Selection grid (cells per side) used to spread keypoints over the picture.
SPREAD_GRID = 4

_MAGIC = b"PVKP"
_VERSION = 1
_HEADER = struct.Struct("<4sBBHIII")  # magic, version, method, dim, width, height, n


@dataclass(frozen=True, eq=False)
class Keypoints:
    """Keypoints of one image.

    ``xy`` is float32 ``(n, 2)`` in the original image's pixel coordinates;
    ``descriptors`` is uint8 ``(n, 128)`` for SIFT, ``(n, 32)`` (256 bits) for ORB.
    """

    xy: np.ndarray
    descriptors: np.ndarray
    width: int
    height: int
    method: str

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown keypoint method {self.method!r}")
        dim = DESCRIPTOR_SIZES[self.method]
        xy = np.ascontiguousarray(self.xy, dtype=np.float32).reshape(-1, 2)
        desc = np.ascontiguousarray(self.descriptors, dtype=np.uint8).reshape(-1, dim)
        if len(xy) != len(desc):
            raise ValueError(f"{len(xy)} positions but {len(desc)} descriptors")
        object.__setattr__(self, "xy", xy)
        object.__setattr__(self, "descriptors", desc)

    def __len__(self) -> int:
        return len(self.xy)

    @cached_property
    def root_sift(self) -> np.ndarray:
        """RootSIFT descriptors (Arandjelovic & Zisserman 2012): L1-normalised, then square-rooted.

        Computed once per keypoint set: a query's are matched against every candidate.
        """
        if self.method != "sift":
            raise ValueError("RootSIFT needs SIFT descriptors")
        descriptors = self.descriptors.astype(np.float32)
        descriptors /= descriptors.sum(axis=1, keepdims=True) + 1e-7
        return np.sqrt(descriptors)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Keypoints):
            return NotImplemented
        return (
            (self.width, self.height, self.method) == (other.width, other.height, other.method)
            and np.array_equal(self.xy, other.xy)
            and np.array_equal(self.descriptors, other.descriptors)
        )

    __hash__ = None  # mutable numpy payload

    def to_bytes(self) -> bytes:
        """Compact binary form: a 20-byte header, then zlib(xy float32 + descriptors).

        Lossless; about 45-60 KB for 500 SIFT keypoints, about 12 KB for 500 ORB ones.
        """
        method = METHODS.index(self.method) + 1
        dim = DESCRIPTOR_SIZES[self.method]
        header = _HEADER.pack(_MAGIC, _VERSION, method, dim, self.width, self.height, len(self))
        payload = self.xy.astype("<f4").tobytes() + self.descriptors.tobytes()
        return header + zlib.compress(payload, 6)

    @classmethod
    def from_bytes(cls, data: bytes) -> "Keypoints":
        """Inverse of :meth:`to_bytes`; raises ``ValueError`` on malformed input."""
        if len(data) < _HEADER.size:
            raise ValueError("keypoint blob too short")
        magic, version, method, dim, width, height, n = _HEADER.unpack_from(data)
        if magic != _MAGIC or version != _VERSION or not 1 <= method <= len(METHODS):
            raise ValueError("not a keypoint blob (bad magic, version or method)")
        name = METHODS[method - 1]
        if dim != DESCRIPTOR_SIZES[name]:
            raise ValueError("descriptor size does not match the method")
        try:
            payload = zlib.decompress(data[_HEADER.size :])
        except zlib.error as exc:
            raise ValueError(f"corrupt keypoint blob ({exc})") from None
        if len(payload) != n * (8 + dim):
            raise ValueError("keypoint blob has the wrong length")
        xy = np.frombuffer(payload, dtype="<f4", count=2 * n).reshape(n, 2)
        desc = np.frombuffer(payload, dtype=np.uint8, offset=8 * n).reshape(n, dim)
        return cls(xy.astype(np.float32), desc.copy(), width, height, name)


def extract_keypoints(
    image: Image.Image,
    *,
    method: str = "sift",
    max_side: int = DEFAULT_MAX_SIDE,
    max_keypoints: int = DEFAULT_MAX_KEYPOINTS,
    max_upscale: float = DEFAULT_MAX_UPSCALE,
) -> Keypoints:
    """Detect and describe the strongest, spatially spread keypoints of ``image``.

    The image is resized (longer side ``max_side``, upscaling at most ``max_upscale``
    times) before detection; positions are returned in original pixel coordinates.
    """
    gray, scale = _working_gray(image, max_side, max_upscale)
    return _extract_from_gray(gray, scale, image.size, method, max_keypoints)


def extract_keypoints_with_mirror(
    image: Image.Image,
    *,
    method: str = "sift",
    max_side: int = DEFAULT_MAX_SIDE,
    max_keypoints: int = DEFAULT_MAX_KEYPOINTS,
    max_upscale: float = DEFAULT_MAX_UPSCALE,
) -> tuple[Keypoints, Keypoints]:
    """Keypoints of ``image`` and of its left-right mirror image (for queries).

    The second result's positions are in the *mirrored* image's coordinates
    (``x' = width - 1 - x``), which is what :func:`~provenance.verify.geometry.
    verify_with_mirror` expects. SIFT's mirror is derived from the plain keypoints
    (:func:`mirror_keypoints`) instead of a second detection, which halves the cost.
    """
    gray, scale = _working_gray(image, max_side, max_upscale)
    plain = _extract_from_gray(gray, scale, image.size, method, max_keypoints)
    if method == "sift":
        return plain, mirror_keypoints(plain)
    flipped = _extract_from_gray(
        np.ascontiguousarray(gray[:, ::-1]), scale, image.size, method, max_keypoints
    )
    return plain, flipped


def _sift_mirror_permutation() -> np.ndarray:
    # OpenCV's SIFT descriptor is a 4x4 grid (row r, column c) of 8 orientation bins o,
    # stored at (r * 4 + c) * 8 + o, in the keypoint's rotated frame. Mirroring the image
    # turns the keypoint angle a into 180 - a; in the rotated frame that reflects the
    # rows (r -> 3 - r) and negates relative gradient angles (o -> -o mod 8).
    rows, columns, bins = np.meshgrid(np.arange(4), np.arange(4), np.arange(8), indexing="ij")
    return (((3 - rows) * 4 + columns) * 8 + (8 - bins) % 8).reshape(-1)


_SIFT_MIRROR = _sift_mirror_permutation()


def mirror_keypoints(keypoints: Keypoints) -> Keypoints:
    """The SIFT keypoints of the left-right mirrored image, without detecting again.

    Positions become ``x' = width - 1 - x`` and descriptors are permuted as SIFT's
    descriptor layout dictates. On real photos about 85 % of the mirrored image's own
    keypoints get this exact descriptor as nearest neighbour (the rest differ only by
    the image pyramid's sampling grid), which verification tolerates like any resize.
    """
    if keypoints.method != "sift":
        raise ValueError("only SIFT descriptors can be mirrored by permutation")
    xy = keypoints.xy.copy()
    xy[:, 0] = keypoints.width - 1 - xy[:, 0]
    return Keypoints(xy, keypoints.descriptors[:, _SIFT_MIRROR], keypoints.width, keypoints.height, keypoints.method)


def mirror_image(image: Image.Image) -> Image.Image:
    """The left-right mirror image (what ``extract_keypoints_with_mirror`` flips)."""
    return ImageOps.mirror(image)


def _working_gray(image: Image.Image, max_side: int, max_upscale: float) -> tuple[np.ndarray, tuple[float, float]]:
    """Grey uint8 array at working size, and the (sx, sy) factors original -> working."""
    import cv2

    if max_side < 16:
        raise ValueError("max_side must be at least 16")
    width, height = image.size
    if width < 1 or height < 1:
        raise ValueError("empty image")
    gray = np.asarray(image.convert("L"))
    factor = min(max_side / max(width, height), max_upscale)
    new_w = max(1, round(width * factor))
    new_h = max(1, round(height * factor))
    if (new_w, new_h) != (width, height):
        interp = cv2.INTER_AREA if factor < 1 else cv2.INTER_CUBIC
        gray = cv2.resize(gray, (new_w, new_h), interpolation=interp)
    return np.ascontiguousarray(gray), (new_w / width, new_h / height)


def _make_detector(method: str, max_keypoints: int):
    import cv2

    if method == "sift":
        # Detect more than we keep so that the spread selection has a choice.
        return cv2.SIFT_create(nfeatures=0)
    if method == "orb":
        return cv2.ORB_create(nfeatures=max(2 * max_keypoints, 500), edgeThreshold=15, patchSize=15)
    raise ValueError(f"unknown keypoint method {method!r}; use one of {METHODS}")


def _extract_from_gray(
    gray: np.ndarray,
    scale: tuple[float, float],
    size: tuple[int, int],
    method: str,
    max_keypoints: int,
) -> Keypoints:
    detector = _make_detector(method, max_keypoints)
    dim = DESCRIPTOR_SIZES[method]
    found, desc = detector.detectAndCompute(gray, None)
    if not found or desc is None:
        return Keypoints(np.zeros((0, 2), np.float32), np.zeros((0, dim), np.uint8), *size, method)
    pts = np.array([k.pt for k in found], dtype=np.float32).reshape(-1, 2)
    response = np.array([k.response for k in found], dtype=np.float32)
    keep = spread_select(pts, response, gray.shape[1], gray.shape[0], max_keypoints)
    pts, desc = pts[keep], desc[keep]
    if method == "sift":
        desc = np.clip(np.rint(desc), 0, 255)
    # Working pixel centre (x + 0.5) / s - 0.5 back in original pixels.
    xy = (pts + 0.5) / np.array(scale, dtype=np.float32) - 0.5
    return Keypoints(xy.astype(np.float32), desc.astype(np.uint8), size[0], size[1], method)


def spread_select(
    xy: np.ndarray, response: np.ndarray, width: int, height: int, k: int, grid: int = SPREAD_GRID
) -> np.ndarray:
    """Indices of at most ``k`` points: strongest first, in rounds over a grid.

    Each round takes up to ``k // grid**2`` of the best remaining points of every cell,
    so weak but isolated points beat a surplus of strong points in one busy cell only
    after every cell has had its share.
    """
    n = len(xy)
    if n <= k:
        return np.argsort(-response, kind="stable")
    cx = np.clip((xy[:, 0] * grid / max(width, 1)).astype(int), 0, grid - 1)
    cy = np.clip((xy[:, 1] * grid / max(height, 1)).astype(int), 0, grid - 1)
    order = np.argsort(-response, kind="stable")
    cells = (cy * grid + cx)[order]
    by_cell = np.argsort(cells, kind="stable")
    sorted_cells = cells[by_cell]
    rank = np.empty(n, dtype=np.int64)
    rank[by_cell] = np.arange(n) - np.searchsorted(sorted_cells, sorted_cells, side="left")
    quota = max(1, k // (grid * grid))
    chosen = np.lexsort((np.arange(n), rank // quota))[:k]
    return order[chosen]
