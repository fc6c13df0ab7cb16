"""CI regression guard: a short form of bench/run.py on small workloads.

    python bench/guard.py [--rounds N]

Installs upstream safetensors 0.8.0 into bench/.venv-upstream if needed, then measures the
cells that have a target in issue 4. Machines are noisy, so it uses no absolute times and
fails (exit 1) only when a ratio ours/upstream exceeds a generous bound:
3x its target, capped at 1.5 (i.e. never fail while we are within 1.5x of upstream), or
when our implementation errors. Exit 0 otherwise.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import report  # noqa: E402
import run  # noqa: E402

GUARD_MATRIX = {
    "gpt2": ["np_get_tensor", "np_load_file", "pt_load_file", "np_load_file_touch",
             "pt_load_file_touch", "np_pread", "pt_pread", "np_save_file", "pt_save_file",
             "np_save", "pt_save"],
    "lora": ["pt_load_file"],
    "header100k": ["open_keys"],
    "shard2g": ["np_load_file"],
}


def bound(t):
    return min(3 * t, 1.5)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--min-time", type=float, default=0.3)
    args = ap.parse_args()
    t0 = time.time()
    print(f"[guard] ours: {run.check_ours()}", flush=True)
    common.upstream_python()
    wdir = run.ensure_workloads(quick=True)
    rows = run.measure(run.cells(matrix=GUARD_MATRIX), wdir, args.rounds, args.min_time)
    print()
    print(report.markdown_table(rows))
    failures = []
    for r in rows:
        name = f"{r['workload']}/{r['op']}"
        if r["ours"]["median_s"] is None:
            failures.append(f"{name}: ours failed: {'; '.join(r['errors'])}")
        elif r["target"] is not None and r["ratio"] is not None and r["ratio"] > bound(r["target"]):
            failures.append(f"{name}: ratio {r['ratio']:.3f} > bound {bound(r['target']):.2f} "
                            f"(target {r['target']})")
        if "rss_check" in r:
            peak, limit, _ = r["rss_check"]
            if peak > 3 * limit:
                failures.append(f"{name}: peak RSS {peak:.1f} MB > {3 * limit:.1f} MB "
                                "(3x the 5%-of-file target)")
    print(f"[guard] {len(rows)} cells in {time.time() - t0:.0f}s")
    for f in failures:
        print(f"[guard] FAIL {f}")
    if failures:
        sys.exit(1)
    print("[guard] OK: no ratio beyond its bound")


if __name__ == "__main__":
    main()
