"""The storage limit for cold reads: how fast this machine reads a file that is not cached.

    python bench/storage_limit.py FILE [--threads 1,4,16] [--block-mib 1,4] [--json]

Reads the whole FILE with parallel preads (a shared cursor hands out blocks; each thread
reads into its own page-aligned buffer, so the GIL is released during every read), once per
combination of thread count, block size and mode (buffered, or O_DIRECT where the filesystem
allows it), dropping the file's pages from the page cache before each buffered pass
(posix_fadvise DONTNEED, checked with mincore); two passes over the grid. The best GB/s is the limit cold loads are
compared with. No library is needed: plain os.preadv.
"""
import argparse
import itertools
import json
import mmap
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import worker  # noqa: E402  (drop_cache / resident_fraction)


def read_all(path, threads, block, direct):
    """Seconds to read the whole file with `threads` threads of `block`-byte preads."""
    flags = os.O_RDONLY | (os.O_DIRECT if direct else 0)
    fd = os.open(path, flags)
    size = os.fstat(fd).st_size
    cursor = itertools.count()  # next() is atomic under the GIL
    errors = []

    def reader():
        buf = mmap.mmap(-1, block)  # page aligned, as O_DIRECT needs
        try:
            while True:
                off = next(cursor) * block
                if off >= size:
                    return
                os.preadv(fd, [buf], off)
        except OSError as e:
            errors.append(e)
        finally:
            buf.close()

    pool = [threading.Thread(target=reader) for _ in range(threads)]
    t0 = time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    dt = time.perf_counter() - t0
    os.close(fd)
    if errors:
        raise errors[0]
    return dt


def measure(path, threads=(1, 4, 16), blocks_mib=(1, 4), passes=2):
    size = os.path.getsize(path)
    rows = []
    for _ in range(passes):  # the best of the passes per configuration: others share the disk
        for direct in (False, True):
            for n in threads:
                for mib in blocks_mib:
                    resident = worker.drop_cache(path)
                    try:
                        dt = read_all(path, n, mib << 20, direct)
                    except OSError as e:  # e.g. EINVAL: no O_DIRECT on this filesystem
                        rows.append({"direct": direct, "threads": n, "block_mib": mib,
                                     "error": str(e)})
                        continue
                    rows.append({"direct": direct, "threads": n, "block_mib": mib, "seconds": dt,
                                 "gbps": size / dt / 1e9, "resident_before": resident})
    ok = [r for r in rows if "gbps" in r and (r["direct"] or r["resident_before"] < 0.05)]
    best = max(ok, key=lambda r: r["gbps"]) if ok else None
    return {"file": path, "bytes": size, "rows": rows, "best": best}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("file")
    ap.add_argument("--threads", default="1,4,16")
    ap.add_argument("--block-mib", default="1,4")
    ap.add_argument("--json", action="store_true", help="print one JSON line only")
    args = ap.parse_args()
    res = measure(args.file, [int(x) for x in args.threads.split(",")],
                  [int(x) for x in args.block_mib.split(",")])
    if args.json:
        print(json.dumps(res))
        return
    for r in res["rows"]:
        mode = "O_DIRECT" if r["direct"] else "buffered"
        what = r.get("error") or f"{r['gbps']:.2f} GB/s ({r['seconds']:.3f} s)"
        print(f"{mode:9s} {r['threads']:3d} threads x {r['block_mib']} MiB: {what}")
    b = res["best"]
    print("limit: " + (f"{b['gbps']:.2f} GB/s" if b else "unknown (no cold pass succeeded)"))


if __name__ == "__main__":
    main()
