"""Points in a reply, scored against a mask: Where2Place's rules.

Parsing follows RoboPoint's `text2pts` (robopoint/eval/summarize_vqa.py): every "(…)" tuple of numbers
("(0.25, 0.5)", "(120,40)", signs allowed, no space before a comma); a number with a "." is a float.
  2 numbers  a point; if either is a float both are fractions of the image size (int(x·width),
             int(y·height), truncated), else pixels
  4 numbers  a box x0, y0, x1, y1, standing for every pixel of mask[y0:y1, x0:x1] (numpy slicing, so a
             negative start counts from the far edge as there); fractions when the FIRST number is a
             float. A box whose first number is an integer and another a float makes RoboPoint's
             slicing fail and its summary skip the question; here the reply scores 0 and says why, so
             a malformed reply cannot leave the denominator
  other      ignored
FlagEvalMM's embodied_verse task (tasks/embodied_verse/evaluate.py) parses the same way but only the
reply's last line.

Score: the mean of the mask (pixel / 255) under the points, a point outside the image counting 0
(summarize_vqa); no point: 0. FlagEvalMM's verdict: right when that mean is ≥ 0.5 (is_point_answer_correct).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flageval.datasets.images import ImageError

_TUPLE = re.compile(r"\(([-+]?\d+\.?\d*(?:,\s*[-+]?\d+\.?\d*)*?)\)")
ACCEPT = 0.5  # FlagEvalMM's acceptance_threshold


@dataclass
class Points:
    points: list[tuple[int, int]] = field(default_factory=list)  # pixels
    boxes: list[tuple[int, int, int, int]] = field(default_factory=list)  # pixels, unclipped
    problem: str | None = None  # why the reply could not be read

    @property
    def empty(self) -> bool:
        return not self.points and not self.boxes

    def summary(self, limit: int = 50) -> dict[str, Any]:
        shown: dict[str, Any] = {"points": self.points[:limit], "boxes": self.boxes[:limit]}
        if self.problem:
            shown["problem"] = self.problem
        elif self.empty:
            shown["problem"] = "no point found in the reply"
        return shown


def _number(text: str) -> int | float:
    return float(text) if "." in text else int(text)


def parse_points(text: str, width: int, height: int, *, last_line: bool = False) -> Points:
    """The points and boxes of a reply (pixels of a width × height image)."""
    if last_line:
        text = text.strip().split("\n")[-1]
    found = Points()
    for match in _TUPLE.findall(text):
        vector = [_number(v) for v in match.split(",")]
        if len(vector) == 2:
            x, y = vector
            if isinstance(x, float) or isinstance(y, float):
                x, y = int(x * width), int(y * height)
            found.points.append((int(x), int(y)))
        elif len(vector) == 4:
            if isinstance(vector[0], float):
                x0, y0, x1, y1 = int(vector[0] * width), int(vector[1] * height), int(vector[2] * width), int(vector[3] * height)
            elif any(isinstance(v, float) for v in vector):
                return Points(problem=f"box ({match}) mixes pixels and fractions")
            else:
                x0, y0, x1, y1 = (int(v) for v in vector)
            found.boxes.append((x0, y0, x1, y1))
    return found


def mask_mean(found: Points, mask: Any) -> float:
    """summarize_vqa's accuracy of one reply: mean mask value (0–1) under its points; 0 without any."""
    if found.problem:
        return 0.0
    height, width = mask.shape[:2]
    total, count = 0.0, 0
    for x, y in found.points:
        count += 1
        if 0 <= x < width and 0 <= y < height:
            total += float(mask[y, x])
    for x0, y0, x1, y1 in found.boxes:
        window = mask[y0:y1, x0:x1]
        total += float(window.sum())
        count += int(window.size)
    return total / count if count else 0.0


def read_mask(path: Path, size: tuple[int, int]) -> Any:
    """The mask as floats 0–1 (first channel of a colour mask). Raises ImageError when it is missing,
    unreadable or not of `size` (width, height): its sample fails."""
    import numpy as np
    from PIL import Image

    if not path.is_file():
        raise ImageError(f"mask {path} is missing")
    try:
        with Image.open(path) as img:
            img.load()
            mask = np.asarray(img)
    except Exception as exc:  # noqa: BLE001 - any unreadable mask is this sample's fault
        raise ImageError(f"mask {path} cannot be decoded: {exc}") from None
    if (mask.shape[1], mask.shape[0]) != tuple(size):
        raise ImageError(f"mask {path} is {mask.shape[1]}×{mask.shape[0]} but its picture is {size[0]}×{size[1]}")
    if mask.ndim == 3:
        mask = mask[:, :, 0]
    return mask / 255.0


__all__ = ["ACCEPT", "Points", "mask_mean", "parse_points", "read_mask"]
