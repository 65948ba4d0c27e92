"""Region proposals that ground the Reasoner: what a detector or an OCR engine would list for an input.

A tiny Reasoner trained in minutes invents objects when it must name them from pixels alone
(../shared/science.md: 66-95% of its traces named an object that is not there). A grounded Reasoner
instead chooses among the regions that are present: its prompt lists each one with its words and box
(and, for images, a sharp crop of it), and its T-CoT points at one of them. The choice, which region
holds the disambiguating detail, stays with the Reasoner: proposals never say which object carries
the dot, which object flashes, or which row a query is about.

On MiniMMEB the proposals come from the scene graph with the fine detail removed, standing in for a
detector (images: one box and label per object), a tracker (video: each object and its motion) and
OCR (pages: the title and every table row with its box). Data without scene graphs gets none, and the
Reasoner then writes from pixels and text alone. A text side can list its keywords (`text_regions`, what a
keyword spotter would find): a tiny Reasoner cannot copy words out of its prompt token by token (measured:
the same three garbled keywords for every text), while a mark costs it one choice per keyword.

**Marks** (set-of-mark prompting): a grounded Reasoner refers to region k as `#k` instead of writing
its words and box out. `to_marks` turns a full T-CoT (the teacher's) into that form for SFT;
`resolve_marks` turns the Reasoner's output back into a full T-CoT before anything reads it: `#k` in
prose becomes the region's words, `"#k"` in the cue's `bbox_2d` its box and in `text_keywords` its
words. A mark costs the Reasoner one choice among the regions present, so it cannot invent an object,
and a sampled rollout explores *which* region, the choice the reward is about.

**Back-references** (`back_references=True`): a trace names its first region several times (the
thinking, the box, the rethink, the answer). Written out, each repeat is one more choice among the
regions, and a small Reasoner trained from scratch makes each choice on its own (measured: the first
mark named the dotted region 71% of the time, the answer's mark 31%, all marks agreed in 18% of
traces). With back-references every later mention of the first region is `#=`, so the choice is made
once, where the trace first points; `resolve_marks` reads `#=` as that first mark. Other regions (a
composed query's second object, a page's other rows) stay written out.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image

from embedrl.data.minimmeb.scenes import to_relative
from embedrl.tcot.evidence import crops_from_boxes
from embedrl.tcot.teachers import side_frames, text_keywords

MAX_REGIONS = 8


@dataclass(frozen=True)
class Region:
    """One proposal: the words the prompt lists, its 0-1000 box (if any), and the words a mark resolves to.

    `keywords` are the cue keywords the region stands for (a table row: item, quantity, price);
    `aliases` other phrases that name it in a full T-CoT (an object without its position).
    """

    label: str
    box_2d: tuple[int, int, int, int] | None = None
    text: str = ""
    keywords: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()

    @property
    def words(self) -> str:
        return self.text or self.label

    def line(self, index: int, *, with_box: bool = True) -> str:
        box = f" {json.dumps(list(self.box_2d))}" if with_box and self.box_2d else ""
        return f"{index}. {self.label}{box}"


def region_proposals(scene: dict) -> list[Region]:
    """The proposals for a side's scene graph (empty for text sides and for data without scenes)."""
    kind = scene.get("type") if scene else None
    if kind == "image":
        return [Region(f"{o['size']} {o['colour']} {o['shape']} at the {o['position']}", tuple(o["bbox_2d"]),
                       aliases=(f"{o['size']} {o['colour']} {o['shape']}",)) for o in scene["objects"]][:MAX_REGIONS]
    if kind == "crop":
        return [_crop_region(scene)]
    if kind == "video":
        return [Region(f"{o['colour']} {o['shape']} moving {o['motion']}", text=f"{o['colour']} {o['shape']}")
                for o in scene["objects"]][:MAX_REGIONS]
    if kind == "page":
        rows = [Region(f"{r['item']} {r['quantity']} {r['price']}.00", tuple(r["bbox_2d"]),
                       keywords=(r["item"], str(r["quantity"]), f"{r['price']}.00")) for r in scene["rows"]]
        return [Region(f"title: {scene['title']}", text=scene["title"])] + rows[: MAX_REGIONS - 1]
    return []


