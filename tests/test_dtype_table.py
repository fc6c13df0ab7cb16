"""The extension's dtype table (docs/format.md §3), which the Python modules read
instead of keeping their own copies. The expectations here are written out
independently of the C table."""

from safetensors import _safetensors_c

EXPECTED = [
    ("BOOL", 8, "bool", "numpy", 1),
    ("F4", 4, "float4_e2m1fn_x2", None, 2),
    ("F6_E2M3", 6, None, None, 1),
    ("F6_E3M2", 6, None, None, 1),
    ("U8", 8, "uint8", "numpy", 1),
    ("I8", 8, "int8", "numpy", 1),
    ("F8_E5M2", 8, "float8_e5m2", "ml_dtypes", 1),
    ("F8_E4M3", 8, "float8_e4m3fn", "ml_dtypes", 1),
    ("F8_E8M0", 8, "float8_e8m0fnu", "ml_dtypes", 1),
    ("F8_E4M3FNUZ", 8, "float8_e4m3fnuz", "ml_dtypes", 1),
    ("F8_E5M2FNUZ", 8, "float8_e5m2fnuz", "ml_dtypes", 1),
    ("I16", 16, "int16", "numpy", 1),
    ("U16", 16, "uint16", "numpy", 1),
    ("F16", 16, "float16", "numpy", 1),
    ("BF16", 16, "bfloat16", "ml_dtypes", 1),
    ("I32", 32, "int32", "numpy", 1),
    ("U32", 32, "uint32", "numpy", 1),
    ("F32", 32, "float32", "numpy", 1),
    ("C64", 64, "complex64", "numpy", 1),
    ("F64", 64, "float64", "numpy", 1),
    ("I64", 64, "int64", "numpy", 1),
    ("U64", 64, "uint64", "numpy", 1),
]


def test_table_matches_the_format():
    assert list(_safetensors_c._dtype_table()) == EXPECTED


def test_numpy_names_are_numpy_dtypes_of_that_size():
    import numpy as np

    for _, bits, type_name, source, _ in EXPECTED:
        if source == "numpy":
            assert np.dtype(type_name).itemsize * 8 == bits, type_name
