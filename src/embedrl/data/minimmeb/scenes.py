"""Scenes, clips and pages of MiniMMEB, and how they are drawn.

A scene holds 6-8 objects on a 3x3 grid; exactly one object, the *marked* one, carries a dark dot a
few pixels wide. At the stored 224 px the dot is visible; at the 112 px a tiny Embedder sees, it falls
inside one 14 px patch and mostly vanishes, while a crop of the object's box, upsampled, shows it.
A clip moves the objects of a scene over 8 frames; in exactly one frame one object *flashes* (drawn
white), a one-frame event that key frames resolve. A page is a rendered report with a table.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from embedrl.data.minimmeb.vocab import (
    COLOUR_NAMES,
    COLOURS,
    DOC_COLUMNS,
    DOC_ITEMS,
    MOTIONS,
    POSITIONS,
    SHAPES,
    SIZES,
)

IMAGE_SIZE = 224
FRAME_SIZE = 112
NUM_FRAMES = 8
PAGE_SIZE = (224, 224)
DOT_RADIUS = 2  # pixels at IMAGE_SIZE: below one 14 px patch once the image is downsampled
SIZE_PIXELS = {"small": 26, "large": 44}
FLASH_COLOUR = (250, 250, 250)
DOT_COLOUR = (20, 20, 20)


@dataclass(frozen=True)
class SceneObject:
    id: int
    shape: str
    colour: str
    size: str
    position: str
    dotted: bool = False

    @property
    def label(self) -> str:
        return f"{self.size} {self.colour} {self.shape}"

    @property
    def blind_key(self) -> tuple[str, str, str, str]:
        """What a viewer that cannot see the dot knows about the object."""
        return (self.shape, self.colour, self.size, self.position)


@dataclass(frozen=True)
class Scene:
    objects: tuple[SceneObject, ...]
    background: int  # grey level of the canvas

    @property
    def marked(self) -> SceneObject:
        return next(o for o in self.objects if o.dotted)

    @property
    def marked_id(self) -> int | None:
        return next((o.id for o in self.objects if o.dotted), None)

    def with_dot_on(self, object_id: int) -> Scene:
        objects = tuple(dataclasses.replace(o, dotted=o.id == object_id) for o in self.objects)
        return Scene(objects, self.background)

    def find(self, shape: str, colour: str, size: str) -> SceneObject | None:
        return next((o for o in self.objects if (o.shape, o.colour, o.size) == (shape, colour, size)), None)

    def blind_signature(self) -> tuple:
        return (tuple(sorted(o.blind_key for o in self.objects)), self.background)


def cell_centre(position: str, size: int = IMAGE_SIZE) -> tuple[float, float]:
    row, col = divmod(POSITIONS.index(position), 3)
    step = size / 3
    return (col + 0.5) * step, (row + 0.5) * step


def object_box(obj: SceneObject, size: int = IMAGE_SIZE, offset: tuple[float, float] = (0, 0)) -> list[int]:
    """Pixel box [x1, y1, x2, y2] of an object in an image of `size` pixels."""
    cx, cy = cell_centre(obj.position, size)
    half = SIZE_PIXELS[obj.size] * size / IMAGE_SIZE / 2
    cx, cy = cx + offset[0], cy + offset[1]
    return [round(cx - half), round(cy - half), round(cx + half), round(cy + half)]


def to_relative(box: list[int], width: int, height: int) -> list[int]:
    """Pixel box to Qwen-VL 0-1000 relative coordinates."""
    x1, y1, x2, y2 = box
    return [round(x1 * 1000 / width), round(y1 * 1000 / height), round(x2 * 1000 / width), round(y2 * 1000 / height)]


# ------------------------------------------------------------------------------------------ sampling
def sample_scene(rng: np.random.Generator, *, must_have: SceneObject | None = None) -> Scene:
    """6-8 objects of distinct shapes in distinct cells; one of them is marked with the dot."""
    n = int(rng.integers(6, 9))
    shapes = list(rng.permutation(SHAPES))[:n]
    cells = list(rng.permutation(POSITIONS))[:n]
    objects = []
    for i, (shape, cell) in enumerate(zip(shapes, cells, strict=True)):
        colour = str(rng.choice(COLOUR_NAMES))
        size = str(rng.choice(SIZES))
        objects.append(SceneObject(i, str(shape), colour, size, str(cell)))
    if must_have is not None:
        # Put the wanted object in place of the object of the same shape, or of the first one.
        slot = next((o for o in objects if o.shape == must_have.shape), objects[0])
        others = [o for o in objects if o is not slot and o.shape != must_have.shape]
        objects = [dataclasses.replace(must_have, id=0, position=slot.position, dotted=False)] + [
            dataclasses.replace(o, id=i + 1) for i, o in enumerate(others)
        ]
    marked = int(rng.integers(len(objects)))
    objects = [dataclasses.replace(o, dotted=o.id == marked) for o in objects]
    return Scene(tuple(objects), background=int(rng.integers(225, 246)))


def near_colour(colour: str) -> str:
    """The colour next to this one in the palette (red <-> crimson, ...): a near miss."""
    i = COLOUR_NAMES.index(colour)
    return COLOUR_NAMES[i + 1] if i % 2 == 0 else COLOUR_NAMES[i - 1]


# ------------------------------------------------------------------------------------------- drawing
def _polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if shape == "triangle":
        return [(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if shape == "diamond":
        return [(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)]
    if shape == "hexagon":
        return [(cx + r * np.cos(a), cy + r * np.sin(a)) for a in np.arange(6) * np.pi / 3]
    if shape == "star":
        points = []
        for k in range(10):
            radius = r if k % 2 == 0 else r * 0.45
            angle = -np.pi / 2 + k * np.pi / 5
            points.append((cx + radius * np.cos(angle), cy + radius * np.sin(angle)))
        return points
    if shape == "cross":
        t = r * 0.35
        return [
            (cx - t, cy - r), (cx + t, cy - r), (cx + t, cy - t), (cx + r, cy - t), (cx + r, cy + t),
            (cx + t, cy + t), (cx + t, cy + r), (cx - t, cy + r), (cx - t, cy + t), (cx - r, cy + t),
            (cx - r, cy - t), (cx - t, cy - t),
        ]
    raise ValueError(f"no polygon for shape {shape!r}")


def draw_object(
    draw: ImageDraw.ImageDraw, obj: SceneObject, size: int, *, offset=(0.0, 0.0), flash: bool = False
) -> None:
    x1, y1, x2, y2 = object_box(obj, size, offset)
    cx, cy, r = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2
    fill = FLASH_COLOUR if flash else COLOURS[obj.colour]
    if obj.shape == "circle":
        draw.ellipse([x1, y1, x2, y2], fill=fill)
    elif obj.shape == "square":
        draw.rectangle([x1 + r * 0.15, y1 + r * 0.15, x2 - r * 0.15, y2 - r * 0.15], fill=fill)
    elif obj.shape == "ring":
        draw.ellipse([x1, y1, x2, y2], outline=fill, width=max(2, round(r * 0.35)))
    else:
        draw.polygon(_polygon(obj.shape, cx, cy, r), fill=fill)
    if obj.dotted:
        d = DOT_RADIUS * size / IMAGE_SIZE
        # The dot sits on the body of every shape (a ring's body is its band, left of the centre).
        dx = -r * 0.82 if obj.shape == "ring" else 0.0
        draw.ellipse([cx + dx - d, cy - d, cx + dx + d, cy + d], fill=DOT_COLOUR)


def render_scene(scene: Scene, size: int = IMAGE_SIZE) -> Image.Image:
    image = Image.new("RGB", (size, size), (scene.background,) * 3)
    draw = ImageDraw.Draw(image)
    for obj in scene.objects:
        draw_object(draw, obj, size)
    return image


def scene_to_dict(scene: Scene, size: int = IMAGE_SIZE) -> dict:
    objects = []
    for o in scene.objects:
        box = object_box(o, size)
        objects.append(
            {"id": o.id, "shape": o.shape, "colour": o.colour, "size": o.size, "position": o.position,
             "detail": "dot" if o.dotted else None, "bbox": box, "bbox_2d": to_relative(box, size, size)}
        )
    return {"type": "image", "width": size, "height": size, "background": scene.background,
            "marked": scene.marked_id, "objects": objects}


def scene_from_dict(data: dict) -> Scene:
    objects = tuple(
        SceneObject(o["id"], o["shape"], o["colour"], o["size"], o["position"], o["detail"] == "dot")
        for o in data["objects"]
    )
    return Scene(objects, data["background"])


# --------------------------------------------------------------------------------------------- clips
_MOTION_STEP = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}


@dataclass(frozen=True)
class Clip:
    """Objects of a scene (no dot) moving for 8 frames; one object flashes in one frame."""

    scene: Scene
    motions: tuple[str, ...]  # one per object
    flash_object: int
    flash_frame: int  # 1-based

    def with_flash(self, object_id: int, frame: int) -> Clip:
        return dataclasses.replace(self, flash_object=object_id, flash_frame=frame)

    def motion_of(self, object_id: int) -> str:
        return self.motions[object_id]


def sample_clip(rng: np.random.Generator) -> Clip:
    base = sample_scene(rng)
    n = int(rng.integers(3, 6))
    objects = tuple(dataclasses.replace(o, dotted=False) for o in base.objects[:n])
    motions = tuple(str(rng.choice(MOTIONS)) for _ in objects)
    return Clip(Scene(objects, base.background), motions, int(rng.integers(n)), int(rng.integers(1, NUM_FRAMES + 1)))


def _offset(motion: str, frame: int, size: int) -> tuple[float, float]:
    dx, dy = _MOTION_STEP[motion]
    travel = (frame - (NUM_FRAMES + 1) / 2) * size / 3 / NUM_FRAMES  # up to half a cell either way
    return dx * travel, dy * travel


def clip_boxes(clip: Clip, frame: int, size: int = FRAME_SIZE) -> list[list[int]]:
    return [object_box(o, size, _offset(clip.motions[o.id], frame, size)) for o in clip.scene.objects]


def render_clip(clip: Clip, size: int = FRAME_SIZE, frames: range | None = None) -> list[Image.Image]:
    images = []
    for frame in frames or range(1, NUM_FRAMES + 1):
        image = Image.new("RGB", (size, size), (clip.scene.background,) * 3)
        draw = ImageDraw.Draw(image)
        for obj in clip.scene.objects:
            flash = obj.id == clip.flash_object and frame == clip.flash_frame
            draw_object(draw, obj, size, offset=_offset(clip.motions[obj.id], frame, size), flash=flash)
        images.append(image)
    return images


def clip_to_dict(clip: Clip, size: int = FRAME_SIZE) -> dict:
    objects = [
        {"id": o.id, "shape": o.shape, "colour": o.colour, "size": o.size, "start": o.position,
         "motion": clip.motions[o.id],
         "boxes": [clip_boxes(clip, f, size)[o.id] for f in range(1, NUM_FRAMES + 1)]}
        for o in clip.scene.objects
    ]
    return {"type": "video", "width": size, "height": size, "num_frames": NUM_FRAMES,
            "background": clip.scene.background, "objects": objects,
            "event": {"kind": "flash", "object": clip.flash_object, "frame": clip.flash_frame}}


# --------------------------------------------------------------------------------------------- pages
@dataclass(frozen=True)
class Page:
    """A report page: a title naming its topic and a table of (item, quantity, price) rows."""

    topic: str
    number: int
    rows: tuple[tuple[str, int, int], ...]
    highlight_row: int = field(default=-1)

    @property
    def title(self) -> str:
        return f"{self.topic} report {self.number}"


def sample_page(rng: np.random.Generator, topic: str, number: int) -> Page:
    items = list(rng.permutation(DOC_ITEMS))[: int(rng.integers(4, 7))]
    rows = tuple((str(item), int(rng.integers(2, 100)), int(rng.integers(1, 50))) for item in items)
    return Page(topic, number, rows)


_PAGE_MARGIN = 10
_ROW_HEIGHT = 22
_TABLE_TOP = 56
_COLUMN_X = (10, 110, 165)


def row_box(page_row: int, width: int = PAGE_SIZE[0]) -> list[int]:
    """Pixel box of a table row (0-based) on a rendered page."""
    top = _TABLE_TOP + (page_row + 1) * _ROW_HEIGHT
    return [_PAGE_MARGIN - 4, top - 2, width - _PAGE_MARGIN + 4, top + _ROW_HEIGHT - 4]


def render_page(page: Page) -> Image.Image:
    width, height = PAGE_SIZE
    image = Image.new("RGB", PAGE_SIZE, (252, 252, 248))
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=12)
    small = ImageFont.load_default(size=10)
    draw.text((_PAGE_MARGIN, 8), page.title, fill=(20, 20, 60), font=font)
    draw.text((_PAGE_MARGIN, 28), f"stock list of the {page.topic}", fill=(90, 90, 90), font=small)
    header = _TABLE_TOP
    for x, name in zip(_COLUMN_X, DOC_COLUMNS, strict=True):
        draw.text((x, header), name, fill=(0, 0, 0), font=small)
    draw.line([(_PAGE_MARGIN - 4, header + 16), (width - _PAGE_MARGIN + 4, header + 16)], fill=(0, 0, 0))
    for r, (item, quantity, price) in enumerate(page.rows):
        y = header + (r + 1) * _ROW_HEIGHT
        for x, value in zip(_COLUMN_X, (item, str(quantity), f"{price}.00"), strict=True):
            draw.text((x, y), value, fill=(30, 30, 30), font=small)
    return image


def page_to_dict(page: Page) -> dict:
    width, height = PAGE_SIZE
    cells = [
        {"row": r, "item": item, "quantity": quantity, "price": price,
         "bbox": row_box(r), "bbox_2d": to_relative(row_box(r), width, height)}
        for r, (item, quantity, price) in enumerate(page.rows)
    ]
    return {"type": "page", "width": width, "height": height, "topic": page.topic, "title": page.title,
            "rows": cells}


def dumps(data: dict) -> str:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)
