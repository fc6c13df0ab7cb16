"""Page faults and time of torch load_file + touching every page, for one implementation.

    python bench/touch_faults.py FILE         (ours: run from the repo with it built in place)
    build/bench/venv-upstream/bin/python bench/touch_faults.py FILE   (upstream; run from outside the repo)

Shows what the "touch" cells of the benchmark are made of: both implementations map the file
lazily, so touching costs kernel page faults; ours takes fewer where the page cache holds large
folios (one mapping per load, docs/design.md) and has a second core map pages in.
"""
import resource
import sys
import time

import torch

import safetensors
from safetensors.torch import load_file


def main(path, rounds=10):
    load_file(path)
    faults = load = touch = 0.0
    for _ in range(rounds):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t0 = time.perf_counter()
        tensors = load_file(path)
        t1 = time.perf_counter()
        for t in tensors.values():
            flat = t.reshape(-1)
            if flat.numel():
                flat.view(torch.uint8)[::4096].sum()
        t2 = time.perf_counter()
        faults += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
        load += t1 - t0
        touch += t2 - t1
        del tensors
    print(f"{safetensors.__version__}: load_file {load / rounds * 1e3:.1f} ms, "
          f"touch {touch / rounds * 1e3:.1f} ms, minor faults per round {faults / rounds:.0f}")


if __name__ == "__main__":
    main(sys.argv[1])
