"""Image regions: reference crops indexed beside the whole image, and query views.

A stolen profile photo is often a tight crop around the face, so each reference is also
indexed by a few crops: centred ones (the subject of a portfolio or portrait photo sits
near the centre) and squares centred on the subject's face (:mod:`.faces`; without a
detected face, on where a portrait puts it). On the query side, borders (uniform,
blurred or letterbox) are stripped and the photo-like areas inside a page are cut out
(:mod:`.pages` finds both), a round avatar's disc, or a circle on a page (:mod:`.avatars`
finds both), is cut to the square inside it, detected faces give squares of the same
sizes as the references' face squares, and the mirrored image is tried too; the best
score over all (view, region) pairs wins.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Sequence, Union

from PIL import Image, ImageOps

from .avatars import disc_square, inscribed_square, round_avatars, squarish
from .faces import Face, detect_faces
from .pages import content_box, photo_boxes

Box = tuple[float, float, float, float]  # fractions of width/height: x0, y0, x1, y1


@dataclass(frozen=True)
class SubjectSquare:
    """A square centred on the subject's face, ``scale`` face sizes wide.

    It is clipped to the image (a face at the edge gives a rectangle). Without a detected
    face, the portrait prior :data:`PRIOR_FACE` stands in for it.
    """

    scale: float


RegionSpec = Union[Box, SubjectSquare]
WHOLE: Box = (0.0, 0.0, 1.0, 1.0)

#: Region 0 is always the whole image; then centred crops of 80% and 55% of the side, and
#: squares of 0.8 and 1.2 face sizes around the face: the tight avatars (a square keeping
#: 40-80 % of a portrait's short side) that the centred crops miss.
DEFAULT_REGIONS: tuple[RegionSpec, ...] = (
    WHOLE,
    (0.1, 0.1, 0.9, 0.9),
    (0.225, 0.225, 0.775, 0.775),
    SubjectSquare(0.8),
    SubjectSquare(1.2),
)
#: The centred crops alone (3 vectors per reference instead of 5): for collections where
#: memory per reference matters more than tight avatars.
CENTRED_REGIONS: tuple[RegionSpec, ...] = DEFAULT_REGIONS[:3]
#: Named region sets for the command line (``provenance reindex --regions``).
REGION_SETS: dict[str, tuple[RegionSpec, ...]] = {"default": DEFAULT_REGIONS, "centred": CENTRED_REGIONS}
#: Where a portrait puts the face when none is detected: (centre x, centre y, size), as
#: fractions of the width, the height and the shorter side.
PRIOR_FACE = (0.5, 0.45, 0.4)
#: Detection side for references (decoded once, many per second) and for queries that
#: are pages (the face of an avatar in a page screenshot is small); a query that is a
#: photo is detected at the references' side (:func:`face_detect_side`).
REFERENCE_DETECT_SIDE = 192
QUERY_DETECT_SIDE = 320
#: A centred crop whose box overlaps a face square of the same reference this much (IoU) is
#: not indexed: the square's vector stands for it. On a portrait the 55 % crop and the
#: 1.2-face square are nearly the same pixels (IoU 0.90 at the median on the dev portraits).
COVERED_IOU = 0.8
#: A query view is small (:func:`small_views`) when its longer side is at most this many
#: pixels: an avatar served at 64 px and shown three times larger by a screenshot.
SMALL_VIEW_SIDE = 200
#: ... and its shorter side at least this many (the square inside a 48-px round avatar: 34).
MIN_VIEW_SIDE = 32
#: The name of the views cut around the photo-like areas of a page (``photo0``, ...).
PHOTO_VIEW = "photo"
#: A photo-like area covering more than this share of the query's area is the query's own
#: photo (a portrait's figure before a plain backdrop, a story's photo between its bars),
#: not a photo that a page shows small: it alone does not make the query a page
#: (:func:`on_a_page`), and it is no avatar (:func:`small_views`).
PAGE_PHOTO_SHARE = 0.5
#: The name of the views cut inside the circles :func:`round_avatars` finds (``circle0``, ...).
CIRCLE_VIEW = "circle"
#: Appended to a photo view's name for the square inscribed in it (``photo0-inner``).
INNER_SUFFIX = "-inner"
#: Their side, in inscribed-square sides. The embedder sees 0.95 of the inscribed square:
#: pure photo. Verification sees 1.2 (0.85 of the circle's diameter): the corners show a
#: little of the page, but the disc's rim holds many of the keypoints that verify a profile
#: page's avatar (on the dev eval's failed screenshots the inscribed square kept 5-15
#: ratio-test matches to the true reference, this square 16-28).
CIRCLE_EMBEDDED_SIDE = 0.95
CIRCLE_VIEW_SIDE = 1.2


def spec_to_json(spec: RegionSpec) -> Any:
    """The manifest's form of a region: a box as 4 numbers, a face square as a dict."""
    if isinstance(spec, SubjectSquare):
        return {"subject_square": float(spec.scale)}
    return [float(value) for value in spec]


