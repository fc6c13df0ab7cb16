"""Reader rules and messages of docs/format.md §6-§7, on files built byte by byte.

Every case is checked twice: through safe_open (message
"Error while deserializing header: <core message>") and through
deserialize(bytes) ("Error while deserializing: <core message>").
For serde_json-level texts after "invalid JSON in header: " only a prefix
and a keyword are asserted. The safe_open checks run on a local path and over
http (a few on S3): conftest.py's `source`; a URL's header is checked by the
same rules with the same messages.
"""

import json
import struct

import numpy as np
import pytest

import safetensors
from safetensors import SafetensorError, deserialize, safe_open

from conftest import (ALL_DTYPES, DESERIALIZE_PREFIX, HEADER_PREFIX, MISALIGNED, SOURCES,
                      build_bytes, nbytes_of, tensor_entry as t)

U64_MAX = 2**64 - 1

F32_8 = bytes(8)


def ok_file(header, data):
    return build_bytes(header, data)


# --------------------------------------------------------------------------
# cases: (id, content, expected core message, mode)
#   mode "exact": message == core message
#   mode "json": message startswith "invalid JSON in header: " and contains keyword(s)
#   mode "utf8": message startswith "invalid UTF-8 in header: "
# --------------------------------------------------------------------------

ERROR_CASES = [
    ("empty_file", b"", "header too small", "exact"),
    ("seven_bytes", b"\x00" * 7, "header too small", "exact"),
    ("seven_bytes_nonzero", b"\x10\x00\x00\x00\x00\x00\x00", "header too small", "exact"),
    ("n5_len8", struct.pack("<Q", 5), "invalid header length", "exact"),
    ("n_too_large_by_one", struct.pack("<Q", 100_000_001) + b"{}", "header too large", "exact"),
    ("n_u64_max", struct.pack("<Q", U64_MAX), "header too large", "exact"),
    ("n_2pow63", struct.pack("<Q", 2**63) + b"{}      ", "header too large", "exact"),
    # upstream's text, then what the file is (foreign_files.c)
    ("git_lfs_pointer", b"version https://git-lfs.github.com/spec/v1\n",
     "header too large (the file looks like a git-lfs pointer, not the file it stands for: run `git lfs pull`)",
     "exact"),
    ("n_limit_short_file", struct.pack("<Q", 100_000_000) + b"{}      ", "invalid header length", "exact"),
    ("n_one_past_eof", struct.pack("<Q", 9) + b"{}      ", "invalid header length", "exact"),
    ("n_zero", struct.pack("<Q", 0), "EOF", "json"),
    ("trailing_nul", build_bytes(b"{}\x00", pad=False), "trailing", "json"),
    ("trailing_garbage", build_bytes(b"{}x", pad=False), "trailing", "json"),
    ("nul_padding", build_bytes(b"{}\x00\x00\x00\x00\x00\x00", pad=False), "trailing", "json"),
    ("bom", build_bytes(b"\xef\xbb\xbf{}   ", pad=False), "expected value", "json"),
    ("top_level_array", build_bytes(b"[]"), "", "json"),
    ("top_level_string", build_bytes(b'"abc"'), "", "json"),
    ("trailing_comma", build_bytes(b'{"__metadata__":{"a":"b"},}'), "trailing comma", "json"),
    ("comment", build_bytes(b"{}// c"), "", "json"),
    ("unterminated", build_bytes(b'{"a":'), "EOF", "json"),
    ("invalid_utf8_ff", build_bytes(b'{"\xff":1}'), "", "utf8"),
    ("invalid_utf8_first", build_bytes(b"\x80{}"), "", "utf8"),
    ("invalid_utf8_truncated_seq", build_bytes(b'{"\xc3":{}}'), "", "utf8"),
    ("invalid_utf8_surrogate", build_bytes(b'{"\xed\xa0\x80":{}}'), "", "utf8"),
    ("invalid_utf8_overlong", build_bytes(b'{"\xc0\xaf":{}}'), "", "utf8"),
    # data coverage (rule 7)
    ("one_extra_byte", build_bytes({"a": t("F32", [2], [0, 8])}, F32_8 + b"\x00"),
     "incomplete metadata, file not fully covered", "exact"),
    ("one_byte_short", build_bytes({"a": t("F32", [2], [0, 8])}, F32_8[:-1]),
     "incomplete metadata, file not fully covered", "exact"),
    ("empty_header_with_data", build_bytes({}, b"\x00"),
     "incomplete metadata, file not fully covered", "exact"),
    ("no_data_at_all", build_bytes({"a": t("U8", [4], [0, 4])}),
     "incomplete metadata, file not fully covered", "exact"),
    # offsets (rule 6)
    ("leading_gap", build_bytes({"a": t("F32", [2], [4, 12])}, bytes(12)),
     "invalid offset for tensor `a`", "exact"),
    ("overlap", build_bytes({"a": t("F32", [2], [0, 8]), "b": t("F32", [2], [4, 12])}, bytes(12)),
     "invalid offset for tensor `b`", "exact"),
    ("gap", build_bytes({"a": t("F32", [2], [0, 8]), "b": t("F32", [2], [12, 20])}, bytes(20)),
     "invalid offset for tensor `b`", "exact"),
    ("reversed", build_bytes({"a": t("F32", [2], [8, 0])}, bytes(8)),
     "invalid offset for tensor `a`", "exact"),
    ("reversed_after_first", build_bytes({"a": t("U8", [4], [0, 4]), "zz": t("U8", [0], [4, 2])}, bytes(4)),
     "invalid offset for tensor `zz`", "exact"),
    ("unicode_name_offset", build_bytes({"\u00e9t\u00e9": t("U8", [4], [1, 5])}, bytes(5)),
     "invalid offset for tensor `\u00e9t\u00e9`", "exact"),
    # info (rule 6)
    ("f32_shape3_8bytes", build_bytes({"a": t("F32", [3], [0, 8])}, bytes(8)),
     "invalid shape, data type, or offset for tensor", "exact"),
    ("f32_shape1_8bytes", build_bytes({"a": t("F32", [1], [0, 8])}, bytes(8)),
     "invalid shape, data type, or offset for tensor", "exact"),
    ("scalar_wrong_size", build_bytes({"a": t("F64", [], [0, 4])}, bytes(4)),
     "invalid shape, data type, or offset for tensor", "exact"),
    ("empty_shape_nonempty_data", build_bytes({"a": t("F32", [2, 0], [0, 4])}, bytes(4)),
     "invalid shape, data type, or offset for tensor", "exact"),
    ("f4_odd", build_bytes({"a": t("F4", [3], [0, 2])}, bytes(2)), MISALIGNED, "exact"),
    ("f6_e2m3_three", build_bytes({"a": t("F6_E2M3", [3], [0, 3])}, bytes(3)), MISALIGNED, "exact"),
    ("f6_e3m2_two", build_bytes({"a": t("F6_E3M2", [2, 1], [0, 2])}, bytes(2)), MISALIGNED, "exact"),
    ("f4_wrong_size", build_bytes({"a": t("F4", [4], [0, 4])}, bytes(4)),
     "invalid shape, data type, or offset for tensor", "exact"),
    ("overflow_shape_u64", build_bytes({"a": t("U8", [2, U64_MAX - 1], [0, 4])}, bytes(4)),
     "overflow computing buffer size from shape and/or element type", "exact"),
    ("overflow_bits", build_bytes({"a": t("F32", [2, 2**63 - 1], [0, 4])}, bytes(4)),
     "overflow computing buffer size from shape and/or element type", "exact"),
    ("overflow_bits_single_dim", build_bytes({"a": t("U16", [2**61], [0, 4])}, bytes(4)),
     "overflow computing buffer size from shape and/or element type", "exact"),
    # JSON shape/type errors (rule 5)
    ("two_metadata", build_bytes(b'{"__metadata__":{},"__metadata__":{}}'), "__metadata__", "json"),
    ("metadata_int_value", build_bytes({"__metadata__": {"a": 1}}), "", "json"),
    ("metadata_map_value", build_bytes({"__metadata__": {"a": {}}}), "", "json"),
    ("metadata_string", build_bytes({"__metadata__": "x"}), "", "json"),
    ("metadata_list", build_bytes({"__metadata__": ["x"]}), "", "json"),
    ("top_level_non_object_value", build_bytes({"format": "pt"}), "", "json"),
    ("tensor_null", build_bytes({"a": None}), "", "json"),
    ("missing_data_offsets", build_bytes({"a": {"dtype": "U8", "shape": [0]}}), "data_offsets", "json"),
    ("missing_dtype", build_bytes({"a": {"shape": [0], "data_offsets": [0, 0]}}), "dtype", "json"),
    ("missing_shape", build_bytes({"a": {"dtype": "U8", "data_offsets": [0, 0]}}), "shape", "json"),
    ("duplicate_dtype", build_bytes(b'{"a":{"dtype":"U8","dtype":"U8","shape":[0],"data_offsets":[0,0]}}'),
     "dtype", "json"),
    ("dtype_f128", build_bytes({"a": t("F128", [0], [0, 0])}), "F128", "json"),
    ("dtype_lowercase", build_bytes({"a": t("f32", [0], [0, 0])}), "f32", "json"),
    ("dtype_int", build_bytes({"a": t(1, [0], [0, 0])}), "", "json"),
    ("shape_negative", build_bytes({"a": t("U8", [-2], [0, 0])}), "", "json"),
    ("shape_float", build_bytes(b'{"a":{"dtype":"U8","shape":[2.0],"data_offsets":[0,2]}}'), "", "json"),
    ("shape_exponent", build_bytes(b'{"a":{"dtype":"U8","shape":[1e0],"data_offsets":[0,1]}}'), "", "json"),
    ("shape_leading_zero", build_bytes(b'{"a":{"dtype":"U8","shape":[01],"data_offsets":[0,1]}}'), "", "json"),
    ("shape_not_list", build_bytes({"a": t("U8", 2, [0, 2])}), "", "json"),
    ("shape_string_dim", build_bytes({"a": t("U8", ["2"], [0, 2])}), "", "json"),
    ("offsets_three", build_bytes({"a": t("U8", [1], [0, 1, 1])}, b"\x00"), "", "json"),
    ("offsets_one", build_bytes({"a": t("U8", [1], [0])}, b"\x00"), "", "json"),
    ("offsets_2pow64", build_bytes(b'{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,18446744073709551616]}}'),
     "", "json"),
    ("offsets_negative", build_bytes({"a": t("U8", [1], [-1, 0])}), "", "json"),
    ("name_unquoted", build_bytes(b'{a:{}}'), "", "json"),
    ("bad_escape", build_bytes(b'{"\\q":{}}'), "", "json"),
    ("lone_surrogate_escape", build_bytes(b'{"\\ud800":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}}'),
     "", "json"),
    ("raw_control_char_in_string", build_bytes(b'{"a\x01":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}}'),
     "", "json"),
    ("deep_nesting_unknown_field",
     build_bytes(b'{"a":{"dtype":"U8","shape":[0],"data_offsets":[0,0],"x":' + b"[" * 200 + b"]" * 200 + b"}}"),
     "", "json"),
]


