"""CUDA load benchmark: load_file(device="cuda:0"), ours against upstream 0.8.0.

Run on a GPU machine, from the repo root, with ours built in place:
    python bench/cuda_load.py --upstream-path DIR [--gb 4]
DIR holds upstream's `safetensors` package (its abi3 wheel's files), since the
GPU machine may have no network. Each implementation runs in fresh processes,
alternating, warm page cache; prints median seconds and GB/s.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

WORKER = r"""
import json, sys, time, torch
from safetensors.torch import load_file
import safetensors
path, backend = sys.argv[1], sys.argv[2]
torch.zeros(1, device="cuda"); torch.cuda.synchronize()
load_file(path, device="cuda:0", backend=backend)   # warm-up: pinned cache, CUDA context
torch.cuda.synchronize()
t = time.perf_counter()
d = load_file(path, device="cuda:0", backend=backend)
torch.cuda.synchronize()
dt = time.perf_counter() - t
check = float(sum(float(v.view(torch.uint8)[::4099].sum()) for v in d.values()))
print(json.dumps({"version": safetensors.__version__, "seconds": dt, "check": check}))
"""


def run(path, backend, pythonpath):
    env = dict(os.environ, PYTHONPATH=pythonpath)
    # cwd away from the repo: `python -c` puts the cwd first on sys.path.
    out = subprocess.run([sys.executable, "-c", WORKER, path, backend], env=env, check=True,
                         capture_output=True, text=True, cwd=os.path.dirname(path)).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--upstream-path", required=True)
    ap.add_argument("--gb", type=float, default=4.0)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.path.insert(0, repo)
    import torch
    from safetensors.torch import save_file

    n = max(1, int(args.gb * 2**30 / (64 << 20)))
    tensors = {f"layers.{i}.weight": torch.full((8192, 4096), i, dtype=torch.bfloat16)
               for i in range(n)}
    nbytes = sum(t.numel() * t.element_size() for t in tensors.values())
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "shard.safetensors")
        save_file(tensors, path)
        del tensors
        for backend in ("mmap", "pread"):
            times = {"ours": [], "upstream": []}
            checks = {}
            for _ in range(args.rounds):
                for name, pp in (("upstream", os.path.abspath(args.upstream_path)), ("ours", repo)):
                    r = run(path, backend, pp)
                    assert ("+c" in r["version"]) == (name == "ours"), r["version"]
                    times[name].append(r["seconds"])
                    checks[name] = r["check"]
            assert checks["ours"] == checks["upstream"], checks
            up, ours = statistics.median(times["upstream"]), statistics.median(times["ours"])
            print(f"cuda load_file {nbytes / 1e9:.2f} GB backend={backend}: "
                  f"upstream {up:.3f}s ({nbytes / up / 1e9:.1f} GB/s), "
                  f"ours {ours:.3f}s ({nbytes / ours / 1e9:.1f} GB/s), ratio {ours / up:.3f}")


if __name__ == "__main__":
    main()
