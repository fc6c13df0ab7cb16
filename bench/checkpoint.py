"""Benchmark (issue 21): loading a sharded checkpoint, warm and cold.

    python bench/checkpoint.py [--rounds N] [--reps N] [--only SUBSTRING] [--out-dir DIR]

The checkpoint: 4 shards of about 516 MB of bfloat16 Llama-like layers
(`model-0000K-of-00004.safetensors`) and `model.safetensors.index.json` (`weight_map`,
`metadata.total_size`), written once by upstream's `save_file` into build/bench/work/ckpt4.
Four loaders, each cell in fresh processes, warm (every shard in the page cache) and cold
(every shard dropped from it before each sample, checked with mincore):

  a_upstream_loop   upstream 0.8.0 as transformers loads it: for each shard,
                    `with safe_open(shard, "pt") as f:` `get_tensor` of every key
  b_ours_loop       the same loop with ours
  c_ours_load_file  ours `safetensors.torch.load_file(index_path)`: every shard in one call
  d_ours_prefetch   ours `with safe_open(checkpoint_dir, "pt") as f: f.prefetch()`, then
                    `get_tensor` of every key

then, in every cell, one byte of every 4 KiB page of every tensor is read (bench/worker.py's
touch: the load is materialized, lazy mappings included). A loader whose API is missing or
fails is reported "not available: <error>" and the others still run. Rounds alternate the
loaders, rotating who goes first; each process times --reps loads (the first is the process's
first). The storage limit is a fifth row of the cold rounds, sampled as the loaders are
(storage_limit: plain parallel preads of every shard into reused buffers, no tensors; each
sample the fastest of the 3 best configurations of bench/storage_limit.py's grid, run once on
the first shard before the rounds): cold loads are judged by their median against its median,
not against one lucky pass. Results: DIR/checkpoint.md (table with every sample) and DIR/checkpoint.json.
Ours is imported with the repository root on PYTHONPATH (`python setup.py build_ext --inplace`).
"""
import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH)
import report  # noqa: E402  (fmt, machine_info)
import worker  # noqa: E402  (touch_pt, drop_cache, resident_fraction: no safetensors import)

CKPT = "ckpt4"
SHARDS = 4
INDEX = "model.safetensors.index.json"
LOADERS = {  # name: (implementation, description)
    "a_upstream_loop": ("upstream", "upstream 0.8.0: per shard `safe_open` + `get_tensor` of every key"),
    "b_ours_loop": ("ours", "ours: the same loop"),
    "c_ours_load_file": ("ours", "ours: `load_file(index)`"),
    "d_ours_prefetch": ("ours", "ours: `safe_open(dir)` + `prefetch()` + `get_tensor` of every key"),
    "storage_limit": ("raw", "the storage limit: every shard read by parallel preads into reused "
                      "buffers (no tensors), in the grid's best configuration"),
}
MODES = ("warm", "cold")
COLD_RESIDENT_MAX = 0.05  # a "cold" sample with more of the checkpoint cached is not judged
GOAL_FRACTION, GOAL_COLD_SPEEDUP, GOAL_WARM_SPEEDUP = 0.9, 1.5, 1.0  # issue 21, for c and d


def shard_name(k):
    return f"model-{k:05d}-of-{SHARDS:05d}.safetensors"


