"""Images in chat requests, as FlagEvalMM's http client sends them.

An image is read, converted to RGB, re-encoded as JPEG at quality 95 and sent as a base64 data URL
(always `data:image/jpeg;base64,`). The user text is split at `<image N>` placeholders and each image
goes in its place; whitespace-only text pieces are dropped, the others are kept verbatim. Resizing
happens only when a limit is set (FlagEvalMM's defaults set none).
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flageval.engine.redact import DATA_URL

JPEG_QUALITY = 95
DATA_URL_PREFIX = "data:image/jpeg;base64,"
PLACEHOLDER = re.compile(r"<image \d+>")
_SPLIT = re.compile(r"(<image \d+>)")

ENV_MAX_LONG_SIDE = "FLAGEVAL_MM_MAX_LONG_SIDE"
ENV_MAX_BYTES = "FLAGEVAL_MM_MAX_IMAGE_BYTES"
ENV_MIN_SHORT_SIDE = "FLAGEVAL_MM_MIN_SHORT_SIDE"


class ImageError(Exception):
    """A sample's image cannot be sent (missing, unreadable, not an image, bad placeholder)."""


def _positive(value: Any, name: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive integer, got {value!r}") from None
    if number < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return number


@dataclass(frozen=True)
class ImageSettings:
    """Optional limits, FlagEvalMM's model-config knobs of the same meaning (None: off, its default).

    max_long_side: downscale so that the longer side is at most this many pixels (`max_long_side`).
    min_short_side: pad with white, at the bottom and right, up to this size (`min_short_side`).
    max_bytes: when the base64 text is longer than this, downscale once by the square root of the
      ratio and encode again (`max_image_size`; like FlagEvalMM, one pass, so the result is close to
      the limit rather than guaranteed under it).
    """

    max_long_side: int | None = None
    max_bytes: int | None = None
    min_short_side: int | None = None

    def __post_init__(self) -> None:
        for name in ("max_long_side", "max_bytes", "min_short_side"):
            object.__setattr__(self, name, _positive(getattr(self, name), name))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ImageSettings:
        env = os.environ if environ is None else environ
        return cls(
            max_long_side=_positive(env.get(ENV_MAX_LONG_SIDE), ENV_MAX_LONG_SIDE),
            max_bytes=_positive(env.get(ENV_MAX_BYTES), ENV_MAX_BYTES),
            min_short_side=_positive(env.get(ENV_MIN_SHORT_SIDE), ENV_MIN_SHORT_SIDE),
        )

    @property
    def resizes(self) -> bool:
        return any(v is not None for v in (self.max_long_side, self.max_bytes, self.min_short_side))


def _jpeg_base64(img: Any) -> str:
    with io.BytesIO() as out:
        img.save(out, format="JPEG", quality=JPEG_QUALITY)
        return base64.b64encode(out.getvalue()).decode("ascii")


def encode_image(path: str | os.PathLike[str], settings: ImageSettings | None = None, *,
                 data: bytes | None = None) -> str:
    """The base64 JPEG text of one image file (no data-URL prefix), or of `data`, an encoded picture
    held elsewhere (e.g. in a TFRecord) that `path` names. Raises ImageError."""
    from PIL import Image  # the mm extra; only image datasets need it

    settings = settings or ImageSettings()
    path = Path(path)
    try:
        with Image.open(path if data is None else io.BytesIO(data)) as opened:
            img = opened if opened.mode == "RGB" else opened.convert("RGB")
            img.load()
            if settings.max_long_side is not None and max(img.size) > settings.max_long_side:
                scale = settings.max_long_side / max(img.size)
                img = img.resize((math.floor(img.width * scale), math.floor(img.height * scale)))
            if settings.min_short_side is not None and min(img.size) < settings.min_short_side:
                padded = Image.new("RGB", (max(settings.min_short_side, img.width),
                                           max(settings.min_short_side, img.height)), (255, 255, 255))
                padded.paste(img, (0, 0))
                img = padded
            encoded = _jpeg_base64(img)
            if settings.max_bytes is not None and len(encoded) > settings.max_bytes:
                scale = math.sqrt(len(encoded) / settings.max_bytes)
                img = img.resize((math.floor(img.width / scale), math.floor(img.height / scale)))
                encoded = _jpeg_base64(img)
            return encoded
    except FileNotFoundError:
        raise ImageError(f"image {path} is missing") from None
    except IsADirectoryError:
        raise ImageError(f"image {path} is a directory") from None
    except PermissionError:
        raise ImageError(f"image {path} cannot be read: permission denied") from None
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for bad files; each is this sample's fault
        reason = str(exc) or type(exc).__name__
        raise ImageError(f"image {path} cannot be decoded: {reason}") from None


def image_data_url(path: str | os.PathLike[str], settings: ImageSettings | None = None) -> str:
    return DATA_URL_PREFIX + encode_image(path, settings)


def image_part(url: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url}}


def placeholder_numbers(text: str) -> list[int]:
    return [int(tag[7:-1]) for tag in PLACEHOLDER.findall(text)]


def check_placeholders(text: str, n_images: int) -> None:
    """FlagEvalMM refuses a question whose `<image N>` has no N-th image (the sample then fails)."""
    bad = [n for n in placeholder_numbers(text) if not 1 <= n <= n_images]
    if bad:
        raise ImageError(f"the question refers to <image {bad[0]}> but the sample has {n_images} image(s)")


def content_parts(text: str, images: Sequence[str]) -> list[dict[str, Any]]:
    """OpenAI content parts: `text` split at `<image N>` with images[N-1] (a URL) in each place.

    Without any placeholder, all images follow the text. Raises ImageError for a placeholder that
    names no image.
    """
    check_placeholders(text, len(images))
    parts: list[dict[str, Any]] = []
    referenced = False
    for piece in _SPLIT.split(text):
        if not piece.strip():
            continue
        if PLACEHOLDER.fullmatch(piece):
            referenced = True
            parts.append(image_part(images[int(piece[7:-1]) - 1]))
        else:
            parts.append({"type": "text", "text": piece})
    if not referenced:
        parts.extend(image_part(url) for url in images)
    return parts


def layout(parts: Sequence[Mapping[str, Any]]) -> list[str]:
    """The kinds of the parts in order, e.g. ['text', 'image_url', 'text']."""
    return [str(part.get("type")) for part in parts]


def decode_data_url(url: str) -> tuple[str, bytes]:
    """(media type, bytes) of a base64 data URL. Raises ValueError when it is not one."""
    match = DATA_URL.match(url)
    if not match:
        raise ValueError("not a base64 data URL")
    try:
        return match.group(1), base64.b64decode(url[match.end():], validate=True)
    except binascii.Error as exc:
        raise ValueError(f"bad base64: {exc}") from None


def image_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(width, height) from the file's header, without decoding the pixels."""
    from PIL import Image

    with Image.open(path) as img:
        return img.size


__all__ = [
    "DATA_URL_PREFIX",
    "ENV_MAX_BYTES",
    "ENV_MAX_LONG_SIDE",
    "ENV_MIN_SHORT_SIDE",
    "JPEG_QUALITY",
    "PLACEHOLDER",
    "ImageError",
    "ImageSettings",
    "check_placeholders",
    "content_parts",
    "decode_data_url",
    "encode_image",
    "image_data_url",
    "image_part",
    "image_size",
    "layout",
    "placeholder_numbers",
]
