"""The closed vocabulary of MiniMMEB scenes, pages and prompts.

Colours come in near-identical pairs (red/crimson, ...) so that colour alone is a weak cue at 112 px;
the disambiguating detail of a scene is a dark dot smaller than a vision patch.
"""

from __future__ import annotations

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "star", "cross", "hexagon", "ring")

# name -> RGB; neighbours in this list are near misses of each other.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (214, 48, 49),
    "crimson": (190, 40, 70),
    "orange": (230, 126, 34),
    "amber": (240, 160, 40),
    "yellow": (241, 196, 15),
    "lime": (160, 210, 50),
    "green": (39, 174, 96),
    "teal": (22, 160, 133),
    "cyan": (52, 190, 219),
    "blue": (41, 98, 200),
    "violet": (142, 68, 173),
    "pink": (232, 90, 160),
}
COLOUR_NAMES: tuple[str, ...] = tuple(COLOURS)

SIZES: tuple[str, ...] = ("small", "large")

POSITIONS: tuple[str, ...] = (
    "top-left", "top", "top-right",
    "left", "centre", "right",
    "bottom-left", "bottom", "bottom-right",
)

MOTIONS: tuple[str, ...] = ("left", "right", "up", "down")

DOC_ITEMS: tuple[str, ...] = (
    "apples", "pears", "plums", "lemons", "cherries", "melons", "grapes", "figs",
    "bolts", "nails", "screws", "hinges", "valves", "gears", "springs", "pulleys",
    "paper", "ink", "pens", "folders", "stamps", "labels", "tape", "clips",
)
DOC_TOPICS: tuple[str, ...] = ("orchard", "hardware", "office", "harbour", "market", "workshop")
DOC_COLUMNS: tuple[str, ...] = ("item", "quantity", "price")


def corpus_lines() -> list[str]:
    """Text the tiny tokenizer is trained on: every word and template MiniMMEB and the T-CoT use."""
    lines: list[str] = []
    for shape in SHAPES:
        for colour in COLOUR_NAMES:
            for size in SIZES:
                lines.append(f"a {size} {colour} {shape} with a dark dot at the top-left of the image.")
                lines.append(f"the {colour} {shape} moves {MOTIONS[len(lines) % 4]} and flashes in frame 3.")
    for position in POSITIONS:
        lines.append(f"the object at the {position} carries a small dark dot; look at the crop.")
    for topic in DOC_TOPICS:
        lines.append(f"{topic} report, table of {', '.join(DOC_COLUMNS)}: " + ", ".join(DOC_ITEMS))
    lines += [
        "<thinking>The query asks for the marked object. I inspect each object. "
        '{"bbox_2d": [[120, 80, 260, 230]]}</thinking>',
        "<rethink>The dot is on the red star, not on the crimson star.</rethink><answer>small red star</answer>",
        '<thinking>Key frames show the motion. {"key_frames": [1, 4, 8]}</thinking>',
        '<thinking>Keywords name the page. {"text_keywords": ["apples", "price", "12"]}</thinking>',
        "Represent the given image with the following question: which object is marked?",
        "Find the image that matches the description. Find the video clip. Find the document page.",
        "Summarize the above content in one word:",
        "0 1 2 3 4 5 6 7 8 9 10 100 250 500 750 1000",
    ]
    return lines