def layout(n_layer=20, vocab=32000, h=2048, kv=512, inter=5632):
    """[(name, shape, shard number)] in state-dict order: a Llama-like ~1B model (grouped-query
    attention) in bfloat16, cut into SHARDS shards of about equal size, as transformers' sharding
    does (whole tensors, in order)."""
    shapes = [("model.embed_tokens.weight", (vocab, h))]
    for i in range(n_layer):
        p = f"model.layers.{i}."
        shapes += [(p + "self_attn.q_proj.weight", (h, h)), (p + "self_attn.k_proj.weight", (kv, h)),
                   (p + "self_attn.v_proj.weight", (kv, h)), (p + "self_attn.o_proj.weight", (h, h)),
                   (p + "mlp.gate_proj.weight", (inter, h)), (p + "mlp.up_proj.weight", (inter, h)),
                   (p + "mlp.down_proj.weight", (h, inter)), (p + "input_layernorm.weight", (h,)),
                   (p + "post_attention_layernorm.weight", (h,))]
    shapes += [("model.norm.weight", (h,)), ("lm_head.weight", (vocab, h))]
    sizes = [2 * math.prod(s) for _, s in shapes]
    total, out, cum = sum(sizes), [], 0
    for (name, shape), size in zip(shapes, sizes):
        out.append((name, shape, min(SHARDS, 1 + int((cum + size / 2) * SHARDS / total))))
        cum += size
    return out


def expected_index():
    lay = layout()
    return {"metadata": {"total_size": sum(2 * math.prod(s) for _, s, _ in lay)},
            "weight_map": {n: shard_name(k) for n, _, k in sorted(lay)}}


def generate(d):
    """Write the shards with upstream's writer (run by the upstream interpreter), index last."""
    import torch
    from safetensors.torch import save_file
    os.makedirs(d, exist_ok=True)
    lay = layout()
    for k in range(1, SHARDS + 1):
        tensors = {n: torch.full(s, 0.5 + k / 8, dtype=torch.bfloat16) for n, s, sk in lay if sk == k}
        save_file(tensors, os.path.join(d, shard_name(k)), metadata={"format": "pt"})
        print(f"[checkpoint] wrote {shard_name(k)}: {len(tensors)} tensors, "
              f"{os.path.getsize(os.path.join(d, shard_name(k))) / 1e6:.1f} MB", flush=True)
        del tensors
    with open(os.path.join(d, INDEX), "w") as f:
        json.dump(expected_index(), f, indent=2)


# ---- the worker: one fresh process, --reps timed loads of one loader ----

def load(loader, d):
    """One load of the whole checkpoint: {name: tensor}, every page touched."""
    import safetensors.torch
    from safetensors import safe_open
    if loader in ("a_upstream_loop", "b_ours_loop"):
        out = {}
        for k in range(1, SHARDS + 1):
            with safe_open(os.path.join(d, shard_name(k)), "pt") as f:
                for name in f.keys():
                    out[name] = f.get_tensor(name)
    elif loader == "c_ours_load_file":
        out = safetensors.torch.load_file(os.path.join(d, INDEX))
    else:
        with safe_open(d, "pt") as f:
            f.prefetch()
            out = {name: f.get_tensor(name) for name in f.keys()}
    worker.touch_pt(out.values())
    return out


def shards_of(d):
    return [os.path.join(d, shard_name(k)) for k in range(1, SHARDS + 1)]


def make_resident(path):
    """Read the file through the page cache (untimed) unless it is all there already."""
    if worker.resident_fraction(path) < 1.0:
        fd = os.open(path, os.O_RDONLY)
        try:
            while os.read(fd, 8 << 20):
                pass
        finally:
            os.close(fd)
    return worker.resident_fraction(path)


def run_raw_worker(args):
    """The storage limit's samples: each is the fastest of the configurations given
    ("threads:block_mib:direct,..."), each read preceded by the same drop of the page cache
    as a loader's: every shard read by bench/storage_limit.py's reader, no tensors made."""
    import storage_limit
    configs = [tuple(int(x) for x in c.split(":")) for c in args.configs.split(",")]
    samples = []
    for _ in range(args.reps):
        best = None
        for threads, block_mib, direct in configs:
            resident = max(worker.drop_cache(p) for p in shards_of(args.dir))
            dt = sum(storage_limit.read_all(p, threads, block_mib << 20, bool(direct))
                     for p in shards_of(args.dir))
            if best is None or dt < best["seconds"]:
                best = {"seconds": dt, "resident": resident,
                        "config": f"{threads}x{block_mib}MiB{' O_DIRECT' if direct else ''}"}
        samples.append(best)
    print(json.dumps({"version": "-", "samples": samples}))