def spec_from_json(value: Any) -> RegionSpec:
    """Inverse of :func:`spec_to_json` (raises ValueError on anything else)."""
    if isinstance(value, dict) and set(value) == {"subject_square"}:
        scale = float(value["subject_square"])
        if not 0.1 <= scale <= 10:
            raise ValueError(f"subject square scale {scale} out of range")
        return SubjectSquare(scale)
    box = tuple(float(v) for v in value)
    if len(box) != 4 or not (0 <= box[0] < box[2] <= 1 and 0 <= box[1] < box[3] <= 1):
        raise ValueError(f"bad region box {value!r}")
    return box  # type: ignore[return-value]


def needs_faces(specs: Sequence[RegionSpec]) -> bool:
    return any(isinstance(spec, SubjectSquare) for spec in specs)


def smallest_fraction(specs: Sequence[RegionSpec]) -> float:
    """The smallest side any region may take, as a fraction of the image's (decode size)."""
    sides = [min(spec[2] - spec[0], spec[3] - spec[1]) for spec in specs if not isinstance(spec, SubjectSquare)]
    sides += [spec.scale * PRIOR_FACE[2] * 0.6 for spec in specs if isinstance(spec, SubjectSquare)]
    return max(0.1, min(sides))


def subject_box(size: tuple[int, int], face: Face | None, scale: float) -> tuple[int, int, int, int]:
    """Pixel box of a square ``scale`` face sizes wide around ``face`` (or the prior), clipped."""
    width, height = size
    if face is None:
        cx, cy, fraction = PRIOR_FACE
        centre, face_size = (cx * width, cy * height), fraction * min(width, height)
    else:
        centre, face_size = face.centre, face.size
    half = max(4.0, scale * face_size / 2)
    x0, y0 = max(0, round(centre[0] - half)), max(0, round(centre[1] - half))
    x1, y1 = min(width, round(centre[0] + half)), min(height, round(centre[1] + half))
    return x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)


def region_images(image: Image.Image, specs: Sequence[RegionSpec], face: Face | None = None) -> list[Image.Image]:
    """The crop of ``image`` for every region (``face``: the detected subject, or None)."""
    return [image.crop(subject_box(image.size, face, spec.scale)) if isinstance(spec, SubjectSquare)
            else crop_fraction(image, spec) for spec in specs]


def region_box(size: tuple[int, int], spec: RegionSpec, face: Face | None) -> tuple[float, float, float, float]:
    """Pixel box of one region of an image of ``size`` (as :func:`region_images` crops it)."""
    if isinstance(spec, SubjectSquare):
        return tuple(float(v) for v in subject_box(size, face, spec.scale))  # type: ignore[return-value]
    width, height = size
    return spec[0] * width, spec[1] * height, spec[2] * width, spec[3] * height


def box_area(box: Sequence[float]) -> float:
    """The area of an (x0, y0, x1, y1) box."""
    return (box[2] - box[0]) * (box[3] - box[1])


def box_iou(first: Sequence[float], second: Sequence[float]) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes."""
    inter_w = max(0.0, min(first[2], second[2]) - max(first[0], second[0]))
    inter_h = max(0.0, min(first[3], second[3]) - max(first[1], second[1]))
    inter = inter_w * inter_h
    union = box_area(first) + box_area(second) - inter
    return inter / union if union > 0 else 0.0


def covered_regions(size: tuple[int, int], specs: Sequence[RegionSpec], face: Face | None,
                    min_iou: float = COVERED_IOU) -> frozenset[int]:
    """Numbers of the centred crops that a face square of the same image already covers
    (box IoU ≥ ``min_iou``): their vector would repeat the square's. Region 0 is never one."""
    squares = [region_box(size, spec, face) for spec in specs if isinstance(spec, SubjectSquare)]
    return frozenset(number for number, spec in enumerate(specs)
                     if number > 0 and not isinstance(spec, SubjectSquare)
                     and any(box_iou(region_box(size, spec, face), square) >= min_iou for square in squares))


