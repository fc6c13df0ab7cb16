"""Targets of issues 4 and 10, result rows, the markdown tables and the PNG chart."""
import os
import statistics

MB = 1e6
PEER_NAMES = {"fastsafetensors": "fastsafetensors", "runai": "Run:ai Model Streamer",
              "instanttensor": "InstantTensor"}
COLD_FRACTION = 0.9   # cold loads: at least 90% of the storage limit (issue 10)
COLD_RESIDENT_MAX = 0.05  # a "cold" run with more of the file still cached does not count


def target(workload, op):
    """The issues' ratio target (ours / upstream) for a cell, or None (issue 10 overrides 4)."""
    if op.endswith("_cold"):
        return None  # judged against the storage limit instead (cold_table)
    if workload == "tiny1m":
        return 0.2
    if op == "open_keys":
        return 0.33 if workload == "header100k" else None
    if op in ("np_load_file", "np_get_tensor"):
        return 0.05 if workload == "gpt2" else None
    if op == "pt_load_file":
        return {"gpt2": 0.5, "lora": 0.3}.get(workload)
    if op == "pt_pread_sum":
        return 0.5
    if op == "pt_get_slice":
        return 0.5
    if op.endswith("_touch") or op.endswith("_pread"):
        return 0.7
    if op.endswith("_save_file") or op.startswith("pt_save_file_once"):
        return 0.8
    if op.endswith("_save"):
        return 0.6
    return None


RSS_CELL = ("shard2g", "np_load_file")  # peak RSS must stay under 5% of the file size
RSS_FRACTION = 0.05
# Extra peak memory <= upstream's (issue 10): over repeated loads, and on a fresh process's first.
RSS_VS_UPSTREAM = {("header100k", "pt_load_file"): "largest over repeated loads in one process",
                   ("header100k", "pt_load_file_once"): "first load in a fresh process"}


def _impl_summary(runs):
    ok = [r for r in runs if "error" not in r]
    times = [t for r in ok for t in r["times"]]
    peaks = [p for r in ok if r.get("peak_kb") is not None for p in r["peak_kb"]]
    med = statistics.median(times) if times else None
    payload = ok[0]["payload"] if ok else 0
    resident = [r["cold_resident"] for r in ok if "cold_resident" in r]
    return {
        "median_s": med,
        "gbps": (payload / med / 1e9) if (med and payload) else None,
        "peak_mb": (max(peaks) * 1024 / MB) if peaks else None,
        "n": len(times),
        "version": ok[0].get("version") if ok else None,
        "cold_resident": max(resident) if resident else None,
        "error": next((r["error"] for r in runs if "error" in r), None),
    }


def against_baseline(ours, baseline):
    """Ours against an earlier build (run.py --baseline), from each one's per-process medians:
    the ratio of the medians, and whether ours is slower by more than the spread (slowest minus
    fastest process) of either."""
    o = [statistics.median(r["times"]) for r in ours if "error" not in r]
    b = [statistics.median(r["times"]) for r in baseline if "error" not in r]
    if not o or not b:
        return {"ratio": None, "slower": None}
    mo, mb = statistics.median(o), statistics.median(b)
    spread = max(max(o) - min(o), max(b) - min(b))
    return {"ratio": mo / mb, "ours_ms": mo * 1e3, "baseline_ms": mb * 1e3,
            "spread_ms": spread * 1e3, "slower": mo - mb > spread}


def baseline_lines(rows, where):
    """The summary of run.py --baseline: every cell, ours/baseline, and the count beyond spread."""
    out = [f"Ours against the baseline build ({where}): median ms (spread: slowest minus fastest "
           "process)", "| workload | operation | baseline ms | ours ms | spread ms | ours/baseline "
           "| slower beyond spread |", "|" + "---|" * 7]
    slower = 0
    for r in rows:
        b = r.get("baseline") or {"ratio": None}
        if b["ratio"] is None:
            out.append(f"| {r['workload']} | {r['op']} | - | - | - | - | error |")
            continue
        slower += bool(b["slower"])
        out.append(f"| {r['workload']} | {r['op']} | {b['baseline_ms']:.3f} | {b['ours_ms']:.3f} "
                   f"| {b['spread_ms']:.3f} | {b['ratio']:.3f} | {'yes' if b['slower'] else ''} |")
    out.append(f"baseline: {slower} of {len(rows)} cells slower beyond spread")
    return "\n".join(out)


