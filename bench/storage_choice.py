"""backend=None against forced "mmap" and "pread": torch load_file of one file, cold and warm.

    python bench/storage_choice.py FILE [--samples 3] [--fw pt|np]

Each sample is a fresh process that (cold) evicts the file with posix_fadvise(DONTNEED) after
fsync and checks with mincore that it worked, or (warm) loads it once untimed; then it times
load_file(FILE, backend=...) and the same plus reading one byte of every 4 KiB page. The
backends alternate within each round. Prints one line per sample, then the medians.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
CHILD = """
import json, sys, time
sys.path.insert(0, {here!r})
from worker import drop_cache, resident_fraction, touch_np, touch_pt
path, backend, state, fw = sys.argv[1:5]
backend = None if backend == "auto" else backend
if fw == "pt":
    import torch
    from safetensors.torch import load_file
    touch = touch_pt
else:
    from safetensors.numpy import load_file
    touch = touch_np
from safetensors import safe_open
if state == "cold":
    resident = drop_cache(path)
else:
    load_file(path)
    resident = resident_fraction(path)
t0 = time.perf_counter()
with safe_open(path, fw, backend=backend) as f:
    d = f.get_tensors()
    chosen, reason = f.backend, f.backend_reason
t1 = time.perf_counter()
touch(d.values())
t2 = time.perf_counter()
print(json.dumps({{"resident": resident, "load": t1 - t0, "touch": t2 - t0, "chosen": chosen,
                  "reason": reason}}))
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("file")
    ap.add_argument("--samples", type=int, default=3)
    ap.add_argument("--fw", default="pt", choices=["pt", "np"])
    args = ap.parse_args()
    child = CHILD.format(here=HERE)
    results = {}
    for state in ("cold", "warm"):
        for i in range(args.samples):
            order = ["auto", "mmap", "pread"]
            order = order[i % 3:] + order[:i % 3]  # alternate who goes first
            for backend in order:
                run = subprocess.run([sys.executable, "-c", child, args.file, backend, state, args.fw],
                                     capture_output=True, text=True, check=True)
                r = json.loads(run.stdout.strip().splitlines()[-1])
                results.setdefault((state, backend), []).append(r)
                print(f"{state} {backend:5} sample {i + 1}: load {r['load'] * 1e3:8.1f} ms, "
                      f"load+touch {r['touch'] * 1e3:8.1f} ms, resident before {r['resident']:.0%}, "
                      f"chose {r['chosen']} ({r['reason']})", flush=True)
    print("medians (ms): state backend load load+touch")
    for (state, backend), rs in results.items():
        print(f"  {state} {backend:5} {statistics.median(r['load'] for r in rs) * 1e3:8.1f} "
              f"{statistics.median(r['touch'] for r in rs) * 1e3:8.1f}")


if __name__ == "__main__":
    main()