def _check(msg, expected, mode, prefix):
    assert msg.startswith(prefix), msg
    core = msg[len(prefix):]
    if mode == "exact":
        assert core == expected
    elif mode == "json":
        assert core.startswith("invalid JSON in header: "), core
        assert expected.lower() in core.lower(), core
    elif mode == "utf8":
        assert core.startswith("invalid UTF-8 in header: "), core
        assert len(core) > len("invalid UTF-8 in header: ")
    else:  # pragma: no cover
        raise AssertionError(mode)


# Every case on a path and over http; these on S3 too (lengths at and past the
# object's end, a foreign file, coverage): S3 costs a quarter of a second a case.
S3_CASES = {"empty_file", "n_one_past_eof", "git_lfs_pointer", "one_byte_short"}
assert S3_CASES <= {case[0] for case in ERROR_CASES}
READER_ERRORS = [pytest.param(kind, *case, id=f"{case[0]}-{kind}") for case in ERROR_CASES
                 for kind in SOURCES + ["s3"] * (case[0] in S3_CASES)]


@pytest.mark.parametrize("source,case_id,content,expected,mode", READER_ERRORS, indirect=["source"])
def test_reader_error_safe_open(mk, case_id, content, expected, mode, source):
    path = mk.raw(content)
    with pytest.raises(SafetensorError) as ei:
        source.open(path, framework="np")
    assert type(ei.value) is SafetensorError or isinstance(ei.value, SafetensorError)
    _check(str(ei.value), expected, mode, HEADER_PREFIX)