def text_regions(text: str) -> list[Region]:
    """The proposals of a text side: its keywords, in order, one region each."""
    return [Region(word, keywords=(word,)) for word in text_keywords(text)][:MAX_REGIONS]


def _crop_region(scene: dict) -> Region:
    obj = scene["source"]["objects"][scene["object"]]
    x0, y0, x1, y1 = scene["box"]
    ox1, oy1, ox2, oy2 = obj["bbox"]
    w, h = x1 - x0, y1 - y0
    box = (max(0, round((ox1 - x0) * 1000 / w)), max(0, round((oy1 - y0) * 1000 / h)),
           min(1000, round((ox2 - x0) * 1000 / w)), min(1000, round((oy2 - y0) * 1000 / h)))
    return Region(f"{obj['size']} {obj['colour']} {obj['shape']}", box)


def region_crops(image: Image.Image, regions: list[Region], size: int) -> list[Image.Image]:
    """A square crop of `image` for every boxed region, resized to `size` px (the Reasoner's close-up)."""
    crops = []
    for region in regions:
        if region.box_2d is None:
            continue
        found = crops_from_boxes(image, _padded(region.box_2d), min_size=1, max_aspect=100.0)
        crops.append(found[0].resize((size, size), Image.BICUBIC) if found else image.resize((size, size)))
    return crops


def track_strips(frames: list[Image.Image], scene: dict, size: int) -> list[Image.Image]:
    """Per object of a clip side (a tracker's output), its crop in each of the side's frames, `size` px
    each, side by side in frame order: one strip image per object, in region order. A flash, the object
    drawn white for one frame, is one cell of the strip that differs from the rest."""
    first, _ = side_frames(scene)
    width, height = scene["width"], scene["height"]
    strips = []
    for obj in scene["objects"][:MAX_REGIONS]:
        strip = Image.new("RGB", (size * len(frames), size))
        for index, frame in enumerate(frames):
            box = to_relative(obj["boxes"][first - 1 + index], width, height)
            found = crops_from_boxes(frame, _padded(box), min_size=1, max_aspect=100.0)
            strip.paste((found[0] if found else frame).resize((size, size), Image.BICUBIC), (index * size, 0))
        strips.append(strip)
    return strips


def _padded(box: Sequence[int], share: float = 0.15) -> list[int]:
    x1, y1, x2, y2 = box
    px, py = round((x2 - x1) * share), round((y2 - y1) * share)
    return [max(0, x1 - px), max(0, y1 - py), min(1000, x2 + px), min(1000, y2 + py)]


# ------------------------------------------------------------------------------------------- marks
_MARK = re.compile(r"#(\d+)")
BACK_REFERENCE = "#="
_MARK_OR_BACK = re.compile(r"#(\d+|=)")
_CUE = re.compile(r"(\{[^{}]*(?:\[[^{}]*\][^{}]*)*\})\s*</thinking>", re.S)


def resolve_marks(text: str, regions: list[Region]) -> str:
    """The full T-CoT of a mark-form one. A mark with no such region stays as written (and the trace
    then fails to parse or names nothing): a wrong mark is the writer's mistake, never repaired."""
    if not regions or "#" not in text:
        return text
    text = _resolve_back_references(text)
    cue = _CUE.search(text)
    if cue is not None:
        resolved = _resolve_cue(cue.group(1), regions)
        text = text[:cue.start(1)] + resolved + text[cue.end(1):]
    return _MARK.sub(lambda m: _region(regions, m).words if _region(regions, m) else m.group(0), text)


def first_mark(text: str) -> int | None:
    """The region number of the first explicit mark (`#k`) of a mark-form trace; None if it has none."""
    match = _MARK.search(text)
    return int(match.group(1)) if match else None


def _resolve_back_references(text: str) -> str:
    """Each `#=` as the first explicit mark before it; one with no mark before it stays as written."""
    first: str | None = None

    def substitute(match: re.Match) -> str:
        nonlocal first
        if match.group(1) != "=":
            first = first or match.group(0)
            return match.group(0)
        return first or match.group(0)

    return _MARK_OR_BACK.sub(substitute, text)