def run_worker(args):
    import gc
    import torch  # noqa: F401  (import costs outside the timing)
    import safetensors
    import safetensors.torch
    impl = LOADERS[args.loader][0]
    ver = safetensors.__version__
    if not (ver.startswith("0.8.0+c") if impl == "ours" else ver == "0.8.0"):
        raise SystemExit(f"wrong safetensors for {impl}: {ver} at {safetensors.__file__}")
    index = expected_index()
    samples = []
    for _ in range(args.reps):
        if args.mode == "cold":
            resident = max(worker.drop_cache(p) for p in shards_of(args.dir))
        else:
            resident = min(make_resident(p) for p in shards_of(args.dir))
        gc.collect()
        t0 = time.perf_counter()
        try:
            out = load(args.loader, args.dir)
        except Exception as e:  # an API not there yet (c, d before issue 21) or a failure
            print(json.dumps({"version": ver, "error": f"{type(e).__name__}: {e}"[:300]}))
            return
        dt = time.perf_counter() - t0
        nbytes = sum(t.numel() * t.element_size() for t in out.values())
        if len(out) != len(index["weight_map"]) or nbytes != index["metadata"]["total_size"]:
            print(json.dumps({"version": ver, "error": f"wrong result: {len(out)} tensors, "
                              f"{nbytes} bytes"}))
            return
        del out
        samples.append({"seconds": dt, "resident": resident})
    print(json.dumps({"version": ver, "samples": samples}))


# ---- the driver ----

def ensure_checkpoint(common):
    d = os.path.join(common.WORK, CKPT)
    try:
        with open(os.path.join(d, INDEX)) as f:
            if json.load(f) == expected_index() and all(map(os.path.exists, shards_of(d))):
                return d
    except (OSError, ValueError):
        pass
    print(f"[checkpoint] generating {d} (upstream writer) ...", flush=True)
    os.makedirs(common.WORK, exist_ok=True)
    subprocess.check_call([common.upstream_python(), os.path.abspath(__file__), "--generate", d],
                          env=common.impl_env("upstream"), cwd=common.WORK)
    return d


def run_cell(common, loader, mode, d, reps, config):
    impl = LOADERS[loader][0]
    py = common.upstream_python() if impl == "upstream" else common.ours_python()
    cmd = [py, os.path.abspath(__file__), "--worker", "--loader", loader, "--mode", mode,
           "--dir", d, "--reps", str(reps)]
    if impl == "raw":
        cmd += ["--configs", ",".join(f"{c['threads']}:{c['block_mib']}:{int(c['direct'])}"
                                      for c in config)]
    p = subprocess.run(cmd, env=common.impl_env(impl), cwd=common.WORK, capture_output=True,
                       text=True, timeout=900)
    if p.returncode != 0:
        return {"error": (p.stderr.strip().splitlines() or [f"exit {p.returncode}"])[-1][:300]}
    return json.loads(p.stdout.strip().splitlines()[-1])


def storage_limit(common, d):
    path = shards_of(d)[0]
    p = subprocess.run([sys.executable, os.path.join(BENCH, "storage_limit.py"), path, "--json"],
                       capture_output=True, text=True, cwd=common.WORK)
    if p.returncode != 0:
        print("[checkpoint] storage limit failed: " + (p.stderr.strip().splitlines() or ["?"])[-1])
        return None
    return json.loads(p.stdout.strip().splitlines()[-1])


def top_configs(limit, n=3):
    """The n fastest distinct configurations of the storage_limit.py grid (cold passes)."""
    ok = [r for r in (limit or {}).get("rows", []) if "gbps" in r
          and (r["direct"] or r["resident_before"] < COLD_RESIDENT_MAX)]
    top = {}
    for r in sorted(ok, key=lambda r: -r["gbps"]):
        top.setdefault((r["threads"], r["block_mib"], r["direct"]), r)
    return list(top.values())[:n]