def summarize(workload, op, meta, res):
    """res: {"upstream": [worker json, ...], "ours": [...], peer: [...]} -> a row dict."""
    row = {"workload": workload, "op": op, "target": target(workload, op), "errors": [],
           "peers": {}}
    for impl, runs in res.items():
        summary = _impl_summary(runs)
        if impl in ("upstream", "ours"):
            row[impl] = summary
            if summary["error"]:
                row["errors"].append(f"{impl}: {summary['error']}")
        else:
            row["peers"][impl] = summary
    u, o = row["upstream"]["median_s"], row["ours"]["median_s"]
    row["ratio"] = (o / u) if (u and o) else None
    t = row["target"]
    row["status"] = "" if (t is None or row["ratio"] is None) else (
        "PASS" if row["ratio"] <= t else "MISS")
    if (workload, op) == RSS_CELL and row["ours"]["peak_mb"] is not None:
        limit = RSS_FRACTION * meta["file_size"] / MB
        row["rss_check"] = (row["ours"]["peak_mb"], limit,
                            "PASS" if row["ours"]["peak_mb"] < limit else "MISS")
    if (workload, op) in RSS_VS_UPSTREAM and None not in (row["ours"]["peak_mb"],
                                                          row["upstream"]["peak_mb"]):
        limit = row["upstream"]["peak_mb"]
        row["rss_check"] = (row["ours"]["peak_mb"], limit,
                            "PASS" if row["ours"]["peak_mb"] <= limit else "MISS")
    return row


def fmt(x, spec):
    """x formatted by spec, or "-" for a missing figure (None)."""
    return "-" if x is None else format(x, spec)


HEADER = ("| workload | operation | upstream ms | ours ms | ours/upstream | target | status "
          "| upstream GB/s | ours GB/s | upstream peak RSS MB | ours peak RSS MB |")


def markdown_table(rows):
    lines = [HEADER, "|" + "---|" * 11]
    for r in rows:
        u, o = r["upstream"], r["ours"]
        ms = lambda x: None if x is None else x * 1e3  # noqa: E731
        lines.append("| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
            r["workload"], r["op"], fmt(ms(u["median_s"]), ".2f"), fmt(ms(o["median_s"]), ".2f"),
            fmt(r["ratio"], ".3f"), "-" if r["target"] is None else f"<= {r['target']}",
            r["status"] or ("ERROR" if r["errors"] else ""),
            fmt(u["gbps"], ".2f"), fmt(o["gbps"], ".2f"),
            fmt(u["peak_mb"], ".1f"), fmt(o["peak_mb"], ".1f")))
    extra = []
    for r in rows:
        if "rss_check" in r:
            peak, limit, st = r["rss_check"]
            if (r["workload"], r["op"]) == RSS_CELL:
                extra.append(f"Peak RSS of NumPy `load_file` of the {r['workload']} file, ours: "
                             f"{peak:.1f} MB, target < {limit:.1f} MB (5% of the file): **{st}**")
            else:
                how = RSS_VS_UPSTREAM[(r["workload"], r["op"])]
                extra.append(f"Extra peak memory of {r['workload']}/{r['op']} ({how}), ours: "
                             f"{peak:.1f} MB, target <= upstream's {limit:.1f} MB: **{st}**")
        for e in r["errors"]:
            extra.append(f"Error in {r['workload']}/{r['op']}: `{e}`")
    return "\n".join(lines) + ("\n\n" + "\n\n".join(extra) if extra else "") + "\n"


def _by_cell(rows):
    return {(r["workload"], r["op"]): r for r in rows}