@pytest.mark.parametrize("case_id,content,expected,mode", ERROR_CASES, ids=[c[0] for c in ERROR_CASES])
def test_reader_error_deserialize(case_id, content, expected, mode):
    with pytest.raises(SafetensorError) as ei:
        deserialize(content)
    _check(str(ei.value), expected, mode, DESERIALIZE_PREFIX)


@pytest.mark.parametrize("framework", ["np", "pt"])
def test_reader_error_same_for_every_framework_and_backend(mk, framework, source):
    if framework == "pt":
        pytest.importorskip("torch")
    path = mk.header({"a": t("F32", [2], [0, 8]), "b": t("F32", [2], [4, 12])}, bytes(12))
    for backend in ("mmap", "pread"):
        with pytest.raises(SafetensorError) as ei:
            source.open(path, framework, backend=backend)
        assert str(ei.value) == HEADER_PREFIX + "invalid offset for tensor `b`"


def test_json_error_mentions_position(mk, source):
    # upstream: "... at line L column C"; ours may word it differently but must
    # say where. Only check that a digit appears after the JSON prefix.
    path = mk.header(b'{"a":{"dtype":"U8","shape":[01],"data_offsets":[0,1]}}')
    with pytest.raises(SafetensorError) as ei:
        source.open(path, "np")
    core = str(ei.value)[len(HEADER_PREFIX):]
    assert core.startswith("invalid JSON in header: ")
    assert any(ch.isdigit() for ch in core[len("invalid JSON in header: "):])


