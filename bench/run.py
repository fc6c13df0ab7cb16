"""Benchmark: our safetensors (C) against upstream safetensors 0.8.0.

    python bench/run.py [--quick] [--rounds N] [--min-time S] [--only SUBSTRING] [--out-dir DIR]

Upstream is installed (once) into build/bench/venv-upstream; ours is imported by the interpreter
running this script with the repository root on PYTHONPATH (build it in place first:
`python setup.py build_ext --inplace`). Workloads are generated once into build/bench/work/.
Results go to --out-dir (default build/bench/): performance.md, performance.png and
results.json (every per-process number). Nothing tracked is written; `make bench-docs`
copies the page and the chart into docs/.
Each (workload, operation) cell runs in fresh processes, alternating upstream and ours,
--rounds processes per implementation, each timing about --min-time seconds of repetitions
after a warm-up.
"""
import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import report  # noqa: E402

LOADS_NP = ["np_load_file", "np_load_file_touch", "np_pread"]
LOADS_PT = ["pt_load_file", "pt_load_file_touch", "pt_pread"]
SAVES_NP = ["np_save_file", "np_save"]
SAVES_PT = ["pt_save_file", "pt_save"]

MATRIX = {
    "gpt2": ["open_keys", "np_get_tensor", "pt_get_tensor", *LOADS_NP, *LOADS_PT,
             "np_get_slice", "pt_get_slice", *SAVES_NP, *SAVES_PT],
    "lora": ["open_keys", *LOADS_NP, *LOADS_PT, *SAVES_NP, *SAVES_PT],
    "shard2g": ["open_keys", *LOADS_NP, *LOADS_PT, "np_get_slice", "pt_get_slice", *SAVES_PT],
    "header100k": ["open_keys", "np_load_file", "pt_load_file", "np_save_file", "pt_save_file"],
}


def cells(only=None, matrix=MATRIX):
    out = [(w, op) for w, ops in matrix.items() for op in ops]
    return [c for c in out if not only or only in f"{c[0]}/{c[1]}"]


def ensure_workloads(quick):
    d = os.path.join(common.WORK, "quick" if quick else "full")
    names = list(MATRIX)
    if not all(os.path.exists(os.path.join(d, n + ".json")) for n in names):
        print(f"[bench] generating workloads into {d} (upstream writer) ...", flush=True)
        cmd = [common.upstream_python(), os.path.join(common.BENCH, "workloads.py"), d]
        subprocess.check_call(cmd + (["--quick"] if quick else []), env=common.impl_env("upstream"),
                              cwd=common.WORK)
    return d


def check_ours():
    os.makedirs(common.WORK, exist_ok=True)   # the cwd below; absent on a fresh clone
    p = subprocess.run([common.ours_python(), "-c",
                        "import safetensors as s; print(s.__version__, s.__file__)"],
                       env=common.impl_env("ours"), cwd=common.WORK, capture_output=True, text=True)
    ver = p.stdout.split()[0] if p.returncode == 0 and p.stdout.split() else ""
    if not ver.startswith("0.8.0+c"):
        msg = p.stdout.strip() or (p.stderr.strip().splitlines() or ["?"])[-1]
        raise SystemExit(f"[bench] our safetensors is not importable from {common.REPO} "
                         f"({msg}); build it: python setup.py build_ext --inplace")
    return p.stdout.strip()