def peer_table(rows, skipped):
    """Ours (mmap and pread, materialized loads) against each peer, per workload and cache state.

    Returns (markdown, rows of (status, ...)). A peer passes nothing and fails nothing where it
    did not run; ours must be ahead with both backends (ratio <= 1)."""
    cell = _by_cell(rows)
    lines = ["| workload | cache | peer | peer ms | peer GB/s | ours mmap ms | ours pread ms | "
             "upstream ms | mmap / peer | pread / peer | target | status |",
             "|" + "---|" * 12]
    statuses = []
    for r in rows:
        if r["op"] not in ("pt_load_file_touch", "pt_load_file_touch_cold") or not r["peers"]:
            continue
        cold = r["op"].endswith("_cold")
        pread = cell.get((r["workload"], "pt_pread_touch_cold" if cold else "pt_pread_touch"))
        ours_m = r["ours"]["median_s"]
        ours_p = pread["ours"]["median_s"] if pread else None
        for name, p in r["peers"].items():
            t = p["median_s"]
            if t is None:
                continue
            rm = ours_m / t if ours_m else None
            rp = ours_p / t if ours_p else None
            known = [x for x in (rm, rp) if x is not None]
            st = ("PASS" if all(x <= 1.0 for x in known) else "MISS") if known else ""
            if st:
                statuses.append(st)
            ms = lambda x: None if x is None else x * 1e3  # noqa: E731
            lines.append(f"| {r['workload']} | {'cold' if cold else 'warm'} | "
                         f"{PEER_NAMES.get(name, name)} {p['version'] or ''} | {fmt(ms(t), '.1f')} | "
                         f"{fmt(p['gbps'], '.2f')} | {fmt(ms(ours_m), '.1f')} | {fmt(ms(ours_p), '.1f')} | "
                         f"{fmt(ms(r['upstream']['median_s']), '.1f')} | {fmt(rm, '.3f')} | "
                         f"{fmt(rp, '.3f')} | <= 1.0 | {st} |")
    notes = [f"{PEER_NAMES.get(n, n)} skipped: {why}" for n, why in sorted(skipped.items())]
    text = "\n".join(lines) + "\n"
    if notes:
        text += "\n" + "\n\n".join(notes) + "\n"
    return text, statuses


def cold_table(rows, limit):
    """Cold materialized loads as a fraction of the storage limit (bench/storage_limit.py)."""
    best = (limit or {}).get("best")
    if not best:
        return "Storage limit unknown (the page cache could not be dropped, or no cold pass "\
               "succeeded): cold cells are not judged.\n", []
    # A loader that read faster than the pread grid shows the storage can do more: the limit is
    # the best rate seen, by the grid or by any truly cold load of this run.
    seen = [(s["gbps"], name) for r in rows if r["op"].endswith("_touch_cold")
            for name, s in [("ours", r["ours"]), ("upstream", r["upstream"]), *r["peers"].items()]
            if s["gbps"] and s["cold_resident"] is not None and s["cold_resident"] <= COLD_RESIDENT_MAX]
    grid = (f"parallel cold preads of the shard2g file ({best['threads']} threads x "
            f"{best['block_mib']} MiB, {'O_DIRECT' if best['direct'] else 'buffered'}; "
            f"bench/storage_limit.py)")
    gbps, how = best["gbps"], "the best of " + grid
    if seen and max(seen)[0] > gbps:
        gbps = max(seen)[0]
        who = PEER_NAMES.get(max(seen)[1], max(seen)[1])
        how = f"the fastest cold load of this run ({who}), above the {best['gbps']:.2f} GB/s of {grid}"
    best = dict(best, gbps=gbps)
    lines = [f"Storage limit: **{gbps:.2f} GB/s**, {how}.", "",
             "| workload | loader | cold ms | GB/s | fraction of the limit | target | status |",
             "|" + "---|" * 7]
    statuses = []
    for r in rows:
        if not r["op"].endswith("_touch_cold"):
            continue
        backend = "pread" if "pread" in r["op"] else "mmap"
        impls = [("ours " + backend, r["ours"], True), ("upstream " + backend, r["upstream"], False)]
        if backend == "mmap":
            impls += [(PEER_NAMES.get(n, n), p, False) for n, p in r["peers"].items()]
        for name, s, judged in impls:
            if s["median_s"] is None:
                continue
            frac = s["gbps"] / best["gbps"] if s["gbps"] else None
            st = ""
            if s["cold_resident"] is not None and s["cold_resident"] > COLD_RESIDENT_MAX:
                st = f"not cold ({s['cold_resident']:.0%} cached)"
            elif judged and frac is not None:
                st = "PASS" if frac >= COLD_FRACTION else "MISS"
                statuses.append(st)
            lines.append(f"| {r['workload']} | {name} | {s['median_s'] * 1e3:.1f} | "
                         f"{fmt(s['gbps'], '.2f')} | {fmt(frac, '.2f')} | "
                         f"{f'>= {COLD_FRACTION}' if judged else '-'} | {st} |")
    return "\n".join(lines) + "\n", statuses