# --------------------------------------------------------------------------
# Rule order
# --------------------------------------------------------------------------

def expect_header_error(source, path, core):
    with pytest.raises(SafetensorError) as ei:
        source.open(path, "np")
    assert str(ei.value) == HEADER_PREFIX + core


def test_order_length_before_utf8(mk, source):
    # N points past EOF and the bytes there are not UTF-8: rule 3 wins
    expect_header_error(source, mk.raw(struct.pack("<Q", 64) + b"\xff" * 10), "invalid header length")


def test_order_too_large_before_length(mk, source):
    expect_header_error(source, mk.raw(struct.pack("<Q", 100_000_001)), "header too large")


def test_order_utf8_before_json(mk, source):
    path = mk.header(b'[\xff')
    with pytest.raises(SafetensorError) as ei:
        source.open(path, "np")
    assert str(ei.value).startswith(HEADER_PREFIX + "invalid UTF-8 in header: ")


def test_order_offsets_before_coverage(mk, source):
    # offsets wrong AND file has trailing bytes: rule 6 is reported
    expect_header_error(source, mk.header({"a": t("U8", [4], [1, 5])}, bytes(50)), "invalid offset for tensor `a`")


def test_order_info_before_coverage(mk, source):
    expect_header_error(source, mk.header({"a": t("F32", [3], [0, 8])}, bytes(3)),
                        "invalid shape, data type, or offset for tensor")


def test_order_offset_before_overflow(mk, source):
    expect_header_error(source, mk.header({"a": t("U8", [2, U64_MAX - 1], [3, 4])}, bytes(4)),
                        "invalid offset for tensor `a`")


def test_order_overflow_before_misaligned(mk, source):
    expect_header_error(source, mk.header({"a": t("F4", [3, 2**63 - 1], [0, 4])}, bytes(4)),
                        "overflow computing buffer size from shape and/or element type")


def test_order_misaligned_before_info(mk, source):
    expect_header_error(source, mk.header({"a": t("F4", [3], [0, 7])}, bytes(7)), MISALIGNED)


def test_order_tensors_checked_in_offset_order_not_json_order(mk, source):
    # JSON order: b then a. Offset order: a (0,4) then b (8,4).
    # a fails info (F32 [2] needs 8 bytes), b would fail offset: a's error first.
    raw = b'{"b":{"dtype":"U8","shape":[0],"data_offsets":[8,4]},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}'
    expect_header_error(source, mk.header(raw, bytes(8)), "invalid shape, data type, or offset for tensor")


def test_order_offset_sort_uses_end_as_tiebreak(mk, source):
    # [0,0] sorts before [0,4]: both valid in that order
    path = mk.header({"a": t("U8", [4], [0, 4]), "z": t("U8", [0], [0, 0])}, bytes(4))
    with source.open(path, "np") as f:
        assert f.offset_keys() == ["z", "a"]


# --------------------------------------------------------------------------
# Valid oddities that must load
# --------------------------------------------------------------------------

def open_ok(source, path, framework="np"):
    return source.open(path, framework)


@pytest.mark.parametrize("raw", [b"{}", b"  {}", b"{}  \n\t", b"\n\r\t {} \t\r\n", b"{}      "])
def test_whitespace_around_header(mk, raw, source):
    path = mk.header(raw, pad=False)
    with open_ok(source, path) as f:
        assert f.keys() == []
        assert f.offset_keys() == []
        assert f.metadata() is None
    assert deserialize(build_bytes(raw, pad=False)) == []


