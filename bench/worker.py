"""One measurement in a fresh process: worker.py --impl I --file F --op OP [--reps N | --min-time S].

Prints one JSON line: seconds of each timed repetition (after one warm-up unless --no-warmup),
the peak extra RSS of each (VmHWM after resetting it via /proc/self/clear_refs, minus VmRSS
before the operation), the payload bytes, and which library was imported.

--impl is "ours" or "upstream" (safetensors), or a peer loader ("fastsafetensors", "runai",
"instanttensor"), which only runs the materialized loads (`*_load_file_touch*`).
An op ending in "_cold" drops the file's pages from the page cache before every repetition
(posix_fadvise DONTNEED after fsync; no root needed) and checks with mincore(2) that they
are gone; "cold_resident" reports the largest fraction still resident.
"""
import argparse
import ctypes
import gc
import json
import mmap
import os
import subprocess
import sys
import time

PEERS = ("fastsafetensors", "runai", "instanttensor")


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


def resident_fraction(path):
    """Fraction of the file's pages in the page cache (mincore on a fresh shared mapping,
    which faults nothing in)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    size = os.path.getsize(path)
    pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), "mmap for mincore failed")
        vec = ctypes.create_string_buffer(pages)
        try:
            if libc.mincore(addr, size, vec) != 0:
                raise OSError(ctypes.get_errno(), "mincore failed")
        finally:
            libc.munmap(addr, size)
    finally:
        os.close(fd)
    return sum(b & 1 for b in vec.raw) / max(1, pages)


def drop_cache(path):
    """Evict the file's pages: fsync (dirty pages cannot be dropped), then DONTNEED."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    return resident_fraction(path)


# A background writer (issue 10: saves stalled while other processes wrote heavily): writes
# 256 MB in 8 MB pieces to a file next to the destination, over and over, without fsync, so
# dirty-page throttling and writeback run while the save is timed.
BG_WRITER = """
import os, sys
path = sys.argv[1]
chunk = os.urandom(1 << 20) * 8
first = True
while True:
    with open(path, "wb") as f:
        for _ in range(32):
            f.write(chunk)
            if first:
                print("writing", flush=True)
                first = False
    os.unlink(path)
"""


def start_bg_writer(out_dir):
    path = os.path.join(out_dir, f"bg-writer-{os.getpid()}.bin")
    p = subprocess.Popen([sys.executable, "-c", BG_WRITER, path], stdout=subprocess.PIPE,
                         text=True)
    p.stdout.readline()  # it has started writing
    time.sleep(0.5)      # and dirtied some hundreds of MB
    return p, path


def stop_bg_writer(p, path):
    p.kill()
    p.wait()
    if os.path.exists(path):
        os.unlink(path)


def peer_loader(impl):
    """A function path -> {name: tensor} that loads every tensor with a peer library to CPU."""
    if impl == "fastsafetensors":
        from fastsafetensors import fastsafe_open

        def load(path):
            # CPU destination, no GPUDirect Storage: its threaded pread path with bounce buffers
            with fastsafe_open(path, framework="pt", device="cpu", nogds=True) as f:
                return {k: f.get_tensor(k) for k in f.keys()}
        return load
    if impl == "runai":
        from runai_model_streamer import SafetensorsStreamer

        def load(path):
            with SafetensorsStreamer() as s:
                s.stream_file(path, device="cpu")
                return dict(s.get_tensors())
        return load
    if impl == "instanttensor":
        from instanttensor import safe_open as it_open

        def load(path):
            with it_open(path, framework="pt", device="cpu") as f:
                return dict(f.tensors())
        return load
    raise SystemExit(f"unknown peer {impl}")