def summarize(cells, payload, limit):
    """Medians, GB/s, speed against (a), fraction of the limit and the goals, per cell."""
    for (loader, mode), c in cells.items():
        times = [s["seconds"] for s in c["samples"]]
        c["median_s"] = statistics.median(times) if times else None
        c["gbps"] = payload / c["median_s"] / 1e9 if times else None
        c["cold_resident"] = max((s["resident"] for s in c["samples"]), default=None) \
            if mode == "cold" else None
    # the limit: the median of the storage_limit cell, sampled in the same rounds as the loaders
    limit_gbps = cells.get(("storage_limit", "cold"), {}).get("gbps")
    for (loader, mode), c in cells.items():
        a = cells.get(("a_upstream_loop", mode), {}).get("median_s")
        c["speedup_vs_a"] = a / c["median_s"] if (a and c["median_s"]) else None
        c["fraction_of_limit"] = c["gbps"] / limit_gbps if (mode == "cold" and limit_gbps
                                                            and c["gbps"]) else None
        c["goals"] = []  # [(goal, "PASS" / "MISS" / why not judged)]
        if loader == "storage_limit":
            c["speedup_vs_a"] = None
        if loader not in ("c_ours_load_file", "d_ours_prefetch") or c["median_s"] is None:
            continue
        if mode == "warm":
            checks = [(f">= {GOAL_WARM_SPEEDUP}x (a)", c["speedup_vs_a"], GOAL_WARM_SPEEDUP)]
        else:
            checks = [(f">= {GOAL_FRACTION} of limit", c["fraction_of_limit"], GOAL_FRACTION),
                      (f">= {GOAL_COLD_SPEEDUP}x (a)", c["speedup_vs_a"], GOAL_COLD_SPEEDUP)]
        for goal, value, want in checks:
            if mode == "cold" and c["cold_resident"] > COLD_RESIDENT_MAX:
                st = f"not cold ({c['cold_resident']:.0%} cached)"
            else:
                st = "-" if value is None else "PASS" if value >= want else "MISS"
            c["goals"].append((goal, st))
    return limit_gbps


