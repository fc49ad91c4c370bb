"""Small synthetic files in the formats of ERQA (TFRecord of tf.train.Examples) and Where2Place
(questions, pictures, masks), written by the tests: they exercise the readers and scorers, they are
not the benchmarks."""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path

import numpy as np
from flageval.datasets.erqa import DIRECT_ANSWER
from flageval.datasets.tfrecord import frame
from PIL import Image

# ---- a tf.train.Example encoder (the wire format, written out by hand) -----------------------------


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def encode_feature(values: list) -> bytes:
    if all(isinstance(v, bytes | str) for v in values):
        items = b"".join(_field(1, v.encode() if isinstance(v, str) else v) for v in values)
        return _field(1, items)  # BytesList
    if all(isinstance(v, int) for v in values):
        return _field(3, _field(1, b"".join(_varint(v) for v in values)))  # Int64List, packed
    return _field(2, _field(1, struct.pack(f"<{len(values)}f", *values)))  # FloatList, packed


def encode_example(features: dict[str, list]) -> bytes:
    entries = b"".join(_field(1, _field(1, name.encode()) + _field(2, encode_feature(values)))
                       for name, values in features.items())
    return _field(1, entries)


def write_tfrecord(path: Path, examples: list[dict[str, list]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(frame(encode_example(e)) for e in examples))
    return path


# ---- pictures --------------------------------------------------------------------------------------


def picture(width: int, height: int, colour: tuple[int, int, int], fmt: str = "JPEG") -> bytes:
    """A picture with a pattern (so thumbnails of two pictures differ), encoded."""
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[:, :] = colour
    pixels[: height // 2, : width // 3] = (255 - colour[0], 255 - colour[1], 255 - colour[2])
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format=fmt)
    return out.getvalue()


# ---- ERQA ------------------------------------------------------------------------------------------

ERQA_ROWS = [
    # question, answer, picture sizes, question_type, visual_indices
    ("Which object is closest to the gripper? Choices: A. cup B. pen C. ball D. box", "B", [(48, 32)],
     "Spatial Reasoning", [0]),
    ("The two views show one table. How many mugs are on it? Choices: A. 1 B. 2 C. 3 D. 4", "C", [(40, 30), (30, 40)],
     "Multi-view Reasoning", [0, 0]),
    ("Before: and after: which action happened? Choices: A. open B. close C. lift D. push", "A", [(36, 36), (44, 28)],
     "Action Reasoning", [7, 18]),
    ("Is the drawer open? Choices: A. yes B. no", "B", [(50, 30)], "State Estimation", []),
    ("Where should the arm move next? Choices: A. left B. right C. up D. down" + DIRECT_ANSWER, "D", [(32, 48)],
     "Trajectory Reasoning", [0]),
    ("Three views: compare them. Choices: A. same B. different C. unknown D. none", "A", [(30, 30), (34, 30), (38, 30)],
     "Multi-view Reasoning", [5, 0, 5]),
]
COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30), (30, 200, 200), (200, 30, 200)]


def erqa_examples() -> list[dict[str, list]]:
    examples = []
    for n, (question, answer, sizes, qtype, indices) in enumerate(ERQA_ROWS):
        features: dict[str, list] = {
            "question": [question], "answer": [answer],
            "image/encoded": [picture(w, h, COLOURS[(n + i) % len(COLOURS)]) for i, (w, h) in enumerate(sizes)],
            "question_type": [qtype],
        }
        if indices:
            features["visual_indices"] = indices
        examples.append(features)
    return examples


def write_erqa(data_dir: Path, examples: list[dict[str, list]] | None = None) -> Path:
    return write_tfrecord(data_dir / "erqa" / "erqa.tfrecord", erqa_examples() if examples is None else examples)


# ---- Where2Place -----------------------------------------------------------------------------------

W2P_SIZE = (64, 48)


def w2p_mask(n: int) -> np.ndarray:
    """Question n's free space: a band of columns, different per question."""
    width, height = W2P_SIZE
    mask = np.zeros((height, width), dtype=np.uint8)
    start = (n * 7) % (width - 16)
    mask[8:40, start:start + 16] = 255
    return mask


def write_where2place(data_dir: Path, n: int = 6) -> Path:
    root = data_dir / "where2place"
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(exist_ok=True)
    lines = []
    for i in range(n):
        name = f"{i:02d}.png"
        (root / "images" / name).write_bytes(picture(*W2P_SIZE, COLOURS[i % len(COLOURS)], fmt="PNG"))
        Image.fromarray(w2p_mask(i)).save(root / "masks" / name)
        lines.append({"question_id": i, "image": name, "category": "seen" if i % 3 else "unseen",
                      "text": f"Find free space on the shelf to put object {i} next to the box. Your answer should be "
                              "formatted as a list of tuples, i.e. [(x1, y1), (x2, y2), ...]."})
    (root / "point_questions.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return root


def write_ev_fixtures(data_dir: Path, pca_source: Path | None = None) -> Path:
    """ERQA and Where2Place fixtures, and the bundled PCA-EVAL linked in when given."""
    data_dir.mkdir(parents=True, exist_ok=True)
    write_erqa(data_dir)
    write_where2place(data_dir)
    if pca_source is not None:
        (data_dir / "pca_eval_domestic").symlink_to(pca_source)
    return data_dir


def ev_data_on_claim(control_plane, namespace: str, pca_source: Path, claim: str = "flageval-results") -> tuple[Path, str]:
    """The EV fixtures on a results claim's host directory, so that runner pods (whose /tmp is their own)
    see them: (the directory here, its path inside a runner, under the claim's mount)."""
    from flageval.controller.settings import Settings

    here = write_ev_fixtures(control_plane.agent_state / "claims" / namespace / claim / "ev-data", pca_source)
    return here, f"{Settings().volume_mount_path}/ev-data"
