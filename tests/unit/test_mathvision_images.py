"""Images in requests: encoding, limits, content parts, per-sample failures, missing data, laziness."""

from __future__ import annotations

import base64
import io
import json
import shutil
import tracemalloc
import weakref

import pytest
from flageval.datasets import DatasetError, default_data_dir, get_dataset
from flageval.datasets import mm as mm_module
from flageval.datasets.images import (
    ImageError,
    ImageSettings,
    content_parts,
    decode_data_url,
    encode_image,
    image_data_url,
)
from flageval.engine.redact import redact_data_urls
from PIL import Image

DATA = default_data_dir()
needs_data = pytest.mark.skipif(not (DATA / "mathvision" / "testmini.jsonl").is_file(), reason="no MathVision data")


def decoded(b64: str) -> Image.Image:
    img = Image.open(io.BytesIO(base64.b64decode(b64)))
    img.load()
    return img


# -- encoding ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["RGBA", "P", "L", "LA", "CMYK", "1", "RGB"])
def test_any_mode_is_sent_as_rgb_jpeg(tmp_path, mode):
    path = tmp_path / ("x.png" if mode != "CMYK" else "x.jpg")
    Image.new(mode, (31, 17)).save(path)
    img = decoded(encode_image(path))
    assert (img.format, img.mode, img.size) == ("JPEG", "RGB", (31, 17))


def test_jpeg_quality_95_as_pillow_would_write_it(tmp_path):
    path = tmp_path / "x.png"
    Image.effect_noise((64, 48), 40).convert("RGB").save(path)
    out = io.BytesIO()
    Image.open(path).convert("RGB").save(out, format="JPEG", quality=95)
    assert base64.b64decode(encode_image(path)) == out.getvalue()
    assert image_data_url(path).startswith("data:image/jpeg;base64,")


