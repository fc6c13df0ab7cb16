"""safetensors.flax and safe_open(framework="flax") against real JAX."""

import numpy as np
import pytest

import _fwcommon as common

jax = common.import_framework("jax")

import safetensors.flax as st_flax  # noqa: E402
from safetensors import safe_open  # noqa: E402

FW = "flax"
# Every dtype JAX has that safetensors can hold.
DTYPES = common.PLAIN + ["bfloat16", "float8_e4m3fn", "float8_e5m2", "float8_e8m0fnu",
                         "float8_e4m3fnuz", "float8_e5m2fnuz"]


@pytest.fixture(autouse=True)
def x64():
    """64-bit dtypes exist only with jax_enable_x64 (off by default)."""
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", False)


def to_numpy(array):
    return np.asarray(array)


@pytest.mark.parametrize("dtype", DTYPES)
def test_roundtrip(dtype, tmp_path):
    common.check_roundtrip(st_flax, FW, to_numpy, dtype, tmp_path)


@pytest.mark.parametrize("dtype", ["float32", "int8", "bfloat16", "float8_e5m2"])
def test_slices_with_steps(dtype, tmp_path):
    common.check_slices(FW, to_numpy, dtype, tmp_path)


def test_upstream_fixture(tmp_path):
    common.check_upstream_fixture(st_flax, FW, to_numpy, tmp_path)


def test_without_x64_64_bit_narrows_like_upstream(tmp_path):
    jax.config.update("jax_enable_x64", False)
    path = str(tmp_path / "w.safetensors")
    common.st_numpy.save_file({"i": np.arange(3, dtype=np.int64), "f": np.arange(3, dtype=np.float64)}, path)
    out = st_flax.load_file(path)
    assert out["i"].dtype == np.int32 and out["f"].dtype == np.float32
    assert out["i"].tolist() == [0, 1, 2]


@pytest.mark.parametrize("dtype", ["float32", "int64", "bfloat16", "float8_e4m3fn"])
def test_aligned_load_is_zero_copy(dtype, tmp_path):
    array = np.arange(1 << 16, dtype=np.float32).astype(common.numpy_dtype(dtype))
    path = str(tmp_path / "z.safetensors")
    common.write_at_alignment(path, {"a": array}, 0)
    with safe_open(path, framework=FW) as f:
        from_handle = f.get_tensor("a")
    for loaded in (st_flax.load_file(path)["a"], from_handle):
        assert common.mapped(path, loaded.unsafe_buffer_pointer()), "aligned array was copied"
        assert to_numpy(loaded).tobytes() == array.tobytes()


def test_writer_alignment_64_loads_zero_copy(tmp_path):
    import jax.numpy as jnp

    common.check_alignment_64_loads_zero_copy(st_flax, jnp.asarray, to_numpy, lambda a: a.unsafe_buffer_pointer(),
                                              tmp_path)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_misaligned_load_is_one_copy(dtype, tmp_path):
    array = np.arange(1 << 16, dtype=np.float32).astype(common.numpy_dtype(dtype))
    path = str(tmp_path / "m.safetensors")
    common.write_at_alignment(path, {"a": array}, 8)
    loaded = st_flax.load_file(path)["a"]
    assert not common.mapped(path, loaded.unsafe_buffer_pointer())
    assert float((loaded * 2).astype(np.float64).sum()) == 2 * float(array.astype(np.float64).sum())


def test_loaded_array_outlives_the_handle(tmp_path):
    import gc

    array = np.arange(4096, dtype=np.float32)
    path = str(tmp_path / "z.safetensors")
    common.write_at_alignment(path, {"a": array}, 0)
    with safe_open(path, framework=FW) as f:
        loaded = f.get_tensor("a")
    del f
    gc.collect()
    assert float(loaded.sum()) == float(array.sum())