def indexed_region_images(image: Image.Image, specs: Sequence[RegionSpec],
                          face: Face | None = None) -> dict[int, Image.Image]:
    """The crops a reference is indexed by, by region number: every region of ``specs`` but
    the centred crops a face square covers (:func:`covered_regions`)."""
    skipped = covered_regions(image.size, specs, face)
    kept = [number for number in range(len(specs)) if number not in skipped]
    return dict(zip(kept, region_images(image, [specs[number] for number in kept], face)))


def reference_face(image: Image.Image, specs: Sequence[RegionSpec]) -> Face | None:
    """The face the reference's subject squares centre on (the largest), if they need one."""
    if not needs_faces(specs):
        return None
    faces = detect_faces(image, max_faces=1, side=REFERENCE_DETECT_SIDE)
    return faces[0] if faces else None


def crop_fraction(image: Image.Image, box: Box) -> Image.Image:
    """Crop ``image`` to a fractional box."""
    if box == (0.0, 0.0, 1.0, 1.0):
        return image
    width, height = image.size
    x0, y0, x1, y1 = box
    pixels = (round(x0 * width), round(y0 * height), max(round(x1 * width), round(x0 * width) + 1),
              max(round(y1 * height), round(y0 * height) + 1))
    return image.crop(pixels)


@dataclass(frozen=True)
class QueryView:
    """One version of the query image that is embedded and searched.

    ``evidence``: whether geometric verification may judge a copy on this view alone. A
    square cut around a detected face is not: it drops the background and clothing that
    tell two photos of one shoot apart (three such pairs verified on 0.8-face squares
    with 15-19 inliers), so a candidate it finds is verified on the query's own frames.
    """

    name: str
    image: Image.Image
    mirrored: bool
    evidence: bool = True
    box: tuple[int, int, int, int] | None = None  # where the view was cut from the query, in its pixels
    embedded: Image.Image | None = None  # what the embedder sees, when not all of ``image``

    @property
    def embedding_image(self) -> Image.Image:
        return self.image if self.embedded is None else self.embedded


def query_views(image: Image.Image, mirror: bool = True, strip: bool = True, photos: bool = True,
                face_scales: Sequence[float] = (), disc: bool = True, circles: bool = True) -> list[QueryView]:
    """The views searched for a query.

    As given; without borders; the square inside a round avatar's disc; on a page (a query
    with a photo-like area covering at most :data:`PAGE_PHOTO_SHARE` of it), the squares
    inside the round avatars found anywhere in it (a profile page's avatar); squares of
    ``face_scales`` face sizes around the largest detected face (the references' face
    squares); the photo-like areas inside it (a screenshot's photo, an avatar); and the
    mirror images of all but the photo areas.
    ``circles`` is honoured on pages only, whether or not ``photos`` adds their areas as views.
    """
    def cut(name: str, box: tuple[int, int, int, int], evidence: bool = True) -> QueryView:
        return QueryView(name, image.crop(box), False, evidence, box)

    views = [whole_view(image)]
    # an area smaller than the smallest evidence view holds too little to tell one photo from another
    areas = [box for box in photo_boxes(image) if _side(box) >= MIN_VIEW_SIDE] if photos or circles else []
    if strip:
        box = content_box(image)
        if box is not None:
            views.append(cut("stripped", box))
    if disc:
        inner = disc_square(views[-1].image)
        if inner is not None:
            x, y = views[-1].box[:2]
            views.append(cut("disc", (inner[0] + x, inner[1] + y, inner[2] + x, inner[3] + y)))
    if circles and any(_shown_small(box, views[0].box) for box in areas):
        # a round avatar is a page's: on a photo the Hough transform finds circles in texture (a
        # third of the dev negatives have one), each verified against every candidate; a circle
        # smaller than the smallest evidence view is texture too
        for number, box in enumerate(box for box in round_avatars(image, QUERY_DETECT_SIDE) if _side(box) >= MIN_VIEW_SIDE):
            frame, inner = inscribed_square(box, CIRCLE_VIEW_SIDE), inscribed_square(box, CIRCLE_EMBEDDED_SIDE)
            inside = (inner[0] - frame[0], inner[1] - frame[1], inner[2] - frame[0], inner[3] - frame[1])
            view = cut(f"{CIRCLE_VIEW}{number}", frame)
            views.append(replace(view, embedded=view.image.crop(inside)))
    views += face_views(image, face_scales)
    mirrored = mirror_views(views) if mirror else []
    if photos:
        for number, box in enumerate(areas):
            views.append(cut(f"{PHOTO_VIEW}{number}", box))
            if squarish(box):
                # a round avatar hides the square's corners: its inscribed square is pure photo
                views.append(cut(f"{PHOTO_VIEW}{number}{INNER_SUFFIX}", inscribed_square(box)))
    return views + mirrored