def table(cells, limit, limit_gbps, repo=""):
    lines = ["| mode | loader | samples (ms) | median ms | GB/s | speed vs (a) | "
             "fraction of limit | goal | status |", "|" + "---|" * 9]
    for mode in MODES:
        for loader in LOADERS:
            c = cells.get((loader, mode))
            if c is None:
                continue
            if c.get("error") or c["median_s"] is None:
                why = c.get("error") or "no sample"
                why = ("not available: " if loader[:2] in ("c_", "d_") else "failed: ") + why
                why = why.replace(repo + os.sep, "") if repo else why
                lines.append(f"| {mode} | {loader} | {why} | - | - | - | - | - | - |")
                continue
            samples = ", ".join(f"{s['seconds'] * 1e3:.0f}" for s in c["samples"])
            goals = "; ".join(g for g, _ in c["goals"]) or "-"
            status = "; ".join(st for _, st in c["goals"])
            lines.append(f"| {mode} | {loader} | {samples} | {c['median_s'] * 1e3:.0f}"
                         f" | {report.fmt(c['gbps'], '.2f')} | {report.fmt(c['speedup_vs_a'], '.2f')}"
                         f" | {report.fmt(c['fraction_of_limit'], '.2f')} | {goals} | {status} |")
    top = top_configs(limit)
    if limit_gbps and top:
        how = ", ".join(f"{c['threads']} thread(s) x {c['block_mib']} MiB"
                        f"{' O_DIRECT' if c['direct'] else ''}" for c in top)
        lines += ["", f"Storage limit: **{limit_gbps:.2f} GB/s**, the median of the "
                  f"storage_limit row, sampled in the same rounds as the loaders: each sample "
                  f"is the fastest of plain parallel preads of every shard in the {len(top)} best "
                  f"configurations of bench/storage_limit.py's grid on `{shard_name(1)}` ({how}; "
                  f"its single best pass read {top[0]['gbps']:.2f} GB/s)."]
    elif any(m == "cold" for _, m in cells):
        lines += ["", "Storage limit unknown: cold cells are not judged against it."]
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3, help="processes per cell (default 3)")
    ap.add_argument("--reps", type=int, default=2,
                    help="timed loads per process (default 2; the first is the process's first)")
    ap.add_argument("--only", default=None,
                    help="cells whose 'mode/loader' contains this (e.g. cold, b_ours, warm/c_); "
                         "cold/storage_limit is the limit the cold cells are judged against")
    ap.add_argument("--out-dir", default=None, help="default build/bench/checkpoint")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--generate", metavar="DIR", help=argparse.SUPPRESS)
    ap.add_argument("--loader", choices=list(LOADERS), help=argparse.SUPPRESS)
    ap.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)
    ap.add_argument("--dir", help=argparse.SUPPRESS)
    ap.add_argument("--configs", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.generate:
        return generate(args.generate)
    if args.worker:
        return run_raw_worker(args) if args.loader == "storage_limit" else run_worker(args)

    import common
    from run import check_ours
    t_start = time.time()
    ours = check_ours()
    upstream = common.upstream_python()
    d = ensure_checkpoint(common)
    out_dir = args.out_dir or os.path.join(common.OUT, "checkpoint")
    index = expected_index()
    payload = index["metadata"]["total_size"]
    selected = [(lo, m) for m in MODES for lo in LOADERS if not args.only or args.only in f"{m}/{lo}"]
    selected = [(lo, m) for lo, m in selected if lo != "storage_limit" or m == "cold"]
    limit = None
    if any(lo == "storage_limit" for lo, _ in selected):
        print("[checkpoint] the storage limit's configuration (bench/storage_limit.py's grid on the "
              "first shard) ...", flush=True)
        limit = storage_limit(common, d)
        if not (limit or {}).get("best"):
            selected = [(lo, m) for lo, m in selected if lo != "storage_limit"]
    loaders = [lo for lo in LOADERS if any(lo == s for s, _ in selected)]
    cells = {c: {"samples": [], "processes": []} for c in selected}
    print(f"[checkpoint] {len(index['weight_map'])} tensors, {payload / 1e9:.2f} GB in {SHARDS} "
          f"shards; {args.rounds} round(s) x {args.reps} load(s) per process", flush=True)
    for r in range(args.rounds if loaders else 0):
        k = r % len(loaders)  # rotate who goes first
        for mode in MODES:
            for loader in loaders[k:] + loaders[:k]:
                c = cells.get((loader, mode))
                if c is None or c.get("error"):
                    continue  # not selected, or failed before: not run again
                t0 = time.time()
                res = run_cell(common, loader, mode, d, args.reps, top_configs(limit))
                c["processes"].append(res)
                if "error" in res:
                    c["error"] = res["error"]
                    print(f"[checkpoint] {mode}/{loader}: {res['error']}", flush=True)
                    continue
                for i, s in enumerate(res["samples"]):
                    c["samples"].append(dict(s, round=r, rep=i))
                print(f"[checkpoint] round {r} {mode}/{loader}: "
                      + ", ".join(f"{s['seconds'] * 1e3:.0f} ms" for s in res["samples"])
                      + (f" (resident before: {max(s['resident'] for s in res['samples']):.0%})"
                         if mode == "cold" else "") + f" [{time.time() - t0:.0f}s]", flush=True)
    limit_gbps = summarize(cells, payload, limit)
    text = table(cells, limit, limit_gbps, common.REPO)
    statuses = [st for c in cells.values() for _, st in c.get("goals", [])]
    elapsed = time.time() - t_start
    summary = (f"Goals of issue 21 (loaders c and d): {statuses.count('PASS')} PASS, "
               f"{statuses.count('MISS')} MISS; run took {elapsed:.0f} s.")
    print("\n" + text + "\n" + summary)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "checkpoint.json"), "w") as f:
        json.dump({"checkpoint": d, "payload": payload, "tensors": len(index["weight_map"]),
                   "ours": ours, "upstream": upstream, "machine": report.machine_info(),
                   "rounds": args.rounds, "reps": args.reps, "storage_limit": limit,
                   "limit_gbps": limit_gbps,
                   "cells": {f"{m}/{lo}": c for (lo, m), c in cells.items()}}, f, indent=1)
    with open(os.path.join(out_dir, "checkpoint.md"), "w") as f:
        f.write(page(text, summary, args, ours, payload, len(index["weight_map"]), report))
    print(f"[checkpoint] wrote {out_dir}/checkpoint.md and checkpoint.json")