def _with_back_references(text: str) -> str:
    """The mark form with every repeat of the first mark written `#=`."""
    first = _MARK.search(text)
    if first is None:
        return text
    repeat = re.compile(rf"{re.escape(first.group(0))}(?!\d)")
    head, tail = text[:first.end()], text[first.end():]
    return head + repeat.sub(BACK_REFERENCE, tail)


def _region(regions: list[Region], match: re.Match) -> Region | None:
    k = int(match.group(1))
    return regions[k - 1] if 1 <= k <= len(regions) else None


def _resolve_cue(raw: str, regions: list[Region]) -> str:
    try:
        cue = json.loads(raw)
    except json.JSONDecodeError:
        return raw
    if not isinstance(cue, dict):
        return raw
    out = dict(cue)
    if isinstance(cue.get("bbox_2d"), list):
        out["bbox_2d"] = [_mark_box(b, regions) for b in cue["bbox_2d"]]
    if isinstance(cue.get("text_keywords"), list):
        out["text_keywords"] = [w for k in cue["text_keywords"] for w in _mark_keywords(k, regions)]
    return json.dumps(out, ensure_ascii=False)


def _mark_box(item, regions: list[Region]):
    match = _MARK.fullmatch(item) if isinstance(item, str) else None
    region = _region(regions, match) if match else None
    return list(region.box_2d) if region is not None and region.box_2d is not None else item


def _mark_keywords(item, regions: list[Region]) -> list:
    match = _MARK.fullmatch(item) if isinstance(item, str) else None
    region = _region(regions, match) if match else None
    if region is None:
        return [item]
    return list(region.keywords) or [region.words]


def to_marks(text: str, regions: list[Region], *, back_references: bool = False) -> str:
    """The mark form of a full T-CoT (for SFT of a grounded Reasoner): each region's words become `#k`,
    each cue box that overlaps a region (IoU >= 0.3: a loose box around it too) `"#k"`, and each region's
    run of keywords `"#k"`; with `back_references`, each repeat of the first mark `#=`. Anything else
    stays as written."""
    if not regions:
        return text
    if back_references:
        return _with_back_references(to_marks(text, regions))
    cue = _CUE.search(text)
    if cue is not None:
        text = text[:cue.start(1)] + _cue_to_marks(cue.group(1), regions) + text[cue.end(1):]
    phrases = {(phrase, k) for k, r in enumerate(regions, 1) for phrase in (r.label, r.words, *r.aliases)}
    for phrase, k in sorted(phrases, key=lambda p: (-len(p[0]), p[1])):  # longest first: a label before its alias
        text = re.sub(rf"(?<![\w#]){re.escape(phrase)}(?!\w)", f"#{k}", text)
    return text


def _cue_to_marks(raw: str, regions: list[Region]) -> str:
    try:
        cue = json.loads(raw)
    except json.JSONDecodeError:
        return raw
    out = dict(cue)
    if isinstance(cue.get("bbox_2d"), list):
        out["bbox_2d"] = [_box_to_mark(b, regions) for b in cue["bbox_2d"]]
    if isinstance(cue.get("text_keywords"), list):
        out["text_keywords"] = _keywords_to_marks(cue["text_keywords"], regions)
    return json.dumps(out, ensure_ascii=False)


def _box_to_mark(box, regions: list[Region]):
    scored = [(_iou(box, r.box_2d), k) for k, r in enumerate(regions, 1) if r.box_2d is not None and not r.keywords]
    best = max(scored, default=(0.0, 0))
    return f"#{best[1]}" if best[0] >= 0.3 else box


def _keywords_to_marks(words: list, regions: list[Region]) -> list:
    out, i = [], 0
    runs = [(list(r.keywords), k) for k, r in enumerate(regions, 1) if r.keywords]
    while i < len(words):
        for run, k in runs:
            if words[i:i + len(run)] == run:
                out.append(f"#{k}")
                i += len(run)
                break
        else:
            out.append(words[i])
            i += 1
    return out


def _iou(a, b) -> float:
    ax1, ay1, ax2, ay2 = a
    bx1, by1, bx2, by2 = b
    w, h = min(ax2, bx2) - max(ax1, bx1), min(ay2, by2) - max(ay1, by1)
    inter = max(0, w) * max(0, h)
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
    return inter / union if union > 0 else 0.0