def measure(selected, wdir, rounds, min_time, log=print):
    rows = []
    for w, op in selected:
        path = os.path.join(wdir, w + ".safetensors")
        meta = json.load(open(os.path.join(wdir, w + ".json")))
        res = {"upstream": [], "ours": []}
        t0 = time.time()
        for r in range(rounds):
            order = ("upstream", "ours") if r % 2 == 0 else ("ours", "upstream")
            for impl in order:
                res[impl].append(common.run_worker(
                    impl, ["--file", path, "--op", op, "--min-time", str(min_time)]))
        row = report.summarize(w, op, meta, res)
        row["raw"] = res
        rows.append(row)
        log(f"[bench] {w:10s} {op:20s} ratio {report._f(row['ratio'], '.3f'):>7s} "
            f"{row['status'] or ''} {'; '.join(row['errors'])} ({time.time() - t0:.0f}s)")
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small workloads, 1 round")
    ap.add_argument("--rounds", type=int, default=None, help="processes per implementation (default 2; 1 with --quick)")
    ap.add_argument("--min-time", type=float, default=1.0,
                    help="seconds of timed repetitions per process (>= 1 repetition)")
    ap.add_argument("--only", default=None, help="run cells whose 'workload/op' contains this")
    ap.add_argument("--out-dir", default=common.OUT,
                    help="where the results go (default build/bench)")
    ap.add_argument("--selftest", action="store_true",
                    help="development: run upstream in both slots (ours not needed)")
    args = ap.parse_args()
    rounds = args.rounds or (1 if args.quick else 2)

    if args.selftest:
        os.environ["SAFETENSORS_BENCH_SELFTEST"] = "1"
        ours = "upstream in both slots (selftest)"
    else:
        ours = check_ours()
    upstream = common.upstream_python()
    wdir = ensure_workloads(args.quick)
    selected = cells(args.only)
    t0 = time.time()
    rows = measure(selected, wdir, rounds, args.min_time)
    elapsed = time.time() - t0

    os.makedirs(args.out_dir, exist_ok=True)
    with open(os.path.join(args.out_dir, "results.json"), "w") as f:
        json.dump(rows, f, indent=1)  # raw per-process numbers, for inspection
    table = report.markdown_table(rows)
    npass, nmiss = report.score(rows)
    print()
    print(table)
    print(f"targets: {npass} PASS, {nmiss} MISS; {elapsed:.0f}s")
    if args.only or args.selftest:
        print(f"[bench] partial run (--only/--selftest): raw numbers in {args.out_dir}/results.json")
        return
    chart = report.write_chart(rows, os.path.join(args.out_dir, "performance.png"))
    with open(os.path.join(args.out_dir, "performance.md"), "w") as f:
        f.write(page(table, npass, nmiss, rounds, args, ours, upstream, wdir, chart))
    print(f"[bench] wrote {args.out_dir}/performance.md, performance.png ({chart}) and "
          "results.json; `make bench-docs` copies the page and chart into docs/")


def page(table, npass, nmiss, rounds, args, ours, upstream, wdir, chart):
    cmd = "python bench/run.py" + (" --quick" if args.quick else "") + (
        f" --rounds {args.rounds}" if args.rounds else "") + (
        f" --min-time {args.min_time}" if args.min_time != 1.0 else "")
    metas = [json.load(open(os.path.join(wdir, w + ".json"))) for w in MATRIX]
    wl = "\n".join(f"- `{m['name']}`: {m['tensors']:,} {m['dtype']} tensors, "
                   f"{m['file_size'] / 1e6:,.1f} MB file" for m in metas)
    return f"""# Performance

Our C implementation against upstream `safetensors==0.8.0` (the Rust one), same machine, same
run. Generated by `{cmd}` ({time.strftime('%Y-%m-%d')}; `make bench` runs it, `make bench-docs`
copies the result here); `bench/run.py --help` lists options.

![ratios](performance.png)

{table}
Targets met: {npass} PASS, {nmiss} MISS (targets from issue 4; ratio = median time ours /
median time upstream, lower is better).

## Method
- Machine: {report.machine_info()}; Python {sys.version.split()[0]}.
- ours: `{ours.replace(common.REPO + os.sep, "")}`; upstream: `{os.path.relpath(upstream, common.REPO)}`
  (safetensors 0.8.0, torch 2.13.0, numpy, ml_dtypes). Noise: on a shared 2-core machine
  ratios of one cell vary by 10-30% between runs (more for sub-millisecond cells).
- Workloads (written once by upstream's `save_file`, shapes as in upstream's own benchmarks):
{wl}
- Each cell runs in fresh processes, alternating upstream and ours, {rounds} process(es) per
  implementation; each process does one warm-up, then as many timed repetitions as fit in
  about {args.min_time} s (at least 1, at most 30; `time.perf_counter`). Reported: the median over all timed repetitions. The files have just
  been written or read, so the page cache is warm.
- Operations: `open_keys` = `safe_open(f, "numpy")` + `keys()`; `*_get_tensor` =
  `safe_open` + `get_tensor` of every key; `*_load_file` = `safetensors.numpy/torch.load_file`
  (lazy: ours may hand out views of the mapping); `*_touch` = the same, then read one byte of
  every 4 KiB page of every tensor (so page faults of lazy views are counted); `*_pread` =
  `safe_open(..., backend="pread")` + `get_tensor` of every key; `*_get_slice` = `get_slice` of
  the largest tensor, rows [n/4, n/4 + n/8), touched, on an open handle; `*_save_file` /
  `*_save` = write the whole workload (held in memory as private copies) to a file / to bytes.
- Throughput = payload bytes (tensor data; slice bytes for get_slice) / median time.
- Peak RSS = the largest, over the timed repetitions, of `VmHWM` (reset before each
  repetition by writing 5 to `/proc/self/clear_refs`) minus `VmRSS` just before the operation:
  the extra resident memory the operation needed, including the result it returns (mapped
  file pages count once touched).
- Regression guard for developers (not part of CI, where timing would be noise): `make
  bench-guard` (small workloads, median of per-round ratios over alternating rounds, fails
  only on ratios far above their targets).
"""


if __name__ == "__main__":
    main()
