"""safetensors.torch: save/load round trips, validation order and messages,
shared-tensor helpers, save_model/load_model, saving over a mapped file."""

import os
import subprocess
import sys
import textwrap

import pytest

torch = pytest.importorskip("torch")

import safetensors  # noqa: E402
import safetensors.torch as st  # noqa: E402
from safetensors.torch import (  # noqa: E402
    _end_ptr,
    _find_shared_tensors,
    _is_complete,
    _remove_duplicate_names,
    load,
    load_file,
    load_model,
    save,
    save_file,
    save_model,
    storage_ptr,
    storage_size,
)

ALL_DTYPES = [
    torch.bool, torch.uint8, torch.int8, torch.int16, torch.uint16, torch.float16, torch.bfloat16,
    torch.int32, torch.uint32, torch.float32, torch.int64, torch.uint64, torch.float64, torch.complex64,
    torch.float8_e4m3fn, torch.float8_e5m2, torch.float8_e8m0fnu, torch.float8_e4m3fnuz, torch.float8_e5m2fnuz,
    torch.float4_e2m1fn_x2,
]
CODES = {
    torch.bool: "BOOL", torch.uint8: "U8", torch.int8: "I8", torch.int16: "I16", torch.uint16: "U16",
    torch.float16: "F16", torch.bfloat16: "BF16", torch.int32: "I32", torch.uint32: "U32",
    torch.float32: "F32", torch.int64: "I64", torch.uint64: "U64", torch.float64: "F64",
    torch.complex64: "C64", torch.float8_e4m3fn: "F8_E4M3", torch.float8_e5m2: "F8_E5M2",
    torch.float8_e8m0fnu: "F8_E8M0", torch.float8_e4m3fnuz: "F8_E4M3FNUZ",
    torch.float8_e5m2fnuz: "F8_E5M2FNUZ", torch.float4_e2m1fn_x2: "F4",
}

NON_CONTIGUOUS_MSG = (
    "You are trying to save a non contiguous tensor: `{}` which is not allowed. It either means you are trying"
    " to save tensors which are reference of each other in which case it's recommended to save only the full"
    " tensors, and reslice at load time, or simply call `.contiguous()` on your tensor to pack it before saving."
)


def rand_tensor(dtype, shape, seed=0):
    """Deterministic tensor of any dtype from random bytes (bool: 0/1)."""
    g = torch.Generator().manual_seed(seed)
    n = 1
    for d in shape:
        n *= d
    size = torch.empty((), dtype=dtype).element_size()
    raw = torch.randint(0, 256, (n * size,), dtype=torch.uint8, generator=g)
    if dtype == torch.bool:
        raw = raw % 2
    return raw.view(dtype).reshape(shape)


def same_bytes(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(
        a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8)
    )


# ---------------------------------------------------------------------------
# round trips
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(), (0,), (3,), (2, 3), (1, 0, 4), (2, 1, 2, 2)], ids=str)
def test_roundtrip_all_dtypes(dtype, shape, tmp_path):
    if dtype == torch.float4_e2m1fn_x2 and shape == ():
        pytest.skip("a 0-d packed F4 tensor holds 2 values: no logical shape")
    t = rand_tensor(dtype, shape, seed=len(shape))
    data = save({"t": t})
    out = load(data)
    assert list(out) == ["t"]
    assert same_bytes(out["t"], t)
    p = tmp_path / "x.safetensors"
    save_file({"t": t}, p)
    assert p.read_bytes() == data
    out2 = load_file(p)
    assert same_bytes(out2["t"], t)
    with safetensors.safe_open(p, "pt") as f:
        assert f.get_slice("t").get_dtype() == CODES[dtype]
        logical = list(shape)
        if dtype == torch.float4_e2m1fn_x2 and logical:
            logical[-1] *= 2
        assert f.get_slice("t").get_shape() == logical


def test_roundtrip_values_float():
    t = {"w": torch.randn(5, 7), "b": torch.randn(7).to(torch.bfloat16), "h": torch.randn(3).half()}
    out = load(save(t))
    for k in t:
        assert torch.equal(out[k], t[k])


