"""The cost of ``load_file(..., verify=True)`` (docs/integrity.md): ours verified against
ours unverified, on the GPT-2-like file and the 2 GB shard of bench/run.py, warm and cold, for
each digest, beside that digest's own single-thread speed on this machine.

    python bench/verify.py [--samples 5] [--workloads gpt2,shard2g] [--algorithms sha256,xxh3_128]

The workload files are bench/run.py's (build/bench/work/full, made here if missing); each gets a
copy with the digests in its metadata (build/bench/work/verify/NAME.ALGORITHM.safetensors: the
same data section), which both the verified and the unverified loads read. Loads run in this
process with NumPy (safetensors.numpy.load_file), verified and unverified alternating, every
sample's arrays freed before the next. Each timed load ends by reading one byte of every 4 KiB
page of every array (bench/worker.py touch_np), so views of a mapping are paid for: a load is
the time until its arrays are in memory. Cold: the file's pages dropped before each load
(bench/worker.py drop_cache: fsync + POSIX_FADV_DONTNEED), so backend=None reads it with pread,
hashing each chunk as it is read. Warm: the file in the page cache; "warm mmap" is backend=None (views; a verified
load hashes over the mapping, in parallel threads), "warm pread" reads everything, hashed as
read. Medians, and the fastest sample in
brackets (on a shared machine, other load only ever slows a sample down); every sample in
build/bench/verify.json.
"""
import argparse
import gc
import json
import mmap
import os
import shutil
import statistics
import sys
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH)
from common import OUT, REPO, WORK  # noqa: E402
from worker import drop_cache, resident_fraction, touch_np  # noqa: E402

sys.path.insert(0, REPO)
from safetensors import checksums, safe_open  # noqa: E402
from safetensors.numpy import load_file  # noqa: E402


def workload(name):
    path = os.path.join(WORK, "full", name + ".safetensors")
    if not os.path.exists(path):
        import workloads
        workloads.generate(os.path.dirname(path), only=[name])
    return path


def with_digests(src, algorithm):
    """A copy of src whose metadata records its digests (data section copied byte for byte)."""
    dst = os.path.join(WORK, "verify", f"{os.path.basename(src)[:-len('.safetensors')]}.{algorithm}.safetensors")
    if os.path.exists(dst):
        return dst
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    with safe_open(src, "np") as f:
        table, metadata = f._table(), f.metadata()
    start = table[0][3]
    with open(src, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        with memoryview(mapped) as view:
            parts = [view[begin:end] for _, _, _, begin, end in table]
            digests = checksums.digest_buffers(algorithm, parts)
            data = checksums.digest_buffers(algorithm, [view[start:]])[0]
            del parts
        header = json.loads(mapped[8:start])
    header["__metadata__"] = checksums.with_digests(metadata, algorithm, [row[0] for row in table], digests, data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(src, "rb") as f, open(dst + ".tmp", "wb") as out:
        out.write(len(text).to_bytes(8, "little") + text)
        f.seek(start)
        shutil.copyfileobj(f, out, 1 << 24)
    os.replace(dst + ".tmp", dst)
    return dst


def hash_speed(algorithm, nbytes=256 << 20):
    """GB/s of one hasher over an in-memory buffer (best of 3)."""
    buffer = os.urandom(nbytes)
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        h = checksums.new_hasher(algorithm)
        h.update(buffer)
        h.hexdigest()
        best = min(best, time.perf_counter() - t)
    return nbytes / best / 1e9


def timed(path, verify, backend, cold):
    if cold:
        drop_cache(path)
    gc.collect()
    t = time.perf_counter()
    tensors = load_file(path, backend=backend, verify=verify)
    touch_np(tensors.values())
    elapsed = time.perf_counter() - t
    del tensors
    gc.collect()
    return elapsed


def measure(path, samples, backend, cold):
    """{False: [seconds], True: [seconds]}, alternating which goes first."""
    times = {False: [], True: []}
    if not cold:
        with open(path, "rb") as f:   # into the page cache
            while f.read(1 << 24):
                pass
    # Not timed: the process's first load of a file this size spends seconds in the kernel
    # (fresh memory, transparent huge pages), verified or not.
    timed(path, True, backend, cold)
    for s in range(samples):
        for verify in ((False, True) if s % 2 == 0 else (True, False)):
            times[verify].append(timed(path, verify, backend, cold))
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--workloads", default="gpt2,shard2g")
    parser.add_argument("--algorithms", default="sha256,xxh3_128")
    args = parser.parse_args()
    results = {"cpus": os.cpu_count(), "samples": args.samples, "hash_GBps": {}, "rows": []}
    for algorithm in args.algorithms.split(","):
        results["hash_GBps"][algorithm] = hash_speed(algorithm)
        print(f"{algorithm}: {results['hash_GBps'][algorithm]:.2f} GB/s on one thread", flush=True)
    print(f"{'file':<8} {'digest':<9} {'load':<10} {'unverified s':>14} {'verified s':>14} {'ratio':>11} "
          f"{'verified GB/s':>13} {'hash GB/s':>9}", flush=True)
    for name in args.workloads.split(","):
        source = workload(name)
        for algorithm in args.algorithms.split(","):
            path = with_digests(source, algorithm)
            with safe_open(path, "np") as f:
                payload = sum(end - begin for _, _, _, begin, end in f._table())
            for label, backend, cold in (("cold", None, True), ("warm pread", "pread", False),
                                         ("warm mmap", None, False)):
                times = measure(path, args.samples, backend, cold)
                plain, checked = statistics.median(times[False]), statistics.median(times[True])
                best_plain, best_checked = min(times[False]), min(times[True])
                row = {"file": name, "algorithm": algorithm, "load": label, "bytes": payload,
                       "unverified_s": times[False], "verified_s": times[True], "ratio": checked / plain,
                       "best_ratio": best_checked / best_plain, "verified_GBps": payload / checked / 1e9,
                       "best_verified_GBps": payload / best_checked / 1e9, "resident_after": resident_fraction(path)}
                results["rows"].append(row)
                print(f"{name:<8} {algorithm:<9} {label:<10} {plain:>6.3f} ({best_plain:.3f}) "
                      f"{checked:>6.3f} ({best_checked:.3f}) {checked / plain:>5.2f} ({best_checked / best_plain:.2f}) "
                      f"{row['verified_GBps']:>6.2f} ({row['best_verified_GBps']:.2f}) "
                      f"{results['hash_GBps'][algorithm]:>9.2f}", flush=True)
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "verify.json"), "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
