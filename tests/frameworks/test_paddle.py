"""safetensors.paddle and safe_open(framework="paddle") against real paddle."""

import numpy as np
import pytest

import _fwcommon as common

paddle = common.import_framework("paddle")

import safetensors.paddle as st_paddle  # noqa: E402
from safetensors import safe_open  # noqa: E402

FW = "paddle"
# Every dtype paddle has that safetensors can hold.
DTYPES = common.PLAIN + ["bfloat16", "float8_e4m3fn", "float8_e5m2"]
RETYPED = ("bfloat16", "float8_e4m3fn", "float8_e5m2")


def to_numpy(tensor):
    name = st_paddle._dtype_name(tensor.dtype)
    array = np.asarray(tensor.numpy())
    if name in RETYPED:   # paddle hands these out as their raw bits
        array = array.view(common.numpy_dtype(name))
    assert array.dtype == common.numpy_dtype(name), (array.dtype, name)
    return array


@pytest.mark.parametrize("dtype", DTYPES)
def test_roundtrip(dtype, tmp_path):
    common.check_roundtrip(st_paddle, FW, to_numpy, dtype, tmp_path)


@pytest.mark.parametrize("dtype", ["float32", "int8", "bfloat16", "float8_e5m2"])
def test_slices_with_steps(dtype, tmp_path):
    common.check_slices(FW, to_numpy, dtype, tmp_path)


def test_upstream_fixture(tmp_path):
    common.check_upstream_fixture(st_paddle, FW, to_numpy, tmp_path)


@pytest.mark.parametrize("dtype", ["bfloat16", "float8_e4m3fn", "float8_e5m2", "uint32", "uint64"])
def test_dtypes_numpy_cannot_hand_paddle(dtype, tmp_path):
    # paddle.to_tensor rejected these NumPy arrays: every load path failed.
    array = np.arange(6, dtype=np.float32).astype(common.numpy_dtype(dtype)).reshape(2, 3)
    path = str(tmp_path / "d.safetensors")
    common.st_numpy.save_file({"a": array}, path)
    data = open(path, "rb").read()
    for loaded in (st_paddle.load_file(path)["a"], st_paddle.load(data)["a"]):
        assert loaded.dtype == getattr(paddle, dtype)
        assert to_numpy(loaded).tobytes() == array.tobytes()
    with safe_open(path, framework=FW) as f:
        assert to_numpy(f.get_tensor("a")).tobytes() == array.tobytes()


@pytest.mark.parametrize("modulo", [0, 8])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float8_e4m3fn", "int64"])
def test_load_is_zero_copy_at_any_alignment(dtype, modulo, tmp_path):
    array = np.arange(1 << 16, dtype=np.float32).astype(common.numpy_dtype(dtype))
    path = str(tmp_path / "z.safetensors")
    common.write_at_alignment(path, {"a": array}, modulo)
    tensor = st_paddle.load_file(path)["a"]
    assert common.mapped(path, tensor.data_ptr()), "paddle tensor is a copy, not a view of the file"
    assert to_numpy(tensor).tobytes() == array.tobytes()
    with safe_open(path, framework=FW) as f:
        tensor = f.get_tensor("a")
    assert common.mapped(path, tensor.data_ptr())
    del f
    assert to_numpy(tensor).tobytes() == array.tobytes()   # the mapping outlives the handle


def test_tensor_outlives_everything(tmp_path):
    import gc

    array = np.arange(1000, dtype=np.float32)
    path = str(tmp_path / "z.safetensors")
    common.st_numpy.save_file({"a": array}, path)
    tensor = st_paddle.load_file(path)["a"]
    gc.collect()
    tensor += 1   # writable: a private mapping, the file is untouched
    assert float(tensor.sum()) == float(array.sum()) + 1000
    assert np.array_equal(common.st_numpy.load_file(path)["a"], array)


def test_load_bytes_copies(tmp_path):
    array = np.arange(10, dtype=np.int32)
    data = common.st_numpy.save({"a": array})
    tensor = st_paddle.load(data)["a"]
    tensor += 1   # must not write into the immutable bytes object
    assert common.st_numpy.load(data)["a"].tolist() == list(range(10))


def test_uint16_saved_as_u16(tmp_path):
    # str(paddle.uint16) == "paddle.bfloat16": uint16 tensors were saved as BF16.
    tensor = paddle.utils.dlpack.from_dlpack(np.arange(5, dtype=np.uint16))
    assert tensor.dtype == paddle.uint16
    data = st_paddle.save({"u": tensor})
    assert b'"dtype":"U16"' in data
    loaded = st_paddle.load(data)["u"]
    assert loaded.dtype == paddle.uint16
    assert to_numpy(loaded).tolist() == [0, 1, 2, 3, 4]
    bf = paddle.to_tensor([1.5, 2.0], dtype=paddle.bfloat16)
    assert b'"dtype":"BF16"' in st_paddle.save({"b": bf})


def test_device_mapping_is_shared(tmp_path, monkeypatch):
    # safe_open(framework="paddle", device="cuda:0") skipped paddle.py's cuda -> gpu mapping.
    assert st_paddle._paddle_device("cuda:1") == "gpu:1"
    assert st_paddle._paddle_device("cuda") == "gpu:0"
    assert st_paddle._paddle_device(2) == "gpu:2"
    seen = []

    def mapping(device):
        seen.append(device)
        return "cpu"   # no GPU here: the mapping is what is checked

    monkeypatch.setattr(st_paddle, "_paddle_device", mapping)
    path = str(tmp_path / "d.safetensors")
    common.st_numpy.save_file({"a": np.arange(3, dtype=np.float32)}, path)
    with safe_open(path, framework=FW, device="cuda:0") as f:
        assert to_numpy(f.get_tensor("a")).tolist() == [0, 1, 2]
    assert to_numpy(st_paddle.load_file(path, device="cuda:1")["a"]).tolist() == [0, 1, 2]
    assert to_numpy(st_paddle.load_file(path, device="gpu:1")["a"]).tolist() == [0, 1, 2]
    assert seen == ["cuda:0", "cuda:1", "cuda:1"]


def test_dtype_paddle_lacks_raises(tmp_path):
    import ml_dtypes

    path = str(tmp_path / "e.safetensors")
    common.st_numpy.save_file({"a": np.zeros(2, ml_dtypes.float8_e8m0fnu)}, path)
    with pytest.raises(TypeError, match="paddle has no dtype for float8_e8m0fnu"):
        st_paddle.load_file(path)