def test_many_tensors_all_dtypes_one_file(tmp_path):
    tensors = {f"{i}.{str(d)}": rand_tensor(d, (2, 4), seed=i) for i, d in enumerate(ALL_DTYPES)}
    p = tmp_path / "all.safetensors"
    save_file(tensors, p, metadata={"format": "pt"})
    with safetensors.safe_open(p, "pt") as f:
        assert f.metadata() == {"format": "pt"}
        assert sorted(f.keys()) == sorted(tensors)
    loaded = load_file(p)
    for k, v in tensors.items():
        assert same_bytes(loaded[k], v), k
    # load(bytes) returns the file order (offset order)
    with safetensors.safe_open(p, "pt") as f:
        assert list(load(p.read_bytes())) == f.offset_keys()


def test_load_file_str_path_and_pread(tmp_path):
    t = {"a": torch.arange(10, dtype=torch.int32)}
    p = tmp_path / "a.safetensors"
    save_file(t, str(p))
    assert torch.equal(load_file(str(p))["a"], t["a"])
    assert torch.equal(load_file(p, backend="pread")["a"], t["a"])
    assert torch.equal(load_file(p, device="cpu")["a"], t["a"])


def test_metadata_positional(tmp_path):
    p = tmp_path / "m.safetensors"
    save_file({"a": torch.zeros(2)}, p, {"format": "pt"})
    with safetensors.safe_open(p, "pt") as f:
        assert f.metadata() == {"format": "pt"}
    data = save({"a": torch.zeros(2)}, {"format": "pt"})
    assert b'"__metadata__":{"format":"pt"}' in data


def test_metadata_non_str_value_rejected():
    with pytest.raises(TypeError):
        save({"a": torch.zeros(2)}, metadata={"a": 1})


def test_disjoint_views_of_one_storage_allowed():
    A = torch.arange(6, dtype=torch.float32)
    out = load(save({"x": A[:2], "y": A[2:]}))
    assert torch.equal(out["x"], A[:2]) and torch.equal(out["y"], A[2:])


def test_requires_grad_and_parameter():
    p = torch.nn.Parameter(torch.randn(3, 3))
    out = load(save({"p": p}))
    assert torch.equal(out["p"], p.detach())


def test_conj_and_neg_views_saved_by_value():
    c = torch.tensor([1 + 2j, 3 - 4j], dtype=torch.complex64)
    out = load(save({"c": c.conj()}))
    assert torch.equal(out["c"], torch.tensor([1 - 2j, 3 + 4j], dtype=torch.complex64))


def test_zero_size_tensors_share_nothing():
    E = torch.zeros(0)
    out = load(save({"a": E, "b": E, "c": torch.zeros(2, 0, dtype=torch.int8)}))
    assert out["a"].shape == (0,) and out["c"].shape == (2, 0) and out["c"].dtype == torch.int8


def test_load_is_writable_copy():
    t = {"a": torch.arange(4, dtype=torch.int64)}
    out = load(save(t))
    out["a"][0] = 42
    assert out["a"][0] == 42