def test_leading_whitespace_padding_with_tensor(mk, source):
    raw = b" " * 13 + json.dumps({"a": t("U8", [3], [0, 3])}).encode()
    path = mk.header(raw, b"\x01\x02\x03", pad=False)
    with open_ok(source, path) as f:
        assert f.get_tensor("a").tolist() == [1, 2, 3]


def test_pretty_printed_header(mk, source):
    raw = json.dumps({"__metadata__": {"k": "v"}, "a": t("I16", [2], [0, 4])}, indent=4).encode()
    path = mk.header(raw, struct.pack("<hh", -3, 7))
    with open_ok(source, path) as f:
        assert f.metadata() == {"k": "v"}
        assert f.get_tensor("a").tolist() == [-3, 7]


def test_unpadded_header_loads(mk, source):
    # N not a multiple of 8: not what upstream writes, still valid
    raw = json.dumps({"a": t("U8", [1], [0, 1])}, separators=(",", ":")).encode()
    assert len(raw) % 8 != 0
    path = mk.header(raw, b"\x2a", pad=False)
    with open_ok(source, path) as f:
        assert f.get_tensor("a").tolist() == [42]


def test_metadata_null(mk, source):
    path = mk.header({"__metadata__": None, "a": t("U8", [1], [0, 1])}, b"\x05")
    with open_ok(source, path) as f:
        assert f.metadata() is None
        assert f.keys() == ["a"]


def test_metadata_empty_dict(mk, source):
    path = mk.header({"__metadata__": {}, "a": t("U8", [1], [0, 1])}, b"\x05")
    with open_ok(source, path) as f:
        assert f.metadata() == {}


def test_metadata_duplicate_inner_key_last_wins(mk, source):
    path = mk.header(b'{"__metadata__":{"k":"1","k":"2"}}')
    with open_ok(source, path) as f:
        assert f.metadata() == {"k": "2"}


def test_metadata_escapes_and_unicode(mk, source):
    md = {"quote\"": "back\\slash", "nl": "a\nb\tc", "\u00e9": "\u65e5\u672c", "emoji": "\U0001f600", "": ""}
    path = mk.header({"__metadata__": md})
    with open_ok(source, path) as f:
        assert f.metadata() == md


def test_metadata_surrogate_pair_escape(mk, source):
    path = mk.header(b'{"__metadata__":{"e":"\\ud83d\\ude00","u":"\\u00e9\\/"}}')
    with open_ok(source, path) as f:
        assert f.metadata() == {"e": "\U0001f600", "u": "\u00e9/"}


def test_metadata_not_a_tensor(mk, source):
    path = mk.header({"__metadata__": {"format": "pt"}, "a": t("U8", [1], [0, 1])}, b"\x01")
    with open_ok(source, path) as f:
        assert f.keys() == ["a"]
        assert "__metadata__" not in f.offset_keys()


def test_duplicate_identical_tensor_entries(mk, source):
    entry = b'{"dtype":"U8","shape":[2],"data_offsets":[0,2]}'
    path = mk.header(b'{"a":' + entry + b',"a":' + entry + b"}", b"\x01\x02")
    with open_ok(source, path) as f:
        assert f.keys() == ["a"]
        assert f.get_tensor("a").tolist() == [1, 2]
    out = deserialize(build_bytes(b'{"a":' + entry + b',"a":' + entry + b"}", b"\x01\x02"))
    assert len(out) == 1


def test_duplicate_name_last_wins(mk, source):
    # first "a" would be [0,2], last is [0,4]: the last one tiles the buffer
    raw = (b'{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},'
           b'"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}}')
    path = mk.header(raw, b"\x01\x02\x03\x04")
    with open_ok(source, path) as f:
        assert f.get_tensor("a").tolist() == [1, 2, 3, 4]


def test_duplicate_name_different_offsets_fails(mk, source):
    raw = (b'{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},'
           b'"a":{"dtype":"U8","shape":[2],"data_offsets":[2,4]}}')
    expect_header_error(source, mk.header(raw, bytes(4)), "invalid offset for tensor `a`")


def test_unknown_fields_in_tensor_entry_ignored(mk, source):
    raw = (b'{"a":{"extra":{"x":[1,2,{"y":null}]},"data_offsets":[0,2],"shape":[2],'
           b'"dtype":"U8","z":true}}')
    path = mk.header(raw, b"\x07\x08")
    with open_ok(source, path) as f:
        assert f.get_tensor("a").tolist() == [7, 8]
        assert f.get_slice("a").get_dtype() == "U8"