def make_op(op, path, meta, out_path, impl="ours"):
    """Return (fn, payload_bytes, before_each) for an operation name."""
    fw, _, what = op.partition("_")  # e.g. "np_load_file_touch" -> ("np", "load_file_touch")
    what = what.removesuffix("_cold")
    cold = op.endswith("_cold")
    nothing = lambda: None  # noqa: E731
    evict = (lambda: EVICTED.append(drop_cache(path))) if cold else nothing
    if impl in PEERS:
        if fw != "pt" or what != "load_file_touch":
            raise SystemExit(f"peer {impl} runs only pt_load_file_touch[_cold], not {op}")
        import torch  # noqa: F401
        load = peer_loader(impl)

        def fn():
            d = load(path)
            touch_pt(d.values())
            return d
        return fn, meta["payload"], evict
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

    if op == "open_keys":
        def fn():
            with safe_open(path, "numpy") as f:
                return f.keys()
        return fn, 0, nothing
    if what in ("load_file", "load_file_once"):
        return (lambda: lib.load_file(path)), payload, nothing
    if what in ("load_file_touch", "pread_touch"):
        kw = {"backend": "pread"} if what == "pread_touch" else {}

        def fn():
            d = lib.load_file(path, **kw)
            touch(d.values())
            return d
        return fn, payload, evict
    if what in ("pread_sum", "load_file_sum"):  # a user's first use of every tensor: reduce it
        kw = {"backend": "pread"} if what == "pread_sum" else {}

        def fn():
            d = lib.load_file(path, **kw)
            for t in d.values():
                t.sum()
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
    if what in ("save_file", "save", "save_file_once", "save_file_once_bg"):
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
        if what == "save_file_once_bg":
            writer = []

            def before():
                if os.path.exists(out_path):
                    os.unlink(out_path)
                writer.append(start_bg_writer(os.path.dirname(out_path)))

            def fn():
                return lib.save_file(data, out_path)
            fn.after = lambda: stop_bg_writer(*writer.pop())  # run by main() after the timing
            return fn, payload, before
        if what in ("save_file", "save_file_once"):
            return (lambda: lib.save_file(data, out_path)), payload, before
        return (lambda: lib.save(data)), payload, before
    raise SystemExit(f"unknown op {op}")


EVICTED = []  # resident fraction of the file after each eviction (cold ops)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--impl", required=True, choices=["ours", "upstream", *PEERS])
    ap.add_argument("--file", required=True)
    ap.add_argument("--op", required=True)
    ap.add_argument("--reps", type=int, default=2, help="timed repetitions (without --min-time)")
    ap.add_argument("--min-time", type=float, default=0.0,
                    help="if set: repetitions ~ min-time / warm-up time, 1..--max-reps")
    ap.add_argument("--max-reps", type=int, default=30)
    ap.add_argument("--no-warmup", action="store_true",
                    help="time the first run too (a first save in a fresh process; huge workloads)")
    args = ap.parse_args()

    if args.impl in PEERS:
        from importlib.metadata import version
        ver = version({"runai": "runai-model-streamer"}.get(args.impl, args.impl))
    else:
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
    fn, payload, before = make_op(args.op, args.file, meta, out_path, args.impl)
    after = getattr(fn, "after", lambda: None)

    times, peaks = [], []
    can_reset = reset_peak()
    reps, i = args.reps, 1 if args.no_warmup else 0
    while i <= reps:  # i == 0 is the warm-up
        before()
        gc.collect()
        can_reset = reset_peak()
        base = rss_kb("VmRSS")
        t0 = time.perf_counter()
        r = fn()
        dt = time.perf_counter() - t0
        peak = rss_kb("VmHWM") - base
        after()
        del r
        if i:
            times.append(dt)
            peaks.append(peak)
        elif args.min_time:  # adaptive: time about min_time seconds in this process
            reps = max(1, min(args.max_reps, int(args.min_time / max(dt, 1e-6))))
        i += 1
    if os.path.exists(out_path):
        os.unlink(out_path)
    out = {"impl": args.impl, "version": ver, "times": times,
           "peak_kb": peaks if can_reset else None, "payload": payload}
    if EVICTED:
        out["cold_resident"] = max(EVICTED)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