def page(text, summary, args, ours, payload, n, report):
    import common
    return f"""# Sharded checkpoint loads (issue 21)

Generated by `python bench/checkpoint.py --rounds {args.rounds} --reps {args.reps}` on
{time.strftime('%Y-%m-%d')} (`make bench-checkpoint`).

{text}
{summary}

Goals: cold, (c) and (d) reach at least {GOAL_FRACTION:.0%} of the storage limit
and at least {GOAL_COLD_SPEEDUP}x the speed of (a); warm, they are no slower than (a).
"speed vs (a)" = median time of (a) / median time of the row (higher is faster).

Method:
- Machine: {report.machine_info()}; Python {sys.version.split()[0]}; ours:
  `{ours.replace(common.REPO + os.sep, "")}`; upstream: safetensors 0.8.0 with torch 2.13.0.
- Checkpoint: {n} bfloat16 tensors, {payload / 1e9:.2f} GB of tensor data, in {SHARDS} shards
  of about {payload / SHARDS / 1e6:.0f} MB (a Llama-like model: hidden 2048, grouped-query
  attention 512, MLP 5632, 20 layers, vocabulary 32000), with `{INDEX}`; written once by
  upstream's `save_file` under `build/bench/work/{CKPT}`.
- Loaders: {"; ".join(f"({lo[0]}) {desc}" for lo, (_, desc) in LOADERS.items())}. Every
  load ends by reading one byte of every 4 KiB page of every tensor (as bench/worker.py's
  `*_touch` cells), so lazy mappings are paid for; the timing runs from the first `safe_open`
  (or `load_file`) to the end of that touch. Each load's tensor count and byte total are
  checked against the index.
- Each cell runs in {args.rounds} fresh process(es) per loader; rounds alternate the loaders,
  rotating who goes first; each process times {args.reps} load(s) (the first is the first of
  the process, imports done before). Samples are listed in that order; the median is over all.
- Warm: every shard is read through the page cache (untimed) before each load unless mincore
  shows it all cached. Cold: before each load every shard is fsynced and dropped from the page
  cache (`posix_fadvise(POSIX_FADV_DONTNEED)`), checked with `mincore` on a fresh mapping; a
  cell with more than {COLD_RESIDENT_MAX:.0%} of a shard still cached is not judged.
- Storage limit: the storage_limit row, sampled in the cold rounds like a loader (fresh
  processes, the same drops of the page cache): every shard read by plain parallel `preadv`s
  into reused page-aligned buffers, no tensors made; each sample is the fastest of the 3 best
  configurations found by bench/storage_limit.py's grid on the first shard before the rounds
  (1, 4 and 16 threads of 1 and 4 MiB, buffered and `O_DIRECT`, two passes). Its median is
  the limit: a loader's median against the limit's median, both seen by the same storage in
  the same minutes (the grid's single best pass is printed too; it is a peak, not what the
  storage sustains). GB/s = tensor bytes / median time.
- Cold reads on this machine vary 2-4x between samples: read the samples, not only medians.
"""


if __name__ == "__main__":
    main()
