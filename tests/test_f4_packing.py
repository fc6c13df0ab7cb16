"""F4 in torch: pairs of values along the last dimension (docs/format.md §3.2).

A file may hold an F4 tensor whose last dimension is odd (the byte count is
whole when another dimension is even); torch's float4_e2m1fn_x2 cannot hold
it. That is a clear SafetensorError on both backends, never a torch error or
a tensor missing a byte.
"""

import pytest

torch = pytest.importorskip("torch")

from safetensors import SafetensorError, safe_open  # noqa: E402

pytestmark = pytest.mark.skipif(not hasattr(torch, "float4_e2m1fn_x2"),
                                reason="this torch has no float4_e2m1fn_x2")


@pytest.mark.parametrize("backend", ["mmap", "pread"])
def test_odd_last_dim_is_refused(mk, backend):
    path = mk.header({"a": {"dtype": "F4", "shape": [2, 3], "data_offsets": [0, 3]}}, b"\x21\x43\x65")
    with safe_open(path, "pt", backend=backend) as f:
        assert f.get_slice("a").get_shape() == [2, 3]
        with pytest.raises(SafetensorError, match="last dimension of 3: float4_e2m1fn_x2 holds 2 values"):
            f.get_tensor("a")


@pytest.mark.parametrize("backend", ["mmap", "pread"])
def test_even_last_dim_is_halved(mk, backend):
    path = mk.header({"a": {"dtype": "F4", "shape": [3, 2], "data_offsets": [0, 3]}}, b"\x21\x43\x65")
    with safe_open(path, "pt", backend=backend) as f:
        t = f.get_tensor("a")
    assert t.dtype == torch.float4_e2m1fn_x2 and tuple(t.shape) == (3, 1)
    assert t.view(torch.uint8).flatten().tolist() == [0x21, 0x43, 0x65]


def test_load_bytes_follows_the_same_rule(mk):
    from safetensors.torch import load

    odd = open(mk.header({"a": {"dtype": "F4", "shape": [2, 3], "data_offsets": [0, 3]}}, b"\x21\x43\x65"), "rb").read()
    with pytest.raises(SafetensorError, match="last dimension of 3"):
        load(odd)
    even = open(mk.header({"a": {"dtype": "F4", "shape": [3, 2], "data_offsets": [0, 3]}}, b"\x21\x43\x65"), "rb").read()
    t = load(even)["a"]
    assert tuple(t.shape) == (3, 1) and t.view(torch.uint8).flatten().tolist() == [0x21, 0x43, 0x65]