def test_field_order_irrelevant(mk, source):
    raw = b'{"a":{"data_offsets":[0,4],"shape":[2],"dtype":"I16"}}'
    path = mk.header(raw, struct.pack("<hh", 1, -1))
    with open_ok(source, path) as f:
        assert f.get_tensor("a").tolist() == [1, -1]


def test_scalar_and_empty_tensors(mk, source):
    data = struct.pack("<d", 2.5)
    header = {"s": t("F64", [], [0, 8]), "e1": t("F32", [0], [8, 8]), "e2": t("I64", [2, 0], [8, 8]),
              "e3": t("U8", [0, 3, 5], [8, 8])}
    path = mk.header(header, data)
    with open_ok(source, path) as f:
        s = f.get_tensor("s")
        assert s.shape == () and s.dtype == np.float64 and float(s) == 2.5
        assert f.get_tensor("e1").shape == (0,)
        assert f.get_tensor("e2").shape == (2, 0)
        assert f.get_tensor("e3").shape == (0, 3, 5)
        assert f.get_tensor("e2").dtype == np.int64


def test_zero_length_tensors_share_offset_anywhere(mk, source):
    header = {"a": t("U8", [2], [0, 2]), "e": t("F32", [0], [2, 2]), "f": t("BOOL", [0, 1], [2, 2]),
              "b": t("U8", [1], [2, 3]), "g": t("U8", [0], [3, 3])}
    path = mk.header(header, b"\x01\x02\x03")
    with open_ok(source, path) as f:
        assert f.get_tensor("b").tolist() == [3]
        assert f.keys() == ["a", "b", "e", "f", "g"]
        assert set(f.offset_keys()[1:3]) == {"e", "f"}
        assert f.offset_keys()[0] == "a" and f.offset_keys()[3:] == ["b", "g"]


@pytest.mark.parametrize("name", ["", "\u00e9", "a b", "a\u0000b", "\U0001f600", "a\"b\\c", "\t\n"])
def test_odd_names(mk, name, source):
    path = mk.header({name: t("U8", [1], [0, 1])}, b"\x09")
    with open_ok(source, path) as f:
        assert f.keys() == [name]
        assert f.get_tensor(name).tolist() == [9]


def test_f4_f6_valid_sizes_open(mk, source):
    header = {"f4": t("F4", [4], [0, 2]), "f6": t("F6_E2M3", [4], [2, 5]), "g6": t("F6_E3M2", [2, 4], [5, 11])}
    path = mk.header(header, bytes(11))
    with open_ok(source, path) as f:
        assert f.keys() == ["f4", "f6", "g6"]
        assert f.get_slice("f6").get_dtype() == "F6_E2M3"
        assert f.get_slice("g6").get_shape() == [2, 4]


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_every_dtype_token_accepted(mk, dtype, source):
    shape = [4, 2]
    n = nbytes_of(dtype, shape)
    path = mk.header({"x": t(dtype, shape, [0, n])}, bytes(n))
    with source.open(path, "np") as f:
        s = f.get_slice("x")
        assert s.get_dtype() == dtype
        assert s.get_shape() == shape
    out = deserialize(build_bytes({"x": t(dtype, shape, [0, n])}, bytes(n)))
    assert out[0][1]["dtype"] == dtype


def test_header_exactly_limit_is_not_too_large(mk, source):
    # N == 100,000,000 is allowed by rule 2; with a short file rule 3 fails instead
    expect_header_error(source, mk.raw(struct.pack("<Q", 100_000_000) + b"{}"), "invalid header length")


def test_large_but_legal_header(mk, source):
    # a 1 MB header made of whitespace padding is fine
    raw = b"{}" + b" " * (1 << 20)
    with open_ok(source, mk.header(raw, pad=False)) as f:
        assert f.keys() == []


def test_dimension_huge_but_empty(mk, source):
    # product is 0 even though one dimension is enormous: no overflow
    path = mk.header({"a": t("F64", [0, 2**62], [0, 0])})
    with open_ok(source, path) as f:
        assert f.get_slice("a").get_shape() == [0, 2**62]


def test_deserialize_valid_minimal():
    content = build_bytes({"a": t("U8", [3], [0, 3])}, b"\x01\x02\x03")
    out = deserialize(content)
    assert out == [("a", {"shape": [3], "dtype": "U8", "data": bytearray(b"\x01\x02\x03")})]
