"""The fast paths of saving: the sweep over byte ranges that comes before
the storage-based shared-memory check of safetensors.torch, TensorSpec._of,
the one-pass validation (same errors in the same order as the exact path),
and st_write_file's bounded write calls (files byte-identical to save())."""

import random

import pytest

torch = pytest.importorskip("torch")
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings, strategies as hs  # noqa: E402

import safetensors.torch as st  # noqa: E402
from safetensors import SafetensorError, TensorSpec, _safetensors_c  # noqa: E402

overlap = st._ranges_overlap
PAD = st._SWEEP_MIN  # this many extra independent tensors puts a dict on the sweep path


def padded(d, n=PAD):
    out = {f"pad.{i}": torch.full((3,), float(i)) for i in range(n)}
    out.update(d)
    return out


# ---------------------------------------------------------------- _ranges_overlap

@pytest.mark.parametrize("starts, ends, expected", [
    ([], [], False),
    ([0], [10], False),
    ([0, 10], [10, 20], False),          # touching is not overlapping
    ([10, 0], [20, 10], False),          # order of the input does not matter
    ([0, 5], [10, 6], True),             # nested
    ([5, 0], [6, 10], True),
    ([0, 9], [10, 12], True),
    ([4, 0], [4, 10], True),             # an empty range inside another
    ([0, 0], [0, 10], False),            # an empty range at the start of another
    ([0, 0, 0], [0, 0, 0], False),       # tensors without storage
    ([2**64 - 10, 2**64 - 5], [2**64 - 4, 2**64 - 1], True),
])
def test_ranges_overlap_cases(starts, ends, expected):
    assert overlap(starts, ends) is expected


@settings(max_examples=300, deadline=None)
@given(hs.lists(hs.tuples(hs.integers(0, 60), hs.integers(0, 8)), max_size=12))
def test_ranges_overlap_is_a_sound_first_pass(pairs):
    starts = [s for s, _ in pairs]
    ends = [s + n for s, n in pairs]
    others = [(i, j) for i in range(len(pairs)) for j in range(len(pairs)) if i != j]
    got = overlap(starts, ends)
    # never "no" when two non-empty ranges intersect or one starts strictly inside another
    if any(max(starts[i], starts[j]) < min(ends[i], ends[j]) or starts[j] < starts[i] < ends[j]
           for i, j in others):
        assert got
    # never "maybe" when no range starts inside (or at the start of) another
    if not any(starts[j] <= starts[i] < ends[j] for i, j in others):
        assert not got


# ---------------------------------------------------------------- shared memory, sweep path vs exact path

def outcome(fn, *args):
    try:
        fn(*args)
    except Exception as e:  # noqa: BLE001 - the type and message are what we compare
        return type(e).__name__, str(e)
    return None


def exact_outcome(d):
    """What the storage-based check alone says (the path below _SWEEP_MIN)."""
    failing = [names for names in st._find_shared_tensors(d) if len(names) > 1]
    return bool(failing)


def test_overlapping_views_among_many_tensors_raise_the_shared_error(tmp_path):
    base = torch.arange(100.0)
    d = padded({"a": base[:60], "b": base[50:]})
    with pytest.raises(RuntimeError, match=r"Some tensors share memory.*\{'[ab]', '[ab]'\}"):
        st.save_file(d, tmp_path / "x.safetensors")
    assert not (tmp_path / "x.safetensors").exists()


def test_disjoint_views_of_one_storage_among_many_tensors_save(tmp_path):
    base = torch.arange(1000.0)
    d = {f"v{i}": base[i * 10:(i + 1) * 10] for i in range(100)}
    st.save_file(d, tmp_path / "x.safetensors")
    back = st.load_file(tmp_path / "x.safetensors")
    for k, v in d.items():
        assert torch.equal(back[k], v)


def test_empty_views_never_share_memory(tmp_path):
    # torch gives an empty tensor data_ptr() 0, so neither check sees it inside another
    base = torch.arange(10.0)
    for empty in (base[4:4], base[0:0], base[10:]):
        d = padded({"full": base, "empty": empty})
        assert not exact_outcome(d)
        st.save_file(d, tmp_path / "x.safetensors")
        assert st.load_file(tmp_path / "x.safetensors")["empty"].shape == (0,)


def test_strided_view_overlap_is_found_before_the_contiguity_error(tmp_path):
    m = torch.zeros(10, 10)
    d = padded({"column": m[:, 0], "row": m[5]})
    with pytest.raises(RuntimeError, match="share memory"):
        st.save_file(d, tmp_path / "x.safetensors")
    d = padded({"column": torch.zeros(10, 10)[:, 0]})
    with pytest.raises(ValueError, match="non contiguous tensor: `column`"):
        st.save_file(d, tmp_path / "x.safetensors")


@settings(max_examples=60, deadline=None)
@given(hs.lists(hs.tuples(hs.integers(0, 2), hs.integers(0, 30), hs.integers(0, 12)), min_size=1, max_size=8),
       hs.sampled_from([0, PAD]))
def test_sweep_path_raises_exactly_when_the_exact_check_does(views, pad):
    storages = [torch.arange(48.0) for _ in range(3)]
    d = {f"t{i}": storages[s][a:a + n] for i, (s, a, n) in enumerate(views)}
    d = padded(d, pad)
    expected = exact_outcome(d)
    got = outcome(st._scan_for_save, d, [])
    if expected:
        assert got is not None and got[0] == "RuntimeError" and "share memory" in got[1]
    else:
        assert got is None


# ---------------------------------------------------------------- TensorSpec._of, one-pass specs

