"""One measurement in a fresh process: worker.py --impl I --file F --op OP [--reps N | --min-time S].

Prints one JSON line: seconds of each timed repetition (after one warm-up), the peak extra
RSS of each (VmHWM after resetting it via /proc/self/clear_refs, minus VmRSS before the
operation), the payload bytes, and which safetensors was imported.
"""
import argparse
import gc
import json
import os
import time


def rss_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def touch_np(arrays):
    """Read one byte of every 4 KiB page of every array (faults in lazy mappings)."""
    s = 0
    for a in arrays:
        if a.size:
            s += int(a.reshape(-1).view("u1")[::4096].sum())
    return s


def touch_pt(tensors):
    import torch
    s = 0
    for t in tensors:
        if t.numel():
            s += int(t.reshape(-1).view(torch.uint8)[::4096].sum())
    return s


def make_op(op, path, meta, out_path):
    """Return (fn, payload_bytes, before_each) for an operation name."""
    fw, _, what = op.partition("_")  # e.g. "np_load_file_touch" -> ("np", "load_file_touch")
    from safetensors import safe_open
    if fw == "pt":
        import torch  # noqa: F401  (import cost outside the timing)
        import safetensors.torch as lib
        touch = touch_pt
    else:
        import ml_dtypes  # noqa: F401  (registers bfloat16 & co. with NumPy)
        import safetensors.numpy as lib
        touch = touch_np
    payload = meta["payload"]
    nothing = lambda: None  # noqa: E731

    if op == "open_keys":
        def fn():
            with safe_open(path, "numpy") as f:
                return f.keys()
        return fn, 0, nothing
    if what == "load_file":
        return (lambda: lib.load_file(path)), payload, nothing
    if what == "load_file_touch":
        def fn():
            d = lib.load_file(path)
            touch(d.values())
            return d
        return fn, payload, nothing
    if what in ("get_tensor", "pread"):
        kw = {"backend": "pread"} if what == "pread" else {}

        def fn():
            with safe_open(path, fw, **kw) as f:
                return {k: f.get_tensor(k) for k in f.keys()}
        return fn, payload, nothing
    if what == "get_slice":
        name, shape = meta["largest"], meta["largest_shape"]
        a, n = shape[0] // 4, max(1, shape[0] // 8)
        rowbytes = meta["largest_nbytes"] // shape[0]
        handle = safe_open(path, fw)

        def fn():
            t = handle.get_slice(name)[a:a + n]
            touch([t])
            return t
        fn.handle = handle
        return fn, n * rowbytes, nothing
    if what in ("save_file", "save"):
        src = lib.load_file(path)
        if fw == "pt":
            data = {k: v.clone() for k, v in src.items()}
        else:
            import numpy as np
            data = {k: np.array(v, copy=True) for k, v in src.items()}
        del src
        gc.collect()

        def before():
            if os.path.exists(out_path):
                os.unlink(out_path)
        if what == "save_file":
            return (lambda: lib.save_file(data, out_path)), payload, before
        return (lambda: lib.save(data)), payload, before
    raise SystemExit(f"unknown op {op}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--impl", required=True, choices=["ours", "upstream"])
    ap.add_argument("--file", required=True)
    ap.add_argument("--op", required=True)
    ap.add_argument("--reps", type=int, default=2, help="timed repetitions (without --min-time)")
    ap.add_argument("--min-time", type=float, default=0.0,
                    help="if set: repetitions ~ min-time / warm-up time, 1..--max-reps")
    ap.add_argument("--max-reps", type=int, default=30)
    args = ap.parse_args()

    import safetensors
    ver = safetensors.__version__
    ok = ver.startswith("0.8.0+c") if args.impl == "ours" else ver == "0.8.0"
    if os.environ.get("SAFETENSORS_BENCH_SELFTEST") and ver == "0.8.0":
        ok = True  # development: upstream in both slots
    if not ok:
        raise SystemExit(f"wrong safetensors for {args.impl}: {ver} at {safetensors.__file__}")

    with open(args.file[:-len(".safetensors")] + ".json") as f:
        meta = json.load(f)
    out_path = os.path.join(os.path.dirname(args.file), f"out-{args.impl}-{os.getpid()}.safetensors")
    fn, payload, before = make_op(args.op, args.file, meta, out_path)

    times, peaks = [], []
    can_reset = reset_peak()
    reps, i = args.reps, 0
    while i <= reps:  # the first one is the warm-up
        before()
        gc.collect()
        can_reset = reset_peak()
        base = rss_kb("VmRSS")
        t0 = time.perf_counter()
        r = fn()
        dt = time.perf_counter() - t0
        peak = rss_kb("VmHWM") - base
        del r
        if i:
            times.append(dt)
            peaks.append(peak)
        elif args.min_time:  # adaptive: time about min_time seconds in this process
            reps = max(1, min(args.max_reps, int(args.min_time / max(dt, 1e-6))))
        i += 1
    if os.path.exists(out_path):
        os.unlink(out_path)
    print(json.dumps({"impl": args.impl, "version": ver, "times": times,
                      "peak_kb": peaks if can_reset else None, "payload": payload}))


if __name__ == "__main__":
    main()
