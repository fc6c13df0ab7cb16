"""Cost of independent arrays (issue 9): time per tensor and mappings per
file for load_file on the GPT-2-like file (160 f32 tensors, 548 MB) and the
100,000-tensor file, numpy and torch, mmap and pread.

    python bench/independent_arrays_cost.py DIR [--peer PATH_OF_OTHER_BUILD]

Files are written into DIR once. With --peer, every measurement alternates
between this build and the other source tree (one subprocess each, rounds
interleaved), so the two are compared under the same machine load.
"""
import json
import os
import subprocess
import sys
import time

ROUNDS = 5


def make_files(out_dir):
    import numpy as np
    sys.path.insert(0, os.path.dirname(__file__))
    from workloads import gpt2, header_heavy
    from safetensors.numpy import save_file
    paths = {}
    for name, (shapes, _) in (("gpt2", gpt2()), ("header100k", header_heavy())):
        path = os.path.join(out_dir, name + ".safetensors")
        if not os.path.exists(path):
            save_file({k: np.full(s, 0.5, np.float32) for k, s in shapes.items()}, path)
        paths[name] = path
    return paths


def measure(path, fw, backend):
    """One subprocess: (seconds for load_file, tensors, mappings of the file while they live)."""
    import gc
    if fw == "pt":
        from safetensors.torch import load_file
    else:
        from safetensors.numpy import load_file
    real = os.path.realpath(path)
    load_file(path, backend=backend)  # warm the page cache
    gc.collect()
    t0 = time.perf_counter()
    tensors = load_file(path, backend=backend)
    elapsed = time.perf_counter() - t0
    with open("/proc/self/maps") as maps:
        mappings = sum(1 for line in maps if line.rstrip("\n").endswith(real))
    return {"seconds": elapsed, "tensors": len(tensors), "mappings": mappings}


def main():
    if sys.argv[1] == "--child":
        src, path, fw, backend = sys.argv[2:6]
        sys.path.insert(0, src)
        print(json.dumps(measure(path, fw, backend)))
        return
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    peer = sys.argv[sys.argv.index("--peer") + 1] if "--peer" in sys.argv else None
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    builds = {"this": here, **({"peer": peer} if peer else {})}
    sys.path.insert(0, here)
    paths = make_files(out_dir)
    for name, path in paths.items():
        for fw in ("np", "pt"):
            for backend in ("mmap", "pread"):
                results = {b: [] for b in builds}
                for _ in range(ROUNDS):
                    for b, src in builds.items():
                        out = subprocess.run([sys.executable, __file__, "--child", src, path, fw, backend],
                                             check=True, capture_output=True, text=True).stdout
                        results[b].append(json.loads(out))
                line = f"{name:10s} {fw} {backend:5s}"
                for b, rs in results.items():
                    best = min(r["seconds"] for r in rs)
                    n = rs[0]["tensors"]
                    line += (f" | {b}: {best * 1e3:8.2f} ms, {best / n * 1e6:7.2f} us/tensor,"
                             f" {rs[0]['mappings']:5d} mappings")
                print(line, flush=True)


if __name__ == "__main__":
    main()
