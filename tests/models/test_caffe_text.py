"""The hand-written protobuf text-format parser (prototxt)."""

from __future__ import annotations

import math

import pytest

from finetune.errors import CaffeFormatError, MissingFileError
from finetune.models.caffe._proto import parse_prototxt
from finetune.models.caffe._text import Message, parse_text_message


def test_scalars_comments_and_syntax_variants():
    msg = parse_text_message("""
# a comment
name: 'single' " and double"   # adjacent strings concatenate
escaped: "tab\\tquote\\"octal\\101"
ints: 3 ints: -4 ints: 0x1F
floats: 1.5 floats: -2e-3 floats: .5 floats: 1f floats: inf floats: -inf
flag: true other: False
enum: MAX
list: [1, 2, 3]
sub { a: 1 } sub: < a: 2 > sub: { a: 3; b: "x", }
""")
    assert msg.get("name") == "single and double"
    assert msg.get("escaped") == 'tab\tquote"octalA'
    assert msg.all("ints") == [3, -4, 31]
    floats = msg.all("floats")
    assert floats[:4] == [1.5, -2e-3, 0.5, 1.0] and math.isinf(floats[4]) and floats[5] < 0
    assert msg.get("flag") is True and msg.get("other") is False
    assert msg.get("enum") == "MAX" and msg.all("list") == [1, 2, 3]
    subs = msg.all("sub")
    assert [s.get("a") for s in subs] == [1, 2, 3] and subs[2].get("b") == "x"
    assert msg.get("missing", 7) == 7 and "sub" in msg and "nope" not in msg
    assert isinstance(subs[0], Message) and repr(subs[2]) == "Message(a, b)"


def test_last_value_wins_and_line_numbers():
    msg = parse_text_message("a: 1\n\nb {\n c: 2\n}\na: 5\n")
    assert msg.get("a") == 5 and msg.all("a") == [1, 5]
    assert msg.get("b").line == 3


@pytest.mark.parametrize("text, match", [
    ("a: }", "line 1: expected a value"),
    ("a {\n b: 1\n", "line 2: missing '}'.*opened on line 1"),
    ("a: 1\nb: 'unterminated\n", "line 2: unexpected character"),
    ("a b", "line 1: expected ':'"),
    ("a: [1, 2", "line 1: expected a value"),
])
def test_syntax_errors_name_the_line(text, match):
    with pytest.raises(CaffeFormatError, match=match):
        parse_text_message(text, "x.prototxt")


def test_prototxt_inputs_and_v1_types(tmp_path):
    path = tmp_path / "d.prototxt"
    path.write_text("""name: "n"
input: "data"
input_shape { dim: 1 dim: 3 dim: 4 dim: 5 }
layers { name: "c" type: CONVOLUTION bottom: "data" top: "c" blobs_lr: 1 }
layers { name: "r" type: 18 bottom: "c" top: "c" }
""")
    net = parse_prototxt(path)
    assert (net.name, net.format, net.inputs, net.input_shapes) == ("n", "V1", ["data"], [[1, 3, 4, 5]])
    assert [(l.name, l.type, l.line) for l in net.layers] == [("c", "Convolution", 4), ("r", "ReLU", 5)]
    assert net.layer("r").bottoms == ["c"] and net.layer("zz") is None


def test_prototxt_errors(tmp_path):
    with pytest.raises(MissingFileError):
        parse_prototxt(tmp_path / "none.prototxt")
    path = tmp_path / "d.prototxt"
    path.write_bytes(b"\x08\x96\x01\xff\xfe")
    with pytest.raises(CaffeFormatError, match="not a text prototxt"):
        parse_prototxt(path)
    path.write_text('layer { name: "a" type: "ReLU" }\nlayers { name: "b" type: RELU }')
    with pytest.raises(CaffeFormatError, match="mixes"):
        parse_prototxt(path)
    path.write_text("input_dim: 1 input_dim: 3 input_dim: 4")
    with pytest.raises(CaffeFormatError, match="3 'input_dim'"):
        parse_prototxt(path)


def test_deeply_nested_text_is_a_caffe_format_error_not_a_recursion_error():
    from finetune.errors import CaffeFormatError
    from finetune.models.caffe._text import parse_text_message

    for text in ("a { " * 5000 + "}" * 5000, "a { " * 100000):
        with pytest.raises(CaffeFormatError, match="nested more than 100 deep"):
            parse_text_message(text, "deep.prototxt")
    assert parse_text_message("a { " * 50 + "b: 1 " + "}" * 50).get("a") is not None
