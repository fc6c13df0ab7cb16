"""Developer regression guard (`make bench-guard`): a short form of bench/run.py.

    python bench/guard.py [--rounds N] [--min-time S]

Not part of CI: on a shared machine any timing is noise, and CI must never fail by chance.

Installs upstream safetensors 0.8.0 into build/bench/venv-upstream if needed, then measures
the cells that have a target in issue 4 on the small workloads. Each round runs one process
of each implementation, alternating which goes first; a round gives a ratio (median time
ours / median time upstream within that round) and the guard's ratio is the median over the
rounds (at least 5), so one slow round, in either implementation, cannot decide it.
It fails (exit 1) only when that ratio exceeds a generous bound (3x its target, capped at
1.5, i.e. never while we are within 1.5x of upstream) or when our implementation errors.
"""
import argparse
import os
import statistics
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


MIN_ROUNDS = 5


def bound(t):
    return min(3 * t, 1.5)


def round_ratio(row):
    """Median over rounds of (ours / upstream) within each round, or None."""
    ratios = []
    for up, ours in zip(row["raw"]["upstream"], row["raw"]["ours"]):
        if "error" in up or "error" in ours:
            continue
        ratios.append(statistics.median(ours["times"]) / statistics.median(up["times"]))
    return statistics.median(ratios) if ratios else None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=MIN_ROUNDS,
                    help=f"alternating rounds (at least {MIN_ROUNDS})")
    ap.add_argument("--min-time", type=float, default=0.3)
    args = ap.parse_args()
    if args.rounds < MIN_ROUNDS:
        ap.error(f"--rounds must be at least {MIN_ROUNDS}: fewer lets one slow round decide")
    t0 = time.time()
    print(f"[guard] ours: {run.check_ours()}", flush=True)
    common.upstream_python()
    wdir = run.ensure_workloads(list(GUARD_MATRIX), small=True)
    rows = run.measure(run.cells(matrix=GUARD_MATRIX), wdir, args.rounds, args.min_time)
    print()
    print(report.markdown_table(rows))
    failures = []
    for r in rows:
        name = f"{r['workload']}/{r['op']}"
        ratio = round_ratio(r)
        ours_errors = [e for e in r["errors"] if e.startswith("ours:")]
        if r["ours"]["median_s"] is None or ours_errors:
            failures.append(f"{name}: {'; '.join(ours_errors) or 'ours failed'}")
        elif r["target"] is not None and ratio is not None and ratio > bound(r["target"]):
            failures.append(f"{name}: median per-round ratio {ratio:.3f} > bound "
                            f"{bound(r['target']):.2f} (target {r['target']})")
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
