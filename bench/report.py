"""Targets of issue 4, result rows, the markdown table and the PNG chart."""
import os
import statistics

MB = 1e6


def target(workload, op):
    """The issue's ratio target (ours / upstream) for a cell, or None."""
    if op == "open_keys":
        return 0.33 if workload == "header100k" else None
    if op in ("np_load_file", "np_get_tensor"):
        return 0.05 if workload == "gpt2" else None
    if op == "pt_load_file":
        return {"gpt2": 0.5, "lora": 0.3}.get(workload)
    if op.endswith("_touch") or op.endswith("_pread"):
        return 0.7
    if op.endswith("_save_file"):
        return 0.8
    if op.endswith("_save"):
        return 0.6
    return None


RSS_CELL = ("shard2g", "np_load_file")  # peak RSS must stay under 5% of the file size
RSS_FRACTION = 0.05


def summarize(workload, op, meta, res):
    """res: {"upstream": [worker json, ...], "ours": [...]} -> a row dict."""
    row = {"workload": workload, "op": op, "target": target(workload, op), "errors": []}
    for impl in ("upstream", "ours"):
        runs = res.get(impl, [])
        errs = [r["error"] for r in runs if "error" in r]
        ok = [r for r in runs if "error" not in r]
        row["errors"] += [f"{impl}: {e}" for e in errs[:1]]
        times = [t for r in ok for t in r["times"]]
        peaks = [p for r in ok if r.get("peak_kb") is not None for p in r["peak_kb"]]
        med = statistics.median(times) if times else None
        payload = ok[0]["payload"] if ok else 0
        row[impl] = {
            "median_s": med,
            "gbps": (payload / med / 1e9) if (med and payload) else None,
            "peak_mb": (max(peaks) * 1024 / MB) if peaks else None,
            "n": len(times),
        }
    u, o = row["upstream"]["median_s"], row["ours"]["median_s"]
    row["ratio"] = (o / u) if (u and o) else None
    t = row["target"]
    row["status"] = "" if (t is None or row["ratio"] is None) else (
        "PASS" if row["ratio"] <= t else "MISS")
    if (workload, op) == RSS_CELL and row["ours"]["peak_mb"] is not None:
        limit = RSS_FRACTION * meta["file_size"] / MB
        row["rss_check"] = (row["ours"]["peak_mb"], limit,
                            "PASS" if row["ours"]["peak_mb"] < limit else "MISS")
    return row


def _f(x, fmt):
    return "-" if x is None else format(x, fmt)


HEADER = ("| workload | operation | upstream ms | ours ms | ours/upstream | target | status "
          "| upstream GB/s | ours GB/s | upstream peak RSS MB | ours peak RSS MB |")


def markdown_table(rows):
    lines = [HEADER, "|" + "---|" * 11]
    for r in rows:
        u, o = r["upstream"], r["ours"]
        ms = lambda x: None if x is None else x * 1e3  # noqa: E731
        lines.append("| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
            r["workload"], r["op"], _f(ms(u["median_s"]), ".2f"), _f(ms(o["median_s"]), ".2f"),
            _f(r["ratio"], ".3f"), "-" if r["target"] is None else f"<= {r['target']}",
            r["status"] or ("ERROR" if r["errors"] else ""),
            _f(u["gbps"], ".2f"), _f(o["gbps"], ".2f"),
            _f(u["peak_mb"], ".1f"), _f(o["peak_mb"], ".1f")))
    extra = []
    for r in rows:
        if "rss_check" in r:
            peak, limit, st = r["rss_check"]
            extra.append(f"Peak RSS of NumPy `load_file` of the {r['workload']} file, ours: "
                         f"{peak:.1f} MB, target < {limit:.1f} MB (5% of the file): **{st}**")
        for e in r["errors"]:
            extra.append(f"Error in {r['workload']}/{r['op']}: `{e}`")
    return "\n".join(lines) + ("\n\n" + "\n\n".join(extra) if extra else "") + "\n"


def score(rows):
    st = [r["status"] for r in rows if r["status"]] + [r["rss_check"][2] for r in rows
                                                     if "rss_check" in r]
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
