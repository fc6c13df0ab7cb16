"""CUDA loading: skipped where torch has no CUDA device (CI); run on a GPU machine."""
import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

from safetensors import safe_open  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.int64, torch.uint8, torch.bool,
          torch.float8_e4m3fn, torch.complex64]


@pytest.fixture
def checkpoint(tmp_path):
    gen = torch.Generator().manual_seed(0)
    tensors = {}
    for i, dtype in enumerate(DTYPES):
        raw = torch.randint(0, 256, (3 + i, 5, 7 * 8), dtype=torch.uint8, generator=gen)
        tensors[f"t{i}"] = raw.view(dtype) if dtype != torch.bool else raw % 2 == 1
    tensors["scalar"] = torch.tensor(3.5)
    tensors["empty"] = torch.zeros(0, 4)
    tensors["big"] = torch.randn(64, 1024, 1024, generator=gen)   # 256 MiB: threaded reads
    path = tmp_path / "ckpt.safetensors"
    save_file(tensors, path)
    return path, tensors


@pytest.mark.parametrize("backend", ["mmap", "pread"])
@pytest.mark.parametrize("device", ["cuda", "cuda:0", 0])
def test_load_file_to_cuda_matches_cpu(checkpoint, backend, device):
    path, expected = checkpoint
    loaded = load_file(path, device=device, backend=backend)
    assert list(loaded) == list(load_file(path))
    for name, tensor in expected.items():
        got = loaded[name]
        assert got.device.type == "cuda" and got.dtype == tensor.dtype and got.shape == tensor.shape
        assert torch.equal(got.cpu().reshape(-1).view(torch.uint8), tensor.reshape(-1).view(torch.uint8))


def test_get_tensor_and_slice_on_cuda(checkpoint, source):
    path, expected = checkpoint
    with source.open(path, "pt", device="cuda:0") as f:
        big = f.get_tensor("big")
        assert big.is_cuda and torch.equal(big.cpu(), expected["big"])
        part = f.get_slice("big")[3:9, ::-2, 5]
        assert part.is_cuda and torch.equal(part.cpu(), expected["big"].flip(1)[3:9, ::2, 5])


def test_save_file_from_cuda(tmp_path):
    tensors = {"a": torch.arange(12.0, device="cuda").reshape(3, 4)}
    save_file(tensors, tmp_path / "g.safetensors")
    assert torch.equal(load_file(tmp_path / "g.safetensors")["a"], tensors["a"].cpu())