def test_limits(tmp_path):
    path = tmp_path / "wide.png"
    Image.effect_noise((400, 200), 60).convert("RGB").save(path)
    assert decoded(encode_image(path)).size == (400, 200)  # no limit: untouched
    assert decoded(encode_image(path, ImageSettings(max_long_side=100))).size == (100, 50)
    assert decoded(encode_image(path, ImageSettings(max_long_side=1000))).size == (400, 200)
    small = tmp_path / "small.png"
    Image.new("RGB", (50, 20), (0, 0, 0)).save(small)
    padded = decoded(encode_image(small, ImageSettings(min_short_side=30)))
    assert padded.size == (50, 30)
    assert padded.getpixel((10, 28))[0] > 240  # white padding below
    full = len(encode_image(path))
    limited = encode_image(path, ImageSettings(max_bytes=full // 4))
    assert len(limited) < full // 2  # one downscale by sqrt(ratio), as FlagEvalMM
    assert decoded(limited).size == (200, 100)


def test_settings_from_the_environment():
    env = {"FLAGEVAL_MM_MAX_LONG_SIDE": "1024", "FLAGEVAL_MM_MAX_IMAGE_BYTES": "", "FLAGEVAL_MM_MIN_SHORT_SIDE": "28"}
    assert ImageSettings.from_env(env) == ImageSettings(max_long_side=1024, min_short_side=28)
    assert not ImageSettings.from_env({}).resizes
    with pytest.raises(ValueError, match="FLAGEVAL_MM_MAX_LONG_SIDE must be a positive integer"):
        ImageSettings.from_env({"FLAGEVAL_MM_MAX_LONG_SIDE": "big"})


@needs_data
def test_bad_settings_are_a_dataset_error(monkeypatch):
    monkeypatch.setenv("FLAGEVAL_MM_MAX_IMAGE_BYTES", "-1")
    with pytest.raises(DatasetError, match="FLAGEVAL_MM_MAX_IMAGE_BYTES"):
        get_dataset("mathvision", DATA)


def test_unusable_files_raise_image_error(tmp_path):
    with pytest.raises(ImageError, match=r"image .*none\.jpg is missing"):
        encode_image(tmp_path / "none.jpg")
    (tmp_path / "text.jpg").write_text("not a picture")
    with pytest.raises(ImageError, match="cannot be decoded: cannot identify image file"):
        encode_image(tmp_path / "text.jpg")
    good = io.BytesIO()
    Image.effect_noise((200, 200), 50).convert("RGB").save(good, format="JPEG")
    (tmp_path / "cut.jpg").write_bytes(good.getvalue()[: len(good.getvalue()) // 2])
    with pytest.raises(ImageError, match="cannot be decoded: image file is truncated"):
        encode_image(tmp_path / "cut.jpg")
    (tmp_path / "dir.jpg").mkdir()
    with pytest.raises(ImageError, match="is a directory"):
        encode_image(tmp_path / "dir.jpg")


# -- content parts ----------------------------------------------------------------------------------

def test_parts_split_at_placeholders_with_text_kept_verbatim():
    parts = content_parts("Look:\n<image 1>\n  then <image 2> and\n<image 1>", ["u1", "u2"])
    assert parts == [
        {"type": "text", "text": "Look:\n"},
        {"type": "image_url", "image_url": {"url": "u1"}},
        {"type": "text", "text": "\n  then "},
        {"type": "image_url", "image_url": {"url": "u2"}},
        {"type": "text", "text": " and\n"},
        {"type": "image_url", "image_url": {"url": "u1"}},
    ]


def test_whitespace_only_pieces_are_dropped_and_unspaced_tags_are_text():
    parts = content_parts("<image 1>\n\n<image 2> <image1>", ["a", "b"])
    assert [p["type"] for p in parts] == ["image_url", "image_url", "text"]
    assert parts[2]["text"] == " <image1>"


def test_without_placeholders_images_follow_the_text():
    assert content_parts("question", ["a", "b"]) == [
        {"type": "text", "text": "question"},
        {"type": "image_url", "image_url": {"url": "a"}},
        {"type": "image_url", "image_url": {"url": "b"}},
    ]
    assert content_parts("question", []) == [{"type": "text", "text": "question"}]


def test_a_placeholder_without_its_image_is_refused():
    with pytest.raises(ImageError, match=r"refers to <image 2> but the sample has 1 image"):
        content_parts("a <image 1> b <image 2>", ["u"])
    with pytest.raises(ImageError, match=r"<image 0>"):
        content_parts("<image 0>", ["u"])


def test_data_urls_decode_and_redact():
    url = "data:image/jpeg;base64," + base64.b64encode(b"abc").decode()
    assert decode_data_url(url) == ("image/jpeg", b"abc")
    with pytest.raises(ValueError):
        decode_data_url("http://example.com/x.jpg")
    with pytest.raises(ValueError):
        decode_data_url("data:image/jpeg;base64,%%%")
    messages = [{"role": "user", "content": [{"type": "text", "text": "q"},
                                             {"type": "image_url", "image_url": {"url": url}}]}]
    assert redact_data_urls(messages, ["images/1.jpg"])[0]["content"][1] == {
        "type": "image_url", "image_url": {"url": "[image/jpeg base64, 4 chars: images/1.jpg]"}}
    assert messages[0]["content"][1]["image_url"]["url"] == url  # a copy


# -- a dataset with broken files ----------------------------------------------------------------------

def small_copy(tmp_path, ids=("4", "5", "6", "7")):
    """A mathvision folder holding a few of the shipped problems."""
    source = DATA / "mathvision"
    folder = tmp_path / "mathvision"
    (folder / "images").mkdir(parents=True)
    rows = [json.loads(line) for line in (source / "testmini.jsonl").read_text().splitlines()]
    chosen = [r for r in rows if r["id"] in ids]
    (folder / "testmini.jsonl").write_text("".join(json.dumps(r) + "\n" for r in chosen))
    for row in chosen:
        shutil.copy(source / row["image"], folder / row["image"])
    return folder


@needs_data
def test_a_corrupt_or_missing_image_fails_that_sample_only(tmp_path):
    folder = small_copy(tmp_path)
    (folder / "images" / "5.jpg").write_bytes(b"\xff\xd8\xff\xe0 broken")
    (folder / "images" / "7.jpg").unlink()
    dataset = get_dataset("mathvision", tmp_path)
    items = list(dataset.items("chat"))
    assert [len(i.bodies) for i in items] == [1, 0, 1, 0]
    assert items[1].meta.error.startswith("image ") and "5.jpg cannot be decoded" in items[1].meta.error
    assert items[3].meta.error.endswith("7.jpg is missing")
    records = [dataset.score(item, []) for item in items[1::2]]
    assert [r.error for r in records] == [items[1].meta.error, items[3].meta.error]
    assert records[0].scores == {} and records[0].target == "61"
    assert "[image: images/5.jpg]" in json.dumps(records[0].prompt)


@needs_data
def test_missing_data_names_the_expected_location(tmp_path):
    with pytest.raises(DatasetError, match=rf"mathvision: split 'testmini' not found: expected {tmp_path}/mathvision/testmini\.jsonl"):
        get_dataset("mathvision", tmp_path)
    folder = small_copy(tmp_path)
    shutil.rmtree(folder / "images")
    with pytest.raises(DatasetError, match=rf"image folder not found: expected {folder}/images"):
        get_dataset("mathvision", tmp_path)
    with pytest.raises(DatasetError, match="does not exist"):
        get_dataset("mathvision", tmp_path / "nowhere")


# -- laziness ---------------------------------------------------------------------------------------

@needs_data
def test_images_are_encoded_only_as_items_are_pulled(monkeypatch):
    calls = []
    real = mm_module.image_data_url

    def counting(path, settings=None):
        calls.append(path.name)
        return real(path, settings)

    monkeypatch.setattr(mm_module, "image_data_url", counting)
    dataset = get_dataset("mathvision", DATA)
    items = dataset.items("chat")
    assert calls == []
    first = next(items)
    assert calls == ["4.jpg"] and first.id == "mathvision/4"
    next(items)
    next(items)
    assert calls == ["4.jpg", "5.jpg", "6.jpg"]


@needs_data
def test_iterating_holds_no_more_than_the_item_in_hand():
    dataset = get_dataset("mathvision", DATA)
    refs = []
    peak = 0
    sent = 0
    largest = 0
    tracemalloc.start()
    try:
        for item in dataset.items("chat"):
            refs.append(weakref.ref(item))
            size = len(json.dumps(item.bodies[0])) if item.bodies else 0
            sent += size
            largest = max(largest, size)
            del item
            peak = max(peak, sum(r() is not None for r in refs))  # no cycles: freed without gc
        _, traced_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(refs) == 304
    assert peak <= 1  # the item just yielded (the paused generator still names it), nothing older
    # the requests add up to megabytes; memory at any moment stays a few requests' worth
    assert sent > 30 * largest
    assert traced_peak < 6 * largest + 2_000_000, (traced_peak, largest, sent)