def _side(box: tuple[int, int, int, int]) -> int:
    return min(box[2] - box[0], box[3] - box[1])


def _shown_small(area: tuple[int, int, int, int], whole: tuple[int, int, int, int]) -> bool:
    """Whether a photo-like ``area`` is one a page shows (:data:`PAGE_PHOTO_SHARE`), not the query's own photo."""
    return box_area(area) <= PAGE_PHOTO_SHARE * box_area(whole)


def circle_views(views: Sequence[QueryView]) -> list[int]:
    """Numbers of the unmirrored views cut inside a round avatar found in the query."""
    return [number for number, view in enumerate(views) if view.name.startswith(CIRCLE_VIEW) and not view.mirrored]


def on_a_page(views: Sequence[QueryView]) -> bool:
    """Whether the query is a page around photos: a photo-like area that covers at most
    :data:`PAGE_PHOTO_SHARE` of it gave a view."""
    return bool(page_photos(views))


def page_photos(views: Sequence[QueryView]) -> list[int]:
    """Numbers of the unmirrored views cut from photo-like areas (or inside them) that cover
    at most :data:`PAGE_PHOTO_SHARE` of the query."""
    if not views or views[0].box is None:
        return []
    areas = {view.name: view.box for view in views if view.name.startswith(PHOTO_VIEW) and view.box is not None}
    chosen = []
    for number, view in enumerate(views):
        area = areas.get(view.name.removesuffix(INNER_SUFFIX)) if not view.mirrored else None
        if area is not None and _shown_small(area, views[0].box):
            chosen.append(number)
    return chosen


def face_detect_side(views: Sequence[QueryView]) -> int:
    """The side a query's faces are detected at: a page (:func:`on_a_page`) shows the photo,
    and its face, small; a photo shows its subject as large as the reference it may copy
    (whose face was found at :data:`REFERENCE_DETECT_SIDE`), or larger when cropped."""
    return QUERY_DETECT_SIDE if on_a_page(views) else REFERENCE_DETECT_SIDE


def small_views(views: Sequence[QueryView], circles: bool = True) -> list[int]:
    """Numbers of the unmirrored evidence views that are small and square-ish: an avatar's
    photo box or disc on a screenshot, or a small query as a whole (at most
    :data:`SMALL_VIEW_SIDE` pixels, at least :data:`MIN_VIEW_SIDE`); with ``circles=False``,
    not those cut inside a circle. A photo area that is most of the query is its own photo,
    no avatar (:data:`PAGE_PHOTO_SHARE`).
    """
    chosen = []
    shown_small = set(page_photos(views))
    for number, view in enumerate(views):
        width, height = view.image.size
        if view.mirrored or not view.evidence or min(width, height) < MIN_VIEW_SIDE:
            continue
        if not circles and view.name.startswith(CIRCLE_VIEW):
            continue
        if view.name.startswith(PHOTO_VIEW) and number not in shown_small:
            continue
        if max(width, height) <= SMALL_VIEW_SIDE and squarish((0, 0, width, height), 1.3):
            chosen.append(number)
    return chosen


def whole_view(image: Image.Image) -> QueryView:
    """The query as given: always the first of its views."""
    return QueryView("full", image, False, True, (0, 0, image.size[0], image.size[1]))


def face_views(image: Image.Image, face_scales: Sequence[float], side: int = QUERY_DETECT_SIDE) -> list[QueryView]:
    """Squares of ``face_scales`` face sizes around the largest detected face (the references'
    face squares); not evidence on their own (:class:`QueryView`)."""
    if not face_scales:
        return []
    views = []
    for face in detect_faces(image, max_faces=1, side=side):
        for scale in face_scales:
            box = subject_box(image.size, face, scale)
            views.append(QueryView(f"face{scale:g}", image.crop(box), False, False, box))
    return views


def mirror_views(views: Sequence[QueryView]) -> list[QueryView]:
    """The mirror images of ``views`` (named ``NAME+mirror``)."""
    return [QueryView(view.name + "+mirror", ImageOps.mirror(view.image), True, view.evidence, view.box,
                      None if view.embedded is None else ImageOps.mirror(view.embedded)) for view in views]
