#!/usr/bin/env python3
"""Write a seed corpus for csrc/fuzz/fuzz_header.c into a directory.

Usage: make_seeds.py OUT_DIR [--jsontestsuite DIR]   (or env JSONTESTSUITE=DIR;
default csrc/tests/data/jsontestsuite/test_parsing, the copy in this repository)

Seeds are whole file images (8-byte little-endian N, N header bytes, data):
  * valid files of every dtype, scalars, empty tensors, empty files,
    metadata (present, empty, null), sub-byte dtypes, odd names;
  * every n_/y_/i_ document of JSONTestSuite's test_parsing wrapped as a
    header, both alone and as the value of an unknown tensor field;
  * malformed files: truncated, extra bytes, overlapping / gapped / reversed
    offsets, huge N, huge shapes, offsets near 2^64, deep nesting, BOM,
    NUL padding, duplicate keys, wrong types.
Only the standard library is used, so the script runs before anything is built.
"""
import hashlib
import json
import math
import os
import struct
import sys

# (name, bits) in upstream enum order
DTYPES = [
    ("BOOL", 8), ("F4", 4), ("F6_E2M3", 6), ("F6_E3M2", 6), ("U8", 8), ("I8", 8),
    ("F8_E5M2", 8), ("F8_E4M3", 8), ("F8_E8M0", 8), ("F8_E4M3FNUZ", 8),
    ("F8_E5M2FNUZ", 8), ("I16", 16), ("U16", 16), ("F16", 16), ("BF16", 16),
    ("I32", 32), ("U32", 32), ("F32", 32), ("C64", 64), ("F64", 64), ("I64", 64),
    ("U64", 64),
]
BITS = dict(DTYPES)
ORDER = {name: i for i, (name, _) in enumerate(DTYPES)}

DEFAULT_SUITE = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                             "..", "tests", "data", "jsontestsuite", "test_parsing")


def nbytes(dtype, shape):
    n = 1
    for d in shape:
        n *= d
    return n * BITS[dtype] // 8


def frame(header: bytes, data: bytes = b"", n=None) -> bytes:
    return struct.pack("<Q", len(header) if n is None else n) + header + data


def pad8(text: bytes) -> bytes:
    return text + b" " * (-len(text) % 8)