def test_load_e8m0_and_f4_from_bytes():
    e8 = torch.tensor([1.0, 2.0, 0.5]).to(torch.float8_e8m0fnu)
    f4 = torch.tensor([[0x12, 0x34]], dtype=torch.uint8).view(torch.float4_e2m1fn_x2)
    data = save({"e8": e8, "f4": f4})
    assert b'"F4","shape":[1,4]' in data
    out = load(data)
    assert same_bytes(out["e8"], e8)
    assert same_bytes(out["f4"], f4) and out["f4"].shape == (1, 2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_tensors_saved(tmp_path):
    t = {"g": torch.arange(100, dtype=torch.float32, device="cuda").reshape(10, 10), "c": torch.ones(3)}
    data = save(t)
    out = load(data)
    assert torch.equal(out["g"], t["g"].cpu()) and out["g"].device.type == "cpu"
    p = tmp_path / "g.safetensors"
    save_file(t, p)
    assert p.read_bytes() == data
    back = load_file(p, device="cuda:0")
    assert back["g"].device.type == "cuda" and torch.equal(back["g"], t["g"])


def test_import_does_not_need_numpy_for_saving():
    # torch itself may try to import numpy; block it entirely and save anyway.
    code = textwrap.dedent(
        """
        import sys, warnings
        warnings.simplefilter("ignore")
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name == "numpy" or name.startswith("numpy."):
                    raise ModuleNotFoundError("numpy blocked", name=name)
        sys.meta_path.insert(0, Block())
        import torch
        import safetensors.torch as st
        data = st.save({"test": torch.zeros((2, 2), dtype=torch.int32)})
        assert data[:8] == b"@" + b"\\0" * 7, data[:8]
        assert "numpy" not in sys.modules
        print("ok")
        """
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr


# ---------------------------------------------------------------------------
# validation order and messages
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("fn", ["save", "save_file"])
def test_not_a_dict(fn, tmp_path):
    args = ([torch.zeros(1)],) if fn == "save" else ([torch.zeros(1)], tmp_path / "x")
    with pytest.raises(ValueError) as e:
        getattr(st, fn)(*args)
    assert str(e.value) == "Expected a dict of [str, torch.Tensor] but received <class 'list'>"
    assert not (tmp_path / "x").exists()


def test_not_a_tensor():
    with pytest.raises(ValueError) as e:
        save({"a": torch.zeros(2), "b": 1})
    assert str(e.value) == "Key `b` is invalid, expected torch.Tensor but received <class 'int'>"


def test_not_a_tensor_before_sparse():
    sp = torch.zeros(3, 3).to_sparse()
    with pytest.raises(ValueError, match="Key `b` is invalid"):
        save({"a": sp, "b": "x"})


def test_sparse_message():
    sp = torch.zeros(3, 3).to_sparse()
    with pytest.raises(ValueError) as e:
        save({"a": sp, "c": torch.zeros(2), "b": sp.clone()})
    assert str(e.value) == (
        "You are trying to save a sparse tensors: `['a', 'b']` which this library does not support. You can make"
        " it a dense tensor before saving with `.to_dense()` but be aware this might make a much larger file than"
        " needed."
    )


def test_sparse_before_shared():
    A = torch.zeros(4)
    with pytest.raises(ValueError, match="sparse"):
        save({"a": A, "b": A, "s": torch.zeros(2, 2).to_sparse()})


def test_shared_message():
    A = torch.zeros(4)
    with pytest.raises(RuntimeError) as e:
        save({"a": A, "b": A, "c": torch.zeros(3)})
    msg = str(e.value)
    assert msg.startswith("\n            Some tensors share memory, this will lead to duplicate memory on disk and")
    assert "potential differences when loading them again: [{" in msg
    assert "'a'" in msg and "'b'" in msg and "'c'" not in msg
    assert "A potential way to correctly save your model is to use `save_model`." in msg
    assert "More information at https://huggingface.co/docs/safetensors/torch_shared_tensors" in msg


def test_overlapping_views_are_shared():
    A = torch.zeros(10)
    with pytest.raises(RuntimeError, match="share memory"):
        save({"x": A[:3], "y": A[2:]})


def test_shared_before_non_contiguous():
    A = torch.zeros(4, 4)
    with pytest.raises(RuntimeError, match="share memory"):
        save({"a": A, "b": A.t()})


def test_non_contiguous_message():
    with pytest.raises(ValueError) as e:
        save({"ok": torch.zeros(2), "a": torch.zeros(3, 4).t()})
    assert str(e.value) == NON_CONTIGUOUS_MSG.format("a")


def test_channels_last_rejected():
    t = torch.zeros(1, 3, 4, 4).to(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match="non contiguous"):
        save({"x": t})


def test_meta_tensor_fails():
    with pytest.raises((RuntimeError, NotImplementedError)):
        save({"m": torch.empty(3, device="meta")})


# ---------------------------------------------------------------------------
# shared-storage helpers
# ---------------------------------------------------------------------------

def test_storage_ptr_and_size():
    A = torch.zeros(10, dtype=torch.float32)
    assert storage_ptr(A[3:]) == storage_ptr(A) == A.data_ptr()
    assert storage_size(A[3:]) == 40
    assert storage_ptr(torch.empty(3, device="meta")) == 0


def test_find_shared_examples():
    A = torch.zeros(4)
    assert _find_shared_tensors({"B": A[:2], "C": A[2:]}) == [{"B"}, {"C"}]
    assert _find_shared_tensors({"B": A[:2], "C": A[1:]}) == [{"B", "C"}]
    m = torch.zeros(4)
    n = torch.zeros(4)
    assert _find_shared_tensors({"m": m, "n": n}) == [{"m"}, {"n"}]
    assert _find_shared_tensors({"a": A, "b": A, "c": torch.zeros(1)}) == [{"a", "b"}, {"c"}]
    assert _find_shared_tensors({"meta": torch.empty(2, device="meta"), "e": torch.zeros(0)}) == []


def test_end_ptr_and_complete():
    A = torch.zeros(10, dtype=torch.float64)
    assert _end_ptr(A) == A.data_ptr() + 80
    assert _end_ptr(A[2:5]) == A.data_ptr() + 40
    assert _end_ptr(A[:0]) == A[:0].data_ptr()
    assert _is_complete(A) and not _is_complete(A[1:]) and not _is_complete(A[:9])
    M = torch.zeros(3, 4)
    assert _end_ptr(M.t()) == M.data_ptr() + 48  # strided views work too


def test_remove_duplicate_names():
    A = torch.zeros(10)
    assert dict(_remove_duplicate_names({"a": A, "b": A, "c": A[:]})) == {"a": ["b", "c"]}
    assert dict(_remove_duplicate_names({"a": A, "b": A, "c": A[:]}, preferred_names=["c"])) == {"c": ["a", "b"]}
    assert dict(_remove_duplicate_names({"a": A, "b": A}, discard_names=["a"])) == {"b": ["a"]}
    assert dict(_remove_duplicate_names({"x": torch.zeros(2)})) == {}
    with pytest.raises(RuntimeError) as e:
        _remove_duplicate_names({"x": A[:3]})
    assert str(e.value) == (
        "Error while trying to find names to remove to save state dict, but found no suitable name to keep for"
        " saving amongst: {'x'}. None is covering the entire storage.Refusing to save/load the model since you"
        " could be storing much more memory than needed. Please refer to"
        " https://huggingface.co/docs/safetensors/torch_shared_tensors for more information. Or open an issue."
    )


def test_semi_private_names_exist():
    for name in ["_SIZE", "_TYPES", "_getdtype", "_view2torch", "_to_ndarray", "_tobytes", "_flatten_as_ptr",
                 "_evaluate_tensors_for_save", "_filter_shared_not_shared", "safe_open"]:
        assert hasattr(st, name), name
    assert st.safe_open is safetensors.safe_open
    assert st._SIZE[torch.float8_e8m0fnu] == 1 and st._SIZE[torch.uint64] == 8
    assert st._getdtype("BF16") is torch.bfloat16 and st._getdtype("F8_E8M0") is torch.float8_e8m0fnu
    with pytest.raises(KeyError):
        st._getdtype("F6_E2M3")


def test_tobytes_alias():
    t = torch.tensor([1, 2, 3], dtype=torch.int16)
    assert st._tobytes(t, "t") == b"\x01\x00\x02\x00\x03\x00"
    assert st._tobytes(torch.zeros(0), "e") == b""
    assert st._tobytes(torch.tensor([[2.25, 1], [1, 1]], dtype=torch.bfloat16), "b").hex() == "1040803f803f803f"
    with pytest.raises(ValueError, match="non contiguous"):
        st._tobytes(torch.zeros(2, 3).t(), "x")


def test_flatten_as_ptr_and_to_ndarray():
    keep = []
    specs = st._flatten_as_ptr({"a": torch.arange(3, dtype=torch.float32)}, keep)
    assert specs["a"].dtype == "F32" and specs["a"].shape == [3] and specs["a"].data_len == 12
    assert len(keep) == 1 and specs["a"].data_ptr == keep[0].data_ptr()
    arr, t = st._to_ndarray(torch.arange(3, dtype=torch.int16))
    assert arr.dtype.name == "uint8" and arr.tobytes() == b"\x00\x00\x01\x00\x02\x00"
    assert st._evaluate_tensors_for_save({"a": torch.zeros(1)}) is None


# ---------------------------------------------------------------------------
# save_model / load_model
# ---------------------------------------------------------------------------

class Tied(torch.nn.Module):
    def __init__(self, tie=True):
        super().__init__()
        self.a = torch.nn.Linear(4, 4)
        self.b = torch.nn.Linear(4, 4)
        if tie:
            self.b.weight = self.a.weight


def test_save_model_tied_roundtrip(tmp_path):
    m = Tied()
    p = tmp_path / "m.safetensors"
    md = {"format": "pt"}
    save_model(m, p, md)
    assert md == {"format": "pt"}  # caller's metadata untouched
    with safetensors.safe_open(p, "pt") as f:
        assert sorted(f.keys()) == ["a.bias", "a.weight", "b.bias"]
        assert f.metadata() == {"format": "pt", "b.weight": "a.weight"}
    m2 = Tied()
    missing, unexpected = load_model(m2, p)
    assert missing == set() and unexpected == []
    assert isinstance(missing, set) and isinstance(unexpected, list)
    for k, v in m.state_dict().items():
        assert torch.equal(m2.state_dict()[k], v)
    assert m2.b.weight is m2.a.weight


def test_save_model_without_sharing_has_no_metadata(tmp_path):
    p = tmp_path / "m.safetensors"
    save_model(Tied(tie=False), p)
    with safetensors.safe_open(p, "pt") as f:
        assert f.metadata() is None
    save_model(Tied(tie=False), p, metadata={})
    with safetensors.safe_open(p, "pt") as f:
        assert f.metadata() == {}


def test_save_model_user_metadata_key_wins(tmp_path):
    p = tmp_path / "m.safetensors"
    save_model(Tied(), p, {"b.weight": "custom"})
    with safetensors.safe_open(p, "pt") as f:
        assert f.metadata() == {"b.weight": "custom"}


def test_load_model_untied_target_non_strict(tmp_path):
    p = tmp_path / "m.safetensors"
    save_model(Tied(), p)
    m = Tied(tie=False)
    missing, unexpected = load_model(m, p, strict=False)
    assert missing == {"b.weight"} and unexpected == []
    with pytest.raises(RuntimeError) as e:
        load_model(Tied(tie=False), p)
    assert str(e.value) == 'Error(s) in loading state_dict for Tied:\n    Missing key(s) in state_dict: "b.weight"'


def test_load_model_wrong_model(tmp_path):
    p = tmp_path / "m.safetensors"
    save_model(Tied(), p)
    lin = torch.nn.Linear(2, 3)
    with pytest.raises(RuntimeError) as e:
        load_model(lin, p)
    assert str(e.value) == (
        "Error(s) in loading state_dict for Linear:\n"
        '    Missing key(s) in state_dict: "bias", "weight"\n'
        '    Unexpected key(s) in state_dict: "a.bias", "a.weight", "b.bias"'
    )
    missing, unexpected = load_model(torch.nn.Linear(2, 3), p, strict=False)
    assert missing == {"bias", "weight"} and sorted(unexpected) == ["a.bias", "a.weight", "b.bias"]


def test_load_model_tied_target_from_untied_file(tmp_path):
    # the file has both names; the model ties them: the duplicate is "unexpected"
    p = tmp_path / "m.safetensors"
    save_model(Tied(tie=False), p)
    missing, unexpected = load_model(Tied(), p, strict=False)
    assert missing == set() and unexpected == ["b.weight"]


def test_save_model_non_contiguous(tmp_path):
    class N(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(3, 4).t())

    with pytest.raises(ValueError) as e:
        save_model(N(), tmp_path / "n.safetensors", force_contiguous=False)
    assert str(e.value) == NON_CONTIGUOUS_MSG.format("w") + (
        " Or use save_model(..., force_contiguous=True), read the docs for potential caveats."
    )
    save_model(N(), tmp_path / "n.safetensors")
    m = N()
    load_model(m, tmp_path / "n.safetensors")


def test_save_model_view_of_bigger_storage_refused(tmp_path):
    class V(torch.nn.Module):
        def __init__(self):
            super().__init__()
            big = torch.zeros(10)
            self.register_buffer("v", big[:3])

    with pytest.raises(RuntimeError, match="None is covering the entire storage"):
        save_model(V(), tmp_path / "v.safetensors")


# ---------------------------------------------------------------------------
# saving over a file this process still has mapped (upstream #762)
# ---------------------------------------------------------------------------

def test_save_over_mapped_source(tmp_path):
    p = tmp_path / "model.safetensors"
    orig = {"a": torch.arange(1000, dtype=torch.float32), "b": torch.arange(10, dtype=torch.int64)}
    save_file(orig, p)
    loaded = load_file(p)  # views of the file mapping
    snapshot = {k: v.clone() for k, v in loaded.items()}
    loaded["c"] = torch.ones(5)
    save_file(loaded, p)  # written from the mapped tensors themselves
    again = load_file(p)
    assert set(again) == {"a", "b", "c"}
    assert torch.equal(again["a"], orig["a"]) and torch.equal(again["b"], orig["b"])
    assert torch.equal(again["c"], torch.ones(5))
    # the old views still read the old data
    for k, v in snapshot.items():
        assert torch.equal(loaded[k], v)
    # and a change of content is visible only in the new file
    save_file({"a": torch.zeros(3)}, p)
    assert torch.equal(load_file(p)["a"], torch.zeros(3))
    assert torch.equal(loaded["a"], orig["a"])
    assert os.listdir(tmp_path) == ["model.safetensors"]
