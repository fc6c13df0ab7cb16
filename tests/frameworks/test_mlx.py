"""safetensors.mlx and safe_open(framework="mlx") against real MLX (mlx[cpu])."""

import numpy as np
import pytest

import _fwcommon as common

mlx = common.import_framework("mlx")
try:
    import mlx.core as mx
except ImportError as error:   # plain `mlx` without the `cpu` extra on Linux
    pytest.skip(f"mlx.core cannot be imported (install mlx[cpu]): {error}", allow_module_level=True)

import safetensors.mlx as st_mlx  # noqa: E402
from safetensors import safe_open  # noqa: E402

FW = "mlx"
# Every dtype MLX has (it has no float8).
DTYPES = common.PLAIN + ["bfloat16"]


def to_numpy(array):
    if array.dtype == mx.bfloat16:   # NumPy cannot take MLX's bfloat16 buffer
        return np.asarray(array.view(mx.uint16)).view(common.numpy_dtype("bfloat16"))
    return np.asarray(array)


@pytest.mark.parametrize("dtype", DTYPES)
def test_roundtrip(dtype, tmp_path):
    common.check_roundtrip(st_mlx, FW, to_numpy, dtype, tmp_path)


@pytest.mark.parametrize("dtype", ["float32", "int8", "bfloat16", "float64"])
def test_slices_with_steps(dtype, tmp_path):
    # negative steps failed: MLX takes no negative strides
    common.check_slices(FW, to_numpy, dtype, tmp_path)


def test_upstream_fixture(tmp_path):
    common.check_upstream_fixture(st_mlx, FW, to_numpy, tmp_path)


def test_float64_stays_float64(tmp_path):
    # plain mx.array(numpy float64) narrows to float32 (upstream's load does).
    path = str(tmp_path / "d.safetensors")
    values = np.array([1 + 2 ** -40, 3.0])
    common.st_numpy.save_file({"d": values}, path)
    loaded = st_mlx.load_file(path)["d"]
    assert loaded.dtype == mx.float64
    assert np.asarray(loaded).tolist() == values.tolist()


def test_float8_has_no_mlx_dtype(tmp_path):
    import ml_dtypes

    path = str(tmp_path / "e.safetensors")
    common.st_numpy.save_file({"a": np.zeros(2, ml_dtypes.float8_e4m3fn)}, path)
    with pytest.raises(TypeError, match="MLX has no dtype for float8_e4m3fn"):
        st_mlx.load_file(path)


def test_load_is_one_copy(tmp_path):
    array = np.arange(1 << 16, dtype=np.float32)
    path = str(tmp_path / "z.safetensors")
    common.write_at_alignment(path, {"a": array}, 0)
    with safe_open(path, framework=FW) as f:
        loaded = f.get_tensor("a")
    del f
    view = np.asarray(loaded)
    assert not common.mapped(path, view.ctypes.data)
    assert view.tobytes() == array.tobytes()