def score(rows, extra_statuses=()):
    st = [r["status"] for r in rows if r["status"]] + [r["rss_check"][2] for r in rows
                                                     if "rss_check" in r] + list(extra_statuses)
    return st.count("PASS"), st.count("MISS")


def write_chart(rows, path):
    rows = [r for r in rows if r["ratio"] is not None]
    if not rows:
        return None
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        _write_png_bars(rows, path)
        return "plain"
    labels = [f"{r['workload']} / {r['op']}" for r in rows]
    ratios = [r["ratio"] for r in rows]
    colors = ["#2a9d4b" if r["status"] == "PASS" else "#d1495b" if r["status"] == "MISS"
              else "#5b7db1" for r in rows]
    fig, ax = plt.subplots(figsize=(9, 0.28 * len(rows) + 1.2))
    y = list(range(len(rows)))[::-1]
    ax.barh(y, ratios, color=colors)
    for yi, r in zip(y, rows):
        if r["target"] is not None:
            ax.plot([r["target"]] * 2, [yi - 0.4, yi + 0.4], color="black", lw=1.5)
    ax.axvline(1.0, color="grey", ls="--", lw=1)
    ax.set_xscale("log")
    ax.set_yticks(y)
    ax.set_yticklabels(labels, fontsize=7)
    ax.set_xlabel("time ours / upstream 0.8.0 (log scale; black tick = target; <1 is faster)")
    ax.set_title("safetensors (C) vs upstream 0.8.0: median time ratio")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return "matplotlib"


def _write_png_bars(rows, path):
    """Fallback without matplotlib: one bar per row (log2 ratio around a centre line at 1.0),
    green PASS, red MISS, blue no target; the labels are in the table, in the same order."""
    import struct
    import zlib
    import math
    bar_h, gap, width = 10, 4, 600
    height = len(rows) * (bar_h + gap) + gap
    mid = width // 2
    scale = width / 2 / 7  # 2^-7 .. 2^7
    img = [[(255, 255, 255)] * width for _ in range(height)]
    for i, r in enumerate(rows):
        col = {"PASS": (42, 157, 75), "MISS": (209, 73, 91)}.get(r["status"], (91, 125, 177))
        x = mid + int(max(-7, min(7, math.log2(r["ratio"]))) * scale)
        y0 = gap + i * (bar_h + gap)
        for yy in range(y0, y0 + bar_h):
            for xx in range(min(mid, x), max(mid, x) + 1):
                img[yy][xx] = col
    for yy in range(height):
        img[yy][mid] = (0, 0, 0)
    raw = b"".join(b"\x00" + bytes(c for px in line for c in px) for line in img)

    def chunk(tag, data):
        return (struct.pack(">I", len(data)) + tag + data
                + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))
    with open(path, "wb") as f:
        f.write(png)


def machine_info():
    import platform
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as f:
            mem = int(f.readline().split()[1]) / 1024 / 1024
    except OSError:
        mem = 0
    return f"{cpu}, {os.cpu_count()} logical CPUs, {mem:.0f} GiB RAM, {platform.platform()}"
