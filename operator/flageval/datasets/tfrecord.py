"""TFRecord files of `tf.train.Example`s, read without TensorFlow.

Framing (tensorflow/core/lib/io/record_writer.cc): per record, the length as a little-endian u64, the
masked CRC-32C of those 8 bytes (u32), the data, the masked CRC-32C of the data (u32); mask(c) =
((c >> 15 | c << 17) + 0xa282ead8) mod 2³². Both CRCs are checked: a truncated or damaged file is a
DatasetError naming the file, the record and the byte offset.

Example (tensorflow/core/example/{example,feature}.proto): Example{1: Features}, Features{1: map<string,
Feature>} (map entries: 1 key, 2 value), Feature{1: BytesList | 2: FloatList | 3: Int64List}, each list
field 1 `repeated` (floats and ints packed or not). Unknown fields are skipped, as protobuf does.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from flageval.datasets.base import DatasetError

_MASK_DELTA = 0xA282EAD8
Value = list[bytes] | list[float] | list[int]


def _crc32c(data: bytes) -> int:
    import google_crc32c  # C implementation; a pure-Python one in the same package otherwise

    return google_crc32c.value(data)


def masked_crc(data: bytes) -> int:
    crc = _crc32c(data)
    return ((crc >> 15 | crc << 17) + _MASK_DELTA) & 0xFFFFFFFF


class ProtobufError(ValueError):
    """Bytes that are not a well-formed message of the expected shape."""


def _varint(buf: memoryview, at: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if at >= len(buf):
            raise ProtobufError("a varint runs past the end")
        byte = buf[at]
        at += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, at
        shift += 7
        if shift > 63:
            raise ProtobufError("a varint is longer than 10 bytes")


def _fields(buf: memoryview) -> Iterator[tuple[int, int, int | memoryview]]:
    """(field number, wire type, value) of each field; length-delimited values as views (no copies:
    pictures are nested four messages deep)."""
    at = 0
    while at < len(buf):
        key, at = _varint(buf, at)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, at = _varint(buf, at)
        elif wire == 1:
            if at + 8 > len(buf):
                raise ProtobufError("a 64-bit field runs past the end")
            value, at = int.from_bytes(buf[at:at + 8], "little"), at + 8
        elif wire == 2:
            size, at = _varint(buf, at)
            if at + size > len(buf):
                raise ProtobufError("a length-delimited field runs past the end")
            value, at = buf[at:at + size], at + size
        elif wire == 5:
            if at + 4 > len(buf):
                raise ProtobufError("a 32-bit field runs past the end")
            value, at = int.from_bytes(buf[at:at + 4], "little"), at + 4
        else:
            raise ProtobufError(f"wire type {wire} is not supported")
        yield number, wire, value


def _signed64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _feature(buf: memoryview) -> Value:
    values: Value = []
    for number, wire, value in _fields(buf):
        if wire != 2 or number not in (1, 2, 3):
            continue
        items: list = []
        for item_number, item_wire, item in _fields(value):  # the list's `repeated` field 1
            if item_number != 1:
                continue
            if number == 1 and item_wire == 2:
                items.append(bytes(item))
            elif number == 2 and item_wire == 2:  # packed floats
                if len(item) % 4:
                    raise ProtobufError("packed floats are not a multiple of 4 bytes")
                items.extend(struct.unpack(f"<{len(item) // 4}f", item))
            elif number == 2 and item_wire == 5:
                items.append(struct.unpack("<f", item.to_bytes(4, "little"))[0])
            elif number == 3 and item_wire == 2:  # packed varints
                at = 0
                while at < len(item):
                    raw, at = _varint(item, at)
                    items.append(_signed64(raw))
            elif number == 3 and item_wire == 0:
                items.append(_signed64(item))
            else:
                raise ProtobufError(f"feature list {number} has a value of wire type {item_wire}")
        values = items
    return values


def parse_example(buf: bytes | memoryview) -> dict[str, Value]:
    """tf.train.Example bytes → {feature name: list of bytes, floats or ints}. Raises ProtobufError."""
    features: dict[str, Value] = {}
    for number, wire, value in _fields(memoryview(buf)):
        if number != 1 or wire != 2:
            continue
        for entry_number, entry_wire, entry in _fields(value):
            if entry_number != 1 or entry_wire != 2:
                continue
            key, feature = None, b""
            for part_number, part_wire, part in _fields(entry):
                if part_number == 1 and part_wire == 2:
                    key = bytes(part).decode("utf-8", errors="replace")
                elif part_number == 2 and part_wire == 2:
                    feature = part
            if key is None:
                raise ProtobufError("a feature has no name")
            features[key] = _feature(feature)
    return features


def _read_exact(handle: BinaryIO, size: int) -> bytes:
    data = handle.read(size)
    return data if data is not None else b""


def records(path: Path) -> Iterator[tuple[int, bytes]]:
    """(byte offset, data) of each record, CRCs checked. Raises DatasetError for a damaged file."""
    try:
        handle = open(path, "rb")  # noqa: SIM115 - opened apart from reading, to name the cause
    except FileNotFoundError:
        raise DatasetError(f"{path} is missing") from None
    except OSError as exc:
        raise DatasetError(f"{path} cannot be read: {exc.strerror or exc}") from None
    with handle:
        number = 0
        while True:
            offset = handle.tell()
            header = _read_exact(handle, 12)
            if not header:
                return
            where = f"{path}: record {number} at byte {offset}"
            if len(header) < 12:
                raise DatasetError(f"{where} is truncated (a {len(header)}-byte header)")
            length_bytes, length_crc = header[:8], int.from_bytes(header[8:], "little")
            if masked_crc(length_bytes) != length_crc:
                raise DatasetError(f"{where}: the length's CRC does not match (not a TFRecord file, or damaged)")
            length = int.from_bytes(length_bytes, "little")
            data = _read_exact(handle, length)
            footer = _read_exact(handle, 4)
            if len(data) < length or len(footer) < 4:
                raise DatasetError(f"{where} is truncated ({len(data)} of {length} bytes)")
            if masked_crc(data) != int.from_bytes(footer, "little"):
                raise DatasetError(f"{where}: the data's CRC does not match (damaged)")
            yield offset, data
            number += 1


def record_at(path: Path, offset: int) -> bytes:
    """The data of the record starting at `offset` (one `records` gave), CRC checked."""
    with open(path, "rb") as handle:
        handle.seek(offset)
        header = _read_exact(handle, 12)
        length = int.from_bytes(header[:8], "little")
        data = _read_exact(handle, length)
        footer = _read_exact(handle, 4)
    if len(header) < 12 or len(data) < length or len(footer) < 4 or masked_crc(data) != int.from_bytes(footer, "little"):
        raise DatasetError(f"{path}: record at byte {offset} changed or is damaged")
    return data


def frame(data: bytes) -> bytes:
    """One record as TFRecord framing wraps it (for writing test files and conversions)."""
    length = len(data).to_bytes(8, "little")
    return (length + masked_crc(length).to_bytes(4, "little") + data + masked_crc(data).to_bytes(4, "little"))


__all__ = ["ProtobufError", "frame", "masked_crc", "parse_example", "record_at", "records"]
