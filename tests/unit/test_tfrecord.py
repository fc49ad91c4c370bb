"""The TFRecord and tf.train.Example reader, checked against the protobuf library's own encoder and
against known CRC-32C values, and on damaged files."""

from __future__ import annotations

import pytest
from flageval.datasets.base import DatasetError
from flageval.datasets.tfrecord import (
    frame,
    masked_crc,
    parse_example,
    record_at,
    records,
)
from support.ev_fixtures import encode_example, write_tfrecord


def example_class():
    """tf.train.Example declared from tensorflow/core/example/{feature,example}.proto, built by protobuf."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(name="example_test.proto", package="tf", syntax="proto3")

    def message(name, *fields, options=None):
        m = file.message_type.add(name=name)
        for number, (field_name, kind, label, type_name) in enumerate(fields, 1):
            f = m.field.add(name=field_name, number=number, type=kind, label=label)
            if type_name:
                f.type_name = type_name
        if options:
            m.options.map_entry = True
        return m

    rep, opt = F.LABEL_REPEATED, F.LABEL_OPTIONAL
    message("BytesList", ("value", F.TYPE_BYTES, rep, None))
    message("FloatList", ("value", F.TYPE_FLOAT, rep, None))
    message("Int64List", ("value", F.TYPE_INT64, rep, None))
    feature = message("Feature", ("bytes_list", F.TYPE_MESSAGE, opt, ".tf.BytesList"),
                      ("float_list", F.TYPE_MESSAGE, opt, ".tf.FloatList"), ("int64_list", F.TYPE_MESSAGE, opt, ".tf.Int64List"))
    for f in feature.field:
        f.oneof_index = 0
    feature.oneof_decl.add(name="kind")
    features = message("Features", ("feature", F.TYPE_MESSAGE, rep, ".tf.Features.FeatureEntry"))
    entry = features.nested_type.add(name="FeatureEntry")
    entry.field.add(name="key", number=1, type=F.TYPE_STRING, label=opt)
    entry.field.add(name="value", number=2, type=F.TYPE_MESSAGE, label=opt, type_name=".tf.Feature")
    entry.options.map_entry = True
    message("Example", ("features", F.TYPE_MESSAGE, opt, ".tf.Features"))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tf.Example"))


def test_examples_written_by_protobuf_read_back():
    Example = example_class()
    example = Example()
    features = example.features.feature
    features["question"].bytes_list.value.append("Which way? <é>".encode())
    features["image/encoded"].bytes_list.value.extend([b"\xff\xd8one", b"", b"\x00two"])
    features["visual_indices"].int64_list.value.extend([0, 17, -3, 2**40])
    features["scores"].float_list.value.extend([0.5, -1.25])
    features["empty"].int64_list.SetInParent()
    parsed = parse_example(example.SerializeToString())
    assert parsed == {"question": ["Which way? <é>".encode()], "image/encoded": [b"\xff\xd8one", b"", b"\x00two"],
                      "visual_indices": [0, 17, -3, 2**40], "scores": [0.5, -1.25], "empty": []}
    # And our test encoder agrees with protobuf's decoder.
    ours = Example.FromString(encode_example({"question": ["q"], "visual_indices": [3, -1], "w": [0.25]}))
    assert ours.features.feature["question"].bytes_list.value == [b"q"]
    assert list(ours.features.feature["visual_indices"].int64_list.value) == [3, -1]
    assert list(ours.features.feature["w"].float_list.value) == [0.25]


def test_unpacked_lists_and_unknown_fields_are_read_as_protobuf_does():
    # Int64List value 7 unpacked (tag 0x08), FloatList 1.0 unpacked (tag 0x0d), an unknown field 9 in the Example.
    int_feature = b"\x1a\x02\x08\x07"
    float_feature = b"\x12\x05\x0d\x00\x00\x80\x3f"
    entry = lambda key, feature: b"\x0a" + bytes([len(key) + 4 + len(feature)]) + b"\x0a" + bytes([len(key)]) + key + b"\x12" + bytes([len(feature)]) + feature
    features = entry(b"n", int_feature) + entry(b"f", float_feature)
    example = b"\x0a" + bytes([len(features)]) + features + b"\x48\x01"
    assert parse_example(example) == {"n": [7], "f": [1.0]}


def test_crc32c_and_framing():
    import google_crc32c

    assert google_crc32c.value(b"123456789") == 0xE3069283  # the CRC-32C check value (RFC 3720)
    crc = 0xE3069283
    assert masked_crc(b"123456789") == ((crc >> 15 | crc << 17) + 0xA282EAD8) & 0xFFFFFFFF
    framed = frame(b"abc")
    assert framed[:8] == (3).to_bytes(8, "little") and framed[12:15] == b"abc" and len(framed) == 19


def test_records_offsets_and_damage(tmp_path):
    path = write_tfrecord(tmp_path / "x.tfrecord", [{"a": [b"1"]}, {"a": [b"22"]}, {"a": [b"333"]}])
    found = list(records(path))
    assert [parse_example(d)["a"] for _, d in found] == [[b"1"], [b"22"], [b"333"]]
    assert record_at(path, found[2][0]) == found[2][1]
    whole = path.read_bytes()
    path.write_bytes(whole[:-5])  # the last record cut short
    with pytest.raises(DatasetError, match=rf"{path}: record 2 at byte {found[2][0]} is truncated"):
        list(records(path))
    path.write_bytes(whole[:found[1][0] + 6])  # a header cut short
    with pytest.raises(DatasetError, match="record 1 .* is truncated \\(a 6-byte header\\)"):
        list(records(path))
    damaged = bytearray(whole)
    damaged[found[1][0] + 13] ^= 0x40  # one bit of record 1's data
    path.write_bytes(bytes(damaged))
    with pytest.raises(DatasetError, match="record 1 at byte .*: the data's CRC does not match"):
        list(records(path))
    path.write_bytes(b"PK\x03\x04 this is a zip file, not a TFRecord")
    with pytest.raises(DatasetError, match="record 0 at byte 0: the length's CRC does not match"):
        list(records(path))
