"""safetensors.tensorflow and safe_open(framework="tf") against real TensorFlow."""

import numpy as np
import pytest

import _fwcommon as common

tf = common.import_framework("tensorflow")

import safetensors.tensorflow as st_tf  # noqa: E402
from safetensors import safe_open  # noqa: E402

FW = "tf"
# Every dtype TensorFlow has that safetensors can hold.
DTYPES = common.PLAIN + ["bfloat16", "float8_e4m3fn", "float8_e5m2"]


def to_numpy(tensor):
    return np.asarray(tensor.numpy())


def address(tensor):
    """Where the tensor's buffer lives (TensorFlow exports it through DLPack)."""
    return np.from_dlpack(tensor).ctypes.data


@pytest.mark.parametrize("dtype", DTYPES)
def test_roundtrip(dtype, tmp_path):
    common.check_roundtrip(st_tf, FW, to_numpy, dtype, tmp_path)


@pytest.mark.parametrize("dtype", ["float32", "int8", "bfloat16", "float8_e5m2"])
def test_slices_with_steps(dtype, tmp_path):
    common.check_slices(FW, to_numpy, dtype, tmp_path)


def test_upstream_fixture(tmp_path):
    common.check_upstream_fixture(st_tf, FW, to_numpy, tmp_path)


def test_scalars_save(tmp_path):
    # upstream cannot save 0-d tensors (.numpy() gives a NumPy scalar); we can.
    data = st_tf.save({"s": tf.constant(2.5), "b": tf.constant(True)})
    out = st_tf.load(data)
    assert out["s"].shape == () and float(out["s"]) == 2.5 and bool(out["b"])


@pytest.mark.parametrize("dtype", ["float32", "int64", "bfloat16", "uint8"])
def test_aligned_load_is_zero_copy(dtype, tmp_path):
    array = np.arange(1 << 16, dtype=np.float32).astype(common.numpy_dtype(dtype))
    path = str(tmp_path / "z.safetensors")
    common.write_at_alignment(path, {"a": array}, 0)
    for tensor in (st_tf.load_file(path)["a"], safe_open(path, framework=FW).get_tensor("a")):
        if dtype != "bfloat16":   # NumPy cannot import a bfloat16 DLPack: checked by value only
            assert common.mapped(path, address(tensor)), "aligned tensor was copied"
        assert to_numpy(tensor).tobytes() == array.tobytes()
        assert float(tf.reduce_sum(tf.cast(tensor, tf.float64))) == float(array.astype(np.float64).sum())


def test_writer_alignment_64_loads_zero_copy(tmp_path):
    # NumPy cannot import a bfloat16 DLPack: that one is checked by value only.
    common.check_alignment_64_loads_zero_copy(st_tf, tf.constant, to_numpy, address, tmp_path,
                                              unaddressable=lambda t: t.dtype == tf.bfloat16)


@pytest.mark.parametrize("dtype", ["float32", "int64", "bfloat16"])
def test_misaligned_load_is_one_copy(dtype, tmp_path):
    # A misaligned DLPack import succeeds and aborts the process on the first op:
    # reaching the end of this test is the check that none was made.
    array = np.arange(1 << 16, dtype=np.float32).astype(common.numpy_dtype(dtype))
    path = str(tmp_path / "m.safetensors")
    common.write_at_alignment(path, {"a": array}, 8)
    for tensor in (st_tf.load_file(path)["a"], safe_open(path, framework=FW).get_tensor("a")):
        total = float(tf.reduce_sum(tf.cast(tensor * 2, tf.float64)))
        assert total == 2 * float(array.astype(np.float64).sum())
        if dtype != "bfloat16":
            assert not common.mapped(path, address(tensor))
            assert address(tensor) % 64 == 0


def test_loaded_tensor_outlives_the_handle(tmp_path):
    import gc

    array = np.arange(4096, dtype=np.float32)
    path = str(tmp_path / "z.safetensors")
    common.write_at_alignment(path, {"a": array}, 0)
    with safe_open(path, framework=FW) as f:
        tensor = f.get_tensor("a")
    del f
    gc.collect()
    assert float(tf.reduce_sum(tensor)) == float(array.sum())
