"""Per-framework load benchmark: ``<framework>.load_file`` time and peak RSS, ours
against upstream safetensors 0.8.0, on the GPT-2-like file (548 MB of F32).

Needs the framework venvs and upstream's unpacked wheel that .ci/frameworks.sh
makes (build/venv-<fw>, build/upstream-0.8.0).  Each measurement is a fresh
process of that venv's interpreter, ours (PYTHONPATH=repo) and upstream
(PYTHONPATH=build/upstream-0.8.0) alternating; medians and ratios printed as
a Markdown table.  The "memcpy" row copies every tensor of the same file with
NumPy (``safe_open(framework="np")`` views, ``.copy()``): the floor for a
framework that must copy (MLX).

    .venv/bin/python bench/frameworks.py [--rounds 5] [--frameworks tf paddle mlx flax]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
WORK = os.path.join(BENCH, ".work")
UPSTREAM = os.path.join(REPO, "build", "upstream-0.8.0")
MODULES = {"tf": "tensorflow", "paddle": "paddle", "mlx": "mlx", "flax": "flax"}
IMPORTS = {"tf": "tensorflow", "paddle": "paddle", "mlx": "mlx.core", "flax": "jax"}

# Runs in the fresh process: argv = module, framework import, file.
WORKER = r"""
import importlib, json, sys, time
mod_name, fw_import, path = sys.argv[1:4]
importlib.import_module(fw_import)
def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
def finish(out):
    if fw_import == "jax":
        import jax; jax.block_until_ready(list(out.values()))
    elif fw_import == "mlx.core":
        import mlx.core as mx; mx.eval(list(out.values()))
if mod_name == "memcpy":
    import numpy as np
    from safetensors import safe_open
    def load(path):
        with safe_open(path, framework="np") as f:
            return {k: v.copy() for k, v in f.get_tensors().items()}
else:
    load = importlib.import_module("safetensors." + mod_name).load_file
open("/proc/self/clear_refs", "w").write("5")
base = rss("VmRSS")
start = time.perf_counter()
out = load(path)
finish(out)
seconds = time.perf_counter() - start
print(json.dumps({"s": seconds, "peak_mb": (rss("VmHWM") - base) / 1024, "n": len(out)}))
"""


def aligned_copy(path):
    """The same tensors written again by our writer with ``alignment=64`` (``safetensors rewrite
    --alignment 64``, docs/integrity.md): the data, hence every tensor of this file, starts 64-byte
    aligned, which TensorFlow and JAX need to load without a copy."""
    from safetensors.cli import rewrite_file

    out = path.replace(".safetensors", "-aligned.safetensors")
    if not os.path.exists(out):
        rewrite_file(path, out, alignment=64)
    return out


def data_offset(path):
    import struct

    with open(path, "rb") as f:
        return 8 + struct.unpack("<Q", f.read(8))[0]


def gpt2_file():
    sys.path[:0] = [BENCH, REPO]
    from workloads import gpt2

    path = os.path.join(WORK, "frameworks-gpt2.safetensors")
    if not os.path.exists(path):
        import numpy as np

        from safetensors.numpy import save_file

        shapes, _ = gpt2()
        save_file({k: np.full(s, 0.5, np.float32) for k, s in shapes.items()}, path, metadata={"format": "np"})
    return path


def measure(fw, impl, path):
    python = os.path.join(REPO, "build", f"venv-{fw}", "bin", "python")
    env = dict(os.environ, PYTHONPATH=UPSTREAM if impl == "upstream" else REPO)
    module = "memcpy" if impl == "memcpy" else MODULES[fw]
    p = subprocess.run([python, "-W", "ignore", "-c", WORKER, module, IMPORTS[fw], path], env=env, cwd=WORK,
                       capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        raise RuntimeError(f"{fw} {impl}: {p.stderr.strip().splitlines()[-1:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--frameworks", nargs="+", default=["tf", "paddle", "mlx", "flax"])
    args = parser.parse_args()
    os.makedirs(WORK, exist_ok=True)
    files = {"as written": gpt2_file()}
    files["64-byte aligned"] = aligned_copy(files["as written"])
    print(f"GPT-2-like file: {os.path.getsize(files['as written']) / 1e6:.0f} MB, data at byte "
          f"{data_offset(files['as written'])} (mod 64: {data_offset(files['as written']) % 64}); aligned copy: "
          f"data at {data_offset(files['64-byte aligned'])}. {args.rounds} rounds, fresh process each, "
          "ours and upstream alternating; medians\n")
    print("| framework | file | ours load_file | upstream 0.8.0 | time ratio | ours peak RSS | upstream peak RSS |")
    print("|---|---|---|---|---|---|---|")
    # TF and JAX alias only aligned buffers: they get both files.
    cells = [(fw, f) for fw in args.frameworks for f in files if fw in ("tf", "flax") or f == "as written"]
    for fw, label in cells:
        path = files[label]
        impls = ["ours", "upstream"] + (["memcpy"] if fw == "mlx" else [])
        runs = {impl: [] for impl in impls}
        for r in range(args.rounds):
            for impl in impls if r % 2 == 0 else list(reversed(impls)):
                runs[impl].append(measure(fw, impl, path))
        med = {impl: (statistics.median(x["s"] for x in v), statistics.median(x["peak_mb"] for x in v))
               for impl, v in runs.items()}
        (ts, rs), (tu, ru) = med["ours"], med["upstream"]
        print(f"| {fw} | {label} | {ts * 1e3:.1f} ms | {tu * 1e3:.1f} ms | {ts / tu:.2f} | {rs:.0f} MB | {ru:.0f} MB |")
        if "memcpy" in med:
            tm, rm = med["memcpy"]
            print(f"| {fw}: NumPy copy of the same tensors (memcpy floor) | {label} | {tm * 1e3:.1f} ms | | "
                  f"ours/floor {ts / tm:.2f} | {rm:.0f} MB | |")


if __name__ == "__main__":
    main()