def build(tensors, metadata=None):
    """tensors: list of (name, dtype, shape, data bytes); upstream layout."""
    items = sorted(tensors, key=lambda t: (-ORDER[t[1]], t[0].encode("utf-8")))
    head = {}
    if metadata is not None:
        head["__metadata__"] = metadata
    off = 0
    data = b""
    for name, dtype, shape, raw in items:
        head[name] = {"dtype": dtype, "shape": list(shape),
                      "data_offsets": [off, off + len(raw)]}
        off += len(raw)
        data += raw
    text = json.dumps(head, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return frame(pad8(text), data)


def pattern(n):
    return bytes((i * 37 + 11) & 0xFF for i in range(n))


def valid_seeds():
    out = {}
    out["empty_file"] = build([])
    out["empty_with_metadata"] = build([], {"framework": "pt"})
    out["empty_metadata_dict"] = frame(pad8(b'{"__metadata__":{}}'))
    out["metadata_null"] = frame(pad8(b'{"__metadata__":null}'))
    for dtype, bits in DTYPES:
        for shape in ([], [0], [4], [2, 4], [2, 0, 3], [1, 2, 2, 2]):
            if (bits * math.prod(shape)) % 8:
                continue
            n = nbytes(dtype, shape)
            out[f"valid_{dtype}_{'x'.join(map(str, shape)) or 'scalar'}"] = build(
                [("t", dtype, shape, pattern(n))])
    # several tensors of mixed dtypes + metadata
    mix = [(f"layer.{i}.w", d, [2, 3], pattern(nbytes(d, [2, 3])))
           for i, (d, b) in enumerate(DTYPES) if (6 * b) % 8 == 0]
    out["mixed_all_dtypes"] = build(mix, {"format": "pt", "note": "x\ny\u00e9"})
    out["many_small"] = build([(f"t{i}", "U8", [i % 5], pattern(i % 5)) for i in range(40)])
    out["names_odd"] = build([("", "F32", [1], pattern(4)), ("\u00e9", "F32", [1], pattern(4)),
                              ("a\u0000b", "U8", [2], pattern(2)),
                              ("\"q\\\\/\n\t", "I16", [1], pattern(2)),
                              ("\U0001F600", "BF16", [2], pattern(4))])
    out["zero_len_shared_offset"] = build([("a", "F32", [0], b""), ("b", "F32", [2, 0], b""),
                                           ("c", "F32", [1], pattern(4))])
    out["f4_even"] = build([("a", "F4", [4], pattern(2)), ("b", "F4", [2, 6], pattern(6))])
    out["f6_mult4"] = build([("a", "F6_E2M3", [4], pattern(3)),
                             ("b", "F6_E3M2", [2, 4], pattern(6))])
    out["big_tensor"] = build([("w", "F32", [16, 16], pattern(1024))])
    out["high_rank"] = build([("r", "U8", [1] * 70, pattern(1))])
    out["rank_64"] = build([("r", "U8", [1] * 63 + [2], pattern(2))])
    # leading / trailing whitespace, unknown fields, duplicates that tile
    body = b'{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}'
    out["leading_ws"] = frame(b" \t\r\n" + body + b"  ", pattern(2))
    out["unknown_field"] = frame(
        pad8(b'{"a":{"x":[1,{"y":null}],"dtype":"U8","shape":[2],"data_offsets":[0,2]}}'),
        pattern(2))
    out["dup_identical"] = frame(pad8(b'{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},'
                                      b'"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}'),
                                 pattern(2))
    out["escaped_names"] = frame(pad8(
        b'{"\\u0061\\n\\ud83d\\ude00":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},'
        b'"\\u005f_metadata__":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}'), pattern(2))
    out["metadata_dup_keys"] = frame(pad8(b'{"__metadata__":{"k":"1","k":"2","":""}}'))
    return out


def malformed_seeds():
    base = build([("a", "F32", [2], pattern(8)), ("b", "I32", [1], pattern(4))])
    out = {}
    out["len_0"] = b""
    out["len_7"] = b"\x08" * 7
    out["n_exceeds_file"] = frame(b"{}", n=5)[:10]
    out["n_zero"] = frame(b"", b"")
    out["n_100000001"] = struct.pack("<Q", 100_000_001) + b"{}"
    out["n_100000000_short"] = struct.pack("<Q", 100_000_000) + b"{}"
    out["n_max"] = struct.pack("<Q", 2**64 - 1) + b"{}"
    out["n_2_63"] = struct.pack("<Q", 2**63) + b"{}"
    for cut in (1, 4, 8, 9, len(base) - 9, len(base) - 1):
        out[f"truncated_{cut}"] = base[:cut]
    out["extra_byte"] = base + b"\0"
    out["extra_page"] = base + b"\xff" * 64

    def hdr(text, data=b""):
        return frame(pad8(text.encode("utf-8") if isinstance(text, str) else text), data)

    T = '"dtype":"F32","shape":[2]'
    out["first_not_zero"] = hdr('{"a":{' + T + ',"data_offsets":[4,12]}}', pattern(12))
    out["overlap"] = hdr('{"a":{' + T + ',"data_offsets":[0,8]},"b":{' + T
                         + ',"data_offsets":[4,12]}}', pattern(12))
    out["gap"] = hdr('{"a":{' + T + ',"data_offsets":[0,8]},"b":{' + T
                     + ',"data_offsets":[12,20]}}', pattern(20))
    out["reversed"] = hdr('{"a":{' + T + ',"data_offsets":[8,0]}}', pattern(8))
    out["size_mismatch"] = hdr('{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}',
                               pattern(8))
    out["dup_different"] = hdr('{"a":{' + T + ',"data_offsets":[0,8]},"a":{' + T
                               + ',"data_offsets":[8,16]}}', pattern(8))
    out["two_metadata"] = hdr('{"__metadata__":{},"__metadata__":{}}')
    out["metadata_int"] = hdr('{"__metadata__":{"k":1}}')
    out["metadata_string"] = hdr('{"__metadata__":"x"}')
    out["top_level_string_value"] = hdr('{"format":"pt"}')
    out["top_level_array"] = hdr('[]')
    out["missing_offsets"] = hdr('{"a":{"dtype":"F32","shape":[2]}}', pattern(8))
    out["dup_dtype"] = hdr('{"a":{"dtype":"F32","dtype":"F32","shape":[2],'
                           '"data_offsets":[0,8]}}', pattern(8))
    out["bad_dtype"] = hdr('{"a":{"dtype":"F128","shape":[2],"data_offsets":[0,8]}}', pattern(8))
    for i, sh in enumerate(("[-2]", "[2.0]", "[1e0]", "[01]", "[18446744073709551616]",
                            "[2,18446744073709551614]", "[2,9223372036854775807]",
                            "[4294967296,4294967296]", "[18446744073709551615,0]",
                            "[0,18446744073709551615,18446744073709551615]", '["2"]',
                            "null", "{}")):
        out[f"shape_{i}"] = hdr('{"a":{"dtype":"F32","shape":' + sh
                                + ',"data_offsets":[0,0]}}')
    for i, offs in enumerate(("[0,8,9]", "[0]", "[]", "[18446744073709551615,0]",
                              "[18446744073709551608,18446744073709551615]",
                              "[0,18446744073709551615]", "[0,18446744073709551616]",
                              "[9223372036854775807,9223372036854775808]", '["0","8"]')):
        out[f"offsets_{i}"] = hdr('{"a":{' + T + ',"data_offsets":' + offs + '}}', pattern(8))
    out["f4_odd"] = hdr('{"a":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}}', pattern(2))
    out["f6_odd"] = hdr('{"a":{"dtype":"F6_E2M3","shape":[3],"data_offsets":[0,3]}}', pattern(3))
    out["bom"] = frame(pad8(b"\xef\xbb\xbf{}"))
    out["nul_padding"] = frame(b"{}\0\0\0\0\0\0")
    out["trailing_comma"] = hdr('{"a":1,}')
    out["comment"] = hdr('{} // x')
    out["invalid_utf8"] = frame(pad8(b'{"\xff":{}}'))
    out["lone_surrogate"] = frame(pad8(b'{"\\ud800":{"dtype":"U8","shape":[],'
                                       b'"data_offsets":[0,1]}}'), b"x")
    out["deep_unknown_127"] = hdr('{"a":{"x":' + "[" * 126 + "]" * 126
                                  + ',"dtype":"U8","shape":[],"data_offsets":[0,1]}}', b"x")
    out["deep_unknown_200"] = hdr('{"a":{"x":' + "[" * 200 + "]" * 200
                                  + ',"dtype":"U8","shape":[],"data_offsets":[0,1]}}', b"x")
    out["deep_metadata"] = hdr('{"__metadata__":' + "{\"a\":" * 150 + "1" + "}" * 150 + "}")
    out["tensor_named_metadata_value_array"] = hdr('{"__metadata__":[]}')
    return out


def jsontestsuite_seeds(suite):
    out = {}
    if not suite or not os.path.isdir(suite):
        return out
    for fn in sorted(os.listdir(suite)):
        if not fn.endswith(".json") or fn[:2] not in ("n_", "y_", "i_"):
            continue
        with open(os.path.join(suite, fn), "rb") as f:
            doc = f.read()
        stem = fn[:-5]
        out[f"jts_whole_{stem}"] = frame(doc)
        out[f"jts_field_{stem}"] = frame(
            b'{"a":{"x":' + doc + b',"dtype":"U8","shape":[1],"data_offsets":[0,1]}}', b"z")
        out[f"jts_meta_{stem}"] = frame(b'{"__metadata__":{"k":' + doc + b'}}')
    return out


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    outdir = argv[1]
    suite = os.environ.get("JSONTESTSUITE", DEFAULT_SUITE)
    if "--jsontestsuite" in argv:
        suite = argv[argv.index("--jsontestsuite") + 1]
    os.makedirs(outdir, exist_ok=True)
    seeds = {}
    seeds.update(valid_seeds())
    seeds.update(malformed_seeds())
    jts = jsontestsuite_seeds(suite)
    if not jts:
        print(f"make_seeds.py: no JSONTestSuite at {suite} (set JSONTESTSUITE); "
              "continuing without it", file=sys.stderr)
    seeds.update(jts)
    for name, blob in seeds.items():
        safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in name)
        digest = hashlib.sha1(blob).hexdigest()[:8]
        with open(os.path.join(outdir, f"{safe}-{digest}"), "wb") as f:
            f.write(blob)
    print(f"wrote {len(seeds)} seeds to {outdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