def test_tensor_spec_of_matches_the_keyword_constructor():
    for dtype, shape in [("float32", [2, 3]), ("bfloat16", ()), ("float4_e2m1fn_x2", (4, 2)), ("int8", (0,))]:
        a = TensorSpec._of(dtype, shape, 1234, 24)
        b = TensorSpec(dtype=dtype, shape=list(shape), data_ptr=1234, data_len=24)
        assert repr(a) == repr(b)
    assert TensorSpec._of("float32", torch.Size([2, 3]), 8, 24).shape == [2, 3]
    with pytest.raises(TypeError):
        TensorSpec._of("float32", [1], 0)
    with pytest.raises(SafetensorError, match="Unknown dtype"):
        TensorSpec._of("F32", [1], 0, 4)
    with pytest.raises(OverflowError):
        TensorSpec._of("float32", [1], -1, 4)
    with pytest.raises(TypeError):
        TensorSpec._of("float32", 3, 0, 4)


def mixed_dict(n):
    rng = random.Random(n)
    d = {}
    for i in range(n):
        kind = rng.randrange(6)
        if kind == 0:
            d[f"s{i}"] = torch.tensor(float(i))                       # 0-d
        elif kind == 1:
            d[f"v{i}"] = torch.arange(rng.randrange(0, 9), dtype=torch.int16)
        elif kind == 2:
            d[f"m{i}"] = torch.randn(3, 2).to(torch.bfloat16)
        elif kind == 3:
            d[f"c{i}"] = torch.randn(3, dtype=torch.complex64).conj()  # conjugate bit: copied
        elif kind == 4:
            d[f"n{i}"] = torch._neg_view(torch.randn(2, 2))  # negative bit: copied
        else:
            d[f"b{i}"] = torch.tensor([True, False])
    return d


@pytest.mark.parametrize("n", [5, PAD + 40])
def test_one_pass_specs_make_the_same_file_as_plain_specs(tmp_path, n):
    d = mixed_dict(n)
    keep = []
    plain = {}
    for k, v in d.items():
        t = st._cpu_ready(v)
        keep.append(t)
        nbytes = t.nelement() * t.element_size()
        plain[k] = TensorSpec(dtype=st._dtype_name(t.dtype), shape=list(t.shape),
                              data_ptr=t.data_ptr() if nbytes else 0, data_len=nbytes)
    expected = _safetensors_c.serialize(plain, metadata={"k": "v"})
    assert st.save(d, metadata={"k": "v"}) == expected
    st.save_file(d, tmp_path / "x.safetensors", metadata={"k": "v"})
    assert (tmp_path / "x.safetensors").read_bytes() == expected
    back = st.load_file(tmp_path / "x.safetensors")
    for k, v in d.items():
        assert torch.equal(back[k], v.resolve_conj().resolve_neg())


def test_errors_keep_upstream_order_on_the_one_pass_path(tmp_path):
    # an unknown dtype (complex128) is reported only after validation: the
    # non-contiguous tensor later in the dict wins, as upstream
    d = padded({"c": torch.zeros(2, dtype=torch.complex128), "nc": torch.zeros(4, 4).t()})
    with pytest.raises(ValueError, match="non contiguous tensor: `nc`"):
        st.save_file(d, tmp_path / "x.safetensors")
    d = padded({"c": torch.zeros(2, dtype=torch.complex128), "ok": torch.zeros(2)})
    with pytest.raises(SafetensorError, match="Unknown dtype"):
        st.save_file(d, tmp_path / "x.safetensors")
    d = padded({"bad": [1, 2], "sparse": torch.zeros(3).to_sparse()})
    with pytest.raises(ValueError, match="Key `bad` is invalid"):
        st.save_file(d, tmp_path / "x.safetensors")
    d = padded({"sparse": torch.zeros(3).to_sparse(), "bad": [1, 2]})
    with pytest.raises(ValueError, match="Key `bad` is invalid"):
        st.save_file(d, tmp_path / "x.safetensors")
    d = padded({"sparse": torch.zeros(3).to_sparse(), "m": torch.empty(2, device="meta")})
    with pytest.raises(ValueError, match="sparse tensors: `\\['sparse'\\]`"):
        st.save_file(d, tmp_path / "x.safetensors")
    assert not (tmp_path / "x.safetensors").exists()


def test_serialize_reads_a_snapshot_of_the_dict():
    a = torch.arange(4.0)
    specs = {"a": TensorSpec._of("float32", (4,), a.data_ptr(), 16)}

    class Odd(dict):
        def items(self):  # the C reader does not call Python-level items()
            raise AssertionError("items() called")

    assert _safetensors_c.serialize(Odd(specs)) == _safetensors_c.serialize(specs)
    with pytest.raises(TypeError, match="not an instance of 'dict'"):
        _safetensors_c.serialize([("a", specs["a"])])


# ---------------------------------------------------------------- bounded write calls

PIECE = 8 << 20  # st_writer.c ST_WRITE_PIECE


@pytest.mark.parametrize("sizes", [
    [PIECE - 1], [PIECE], [PIECE + 1], [3, PIECE - 200, 5], [2 * PIECE + 17, 1], [1] * 1100 + [PIECE + 3],
])
def test_save_file_in_pieces_is_byte_identical_to_save(tmp_path, sizes):
    d = {f"t{i:05d}": torch.arange(n, dtype=torch.uint8) for i, n in enumerate(sizes)}
    st.save_file(d, tmp_path / "x.safetensors")
    assert (tmp_path / "x.safetensors").read_bytes() == st.save(d)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.safetensors"]
