"""load_distributed from URLs: 2 gloo ranks reading a checkpoint served by
nginx (http://) and by moto's S3 server (s3://), both on 127.0.0.1.

The ranks are subprocesses (this file run as a script) meeting through a
FileStore; each checks its tensors byte for byte against local
``safe_open(...).get_slice(name)[its part]`` of the same files and writes a
JSON report.  The test asserts on the reports and on the counters: across
the ranks, the bytes read from the server sum to the files' sizes (data plus
headers), so each byte crossed the network once: URLs make the automatic
strategy exchange.  One case forces the direct strategy (each rank fetches
its own parts) and must give the same tensors.  Ranks are killed past a
deadline and servers stopped by their context managers, pass or fail.
"""

import datetime
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("fsspec")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import remote_servers  # noqa: E402
import test_distributed as local  # noqa: E402

from safetensors.torch import LoadStats, Replicate, Shard, load_distributed  # noqa: E402

SIZE = 2


# ---------------------------------------------------------------------------
# rank side
# ---------------------------------------------------------------------------

def _worker(rank, size, job, report):
    import safetensors.distributed as sd

    paths, urls, index_url, options = job["paths"], job["urls"], job["index_url"], job["storage_options"]
    path_of = {}
    headers = local._headers(paths, path_of)
    shapes = {n: s for n, (_, s) in headers.items()}
    dtypes = {n: d for n, (d, _) in headers.items()}
    names = sorted(path_of)
    plans = local._plans(names, shapes, dtypes)
    default_direct = sd._DIRECT_RUN
    cases = [
        ("mixed/urls/chunk=4096/direct=1", urls, plans["mixed"], 4096, 1, "auto"),
        ("mixed/index/chunk=1048576", index_url, plans["mixed"], 1 << 20, default_direct, "auto"),
        ("replicate/urls/chunk=4096", urls, plans["replicate"], 4096, default_direct, "auto"),
        ("shard_last/index/chunk=4096", index_url, plans["shard_last"], 4096, default_direct, "auto"),
        ("shard0/urls/chunk=1048576/direct=1", urls, plans["shard0"], 1 << 20, 1, "auto"),
        ("mixed/index/strategy=direct", index_url, plans["mixed"], 1 << 20, default_direct, "direct"),
    ]
    for case, source, raw_plan, chunk, direct, strategy in cases:
        plan = local._f4_safe(raw_plan, shapes, dtypes, size)
        sd._DIRECT_RUN = direct
        stats = LoadStats()
        try:
            out = load_distributed(source, plan, chunk_bytes=chunk, stats=stats, timeout=60,
                                   storage_options=options, strategy=strategy)
        finally:
            sd._DIRECT_RUN = default_direct
        report.append({"case": case, "bad": _compare(out, names, plan, shapes, dtypes, path_of, size, rank),
                       "stats": local._stats(stats, out)})
    # One URL (not a list), sharded along dim 0.
    stats = LoadStats()
    big = next(u for u in urls if u.endswith("00001-of-00003.safetensors"))
    out = load_distributed(big, {"big.rows": Shard(0)}, stats=stats, timeout=60, storage_options=options)
    one_file = {n: p for n, p in path_of.items() if p.endswith("00001-of-00003.safetensors")}
    plan = lambda n, s, d: Shard(0) if n == "big.rows" else Replicate()  # noqa: E731
    report.append({"case": "one url", "bad": _compare(out, sorted(one_file), plan, shapes, dtypes, one_file, size,
                                                      rank), "stats": local._stats(stats)})
    # A missing object raises on every rank.
    try:
        load_distributed(urls + [urls[0].rsplit("/", 1)[0] + "/absent.safetensors"], timeout=60,
                         storage_options=options)
    except Exception as exc:
        report.append({"case": "missing object", "type": type(exc).__name__, "message": str(exc)})
    else:
        report.append({"case": "missing object", "type": None, "message": "no exception"})


def _compare(out, names, plan, shapes, dtypes, path_of, size, rank):
    bad = []
    if sorted(out) != names:
        bad.append(f"names {sorted(out)[:5]}...")
    for n in names:
        placement = plan(n, shapes[n], dtypes[n]) if callable(plan) else plan.get(n, Replicate())
        want = local._expected(path_of, n, placement, size, rank)
        if n in out and not local._same_bytes(out[n], want):
            bad.append(f"{n} {dtypes[n]} {shapes[n]} {placement}: got {tuple(out[n].shape)}")
    return bad


def _rank_main(argv):
    import torch.distributed as dist

    job_path, rank, size, store_path, report_path = argv[0], int(argv[1]), int(argv[2]), argv[3], argv[4]
    with open(job_path) as f:
        job = json.load(f)
    dist.init_process_group("gloo", store=dist.FileStore(store_path, size), rank=rank, world_size=size,
                            timeout=datetime.timedelta(seconds=60))
    report = []
    try:
        _worker(rank, size, job, report)
    finally:
        with open(report_path, "w") as f:
            json.dump(report, f)
    dist.destroy_process_group()


# ---------------------------------------------------------------------------
# test side
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dist-remote")
    paths, index = local._write_checkpoint(str(folder))
    return folder, paths, index


def _run(folder, tag, urls, index_url, storage_options, paths):
    work = folder.parent / f"work-{tag}"
    work.mkdir(exist_ok=True)
    job = work / "job.json"
    job.write_text(json.dumps({"paths": paths, "urls": urls, "index_url": index_url,
                               "storage_options": storage_options}))
    env = dict(os.environ, GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1")
    logs = [work / f"log-{r}.txt" for r in range(SIZE)]
    reports = [work / f"report-{r}.json" for r in range(SIZE)]
    local.spawn_ranks([[__file__, str(job), str(r), str(SIZE), str(work / "store"), str(reports[r])]
                       for r in range(SIZE)], env, logs)
    return [json.loads(p.read_text()) for p in reports]


def _check(reports, paths):
    file_bytes = sum(os.path.getsize(p) for p in paths)
    header_bytes = sum(os.path.getsize(p) - local._data_bytes(p) for p in paths)
    first = paths[0] if paths[0].endswith("00001-of-00003.safetensors") else None
    cases = [e["case"] for e in reports[0]]
    assert len(cases) == 8, cases
    for k, case in enumerate(cases):
        per_rank = [rep[k] for rep in reports]
        assert all(e["case"] == case for e in per_rank)
        if case == "missing object":
            for e in per_rank:
                assert e["type"] == "FileNotFoundError" and "absent.safetensors" in e["message"], e
            continue
        for r, e in enumerate(per_rank):
            assert e["bad"] == [], f"rank {r}, {case}: {e['bad'][:5]}"
        stats = [e["stats"] for e in per_rank]
        assert sum(s["bytes_sent"] for s in stats) == sum(s["bytes_received"] for s in stats), case
        if case.endswith("strategy=direct"):
            # Forced: each rank fetched its headers and its own parts, nothing exchanged.
            for s in stats:
                assert s["strategy"] == "direct" and s["bytes_sent"] == 0, (case, s)
                assert s["bytes_read"] - s["check_bytes_read"] - s["header_bytes_read"] == s["held"] > 0, (case, s)
            continue
        # The automatic choice: URLs are read once, exchanged.
        assert all(s["strategy"] == "exchange" for s in stats), (case, stats)
        assert all(s["strategy_reason"].endswith(" is a URL: each byte is read once") for s in stats), (case, stats)
        if case == "one url":
            assert sum(s["bytes_read"] for s in stats) == os.path.getsize(first), (case, stats)
            continue
        # Each header fetched by one rank, each data byte by one rank.
        assert sum(s["bytes_read"] for s in stats) == file_bytes, (case, stats)
        assert sum(s["header_bytes_read"] for s in stats) == header_bytes, (case, stats)
        assert all(s["bytes_read"] > s["header_bytes_read"] for s in stats), (case, stats)
        assert all(s["check_bytes_read"] == 0 for s in stats), (case, stats)   # the ETag pins the copy


def test_two_ranks_over_http_read_every_byte_once(checkpoint, tmp_path_factory):
    if remote_servers.nginx_binary() is None:
        pytest.skip("nginx is not installed")
    folder, paths, index = checkpoint
    with remote_servers.Nginx(str(folder), str(tmp_path_factory.mktemp("nginx"))) as server:
        urls = [f"{server.url}/{os.path.basename(p)}" for p in paths]
        reports = _run(folder, "http", urls, f"{server.url}/{os.path.basename(index)}", None, paths)
    _check(reports, paths)


def test_two_ranks_over_s3_read_every_byte_once(checkpoint):
    pytest.importorskip("s3fs")
    pytest.importorskip("moto.server")
    pytest.importorskip("flask")
    folder, paths, index = checkpoint
    with remote_servers.MotoS3() as server:
        client = server.client()
        client.create_bucket(Bucket="dist")
        for p in paths + [index]:
            client.upload_file(p, "dist", f"ckpt/{os.path.basename(p)}")
        urls = [f"s3://dist/ckpt/{os.path.basename(p)}" for p in paths]
        reports = _run(folder, "s3", urls, f"s3://dist/ckpt/{os.path.basename(index)}", server.options, paths)
    _check(reports, paths)


@pytest.mark.parametrize("shard", ["../x.safetensors", "/x.safetensors", "http://elsewhere/x.safetensors",
                                   "x.safetensors?part=2"])
def test_index_shard_names_stay_next_to_the_index(shard):
    """A remote index's shard names stay next to it, as a local index's stay in its folder."""
    with remote_servers.FaultServer() as server:
        server.put("/m/index.json", json.dumps({"weight_map": {"w": shard}}).encode())
        with pytest.raises(ValueError, match="leads outside the index's folder: refused"):
            load_distributed(f"{server.url}/m/index.json")


# ---------------------------------------------------------------------------
# interrupted reads (a process of its own: it takes SIGALRM)
# ---------------------------------------------------------------------------

_PIECES = [96 << 10, 160 << 10, 128 << 10, 128 << 10]   # destinations of one read; chunk cuts fall inside them


def _interrupt_child(repetitions):
    """Reads a 512 KiB object in 32 parallel chunks into fresh tensors, with
    an exception raised from a signal handler at a random point of the read.

    Every other time it keeps the destinations, copies them, lets every
    chunk still queued or running finish (close() stops the threads) and
    compares: a chunk that outlived the read would have changed them.  The
    other times it frees them and fills new buffers of the same sizes with
    a pattern before close(): a chunk that outlived the read without keeping
    its destination alive would write into these buffers (or crash on
    unmapped memory).  Those times, more interrupts may follow every 0.5 ms
    while the read waits for its chunks to stop.  (The read waits through
    them, but an interrupt that lands on the one instruction that loops back
    can still end the wait early: Python code cannot close that window, so
    only the kept destinations are what makes that case safe.)"""
    import safetensors.distributed as sd
    from safetensors import remote

    remote.DEFAULTS.update(chunk_size=16 << 10, concurrency=4)
    rng = random.Random(19)
    data = rng.randbytes(sum(_PIECES))
    armed = [0]   # interrupts still to raise
    durations = []   # of uninterrupted reads: only picks the interrupt points

    def on_alarm(signum, frame):
        if armed[0]:
            armed[0] -= 1
            raise KeyboardInterrupt

    signal.signal(signal.SIGALRM, on_alarm)
    with remote_servers.FaultServer() as server:
        # Replies are written in two parts (head, body): without TCP_NODELAY
        # each request waits out a delayed ACK.
        server._server.RequestHandlerClass.disable_nagle_algorithm = True
        server.put("/m.bin", data)
        url = f"{server.url}/m.bin"
        pinned = remote.open_source(url)
        table = {"size": pinned.size, "identity": pinned.identity}
        pinned.close()

        def read(delay=None, times=1, keep=False):
            """-> (interrupted, the bytes read or None), file closed."""
            f = sd._File(url, table, None)
            outs = [torch.empty(n, dtype=torch.uint8) for n in _PIECES]
            got, interrupted = None, False
            try:
                try:
                    if delay is not None:
                        armed[0] = times
                        signal.setitimer(signal.ITIMER_REAL, delay, 5e-4)
                    start = time.perf_counter()
                    f.read_into(0, [t.numpy() for t in outs])
                    durations.append(time.perf_counter() - start)
                finally:
                    armed[0] = 0   # a last interrupt may land before this line: the handler below takes it
                got = b"".join(bytes(t.numpy()) for t in outs)
            except KeyboardInterrupt:
                interrupted = True
            signal.setitimer(signal.ITIMER_REAL, 0)
            if keep:
                left = [t.clone() for t in outs]
                f.close()
                assert all(torch.equal(a, b) for a, b in zip(left, outs)), "a chunk wrote after the read had left"
                return interrupted, got
            del outs
            canaries = [torch.full((n,), 0xA5, dtype=torch.uint8) for n in _PIECES * 4]
            f.close()
            for c in canaries:
                assert bool((c == 0xA5).all()), "a chunk wrote into memory freed after the interrupted read"
            return interrupted, got

        for _ in range(3):
            assert read() == (False, data)
        whole = sorted(durations)[1]
        interrupted = 0
        for k in range(repetitions):
            keep = k % 2 == 1
            stopped, got = read(rng.uniform(1e-4, whole), 1 if keep else rng.choice([1, 3, 20]), keep)
            interrupted += stopped
            assert stopped or got == data
    print(json.dumps({"interrupted": interrupted, "repetitions": repetitions}))


def test_an_interrupted_read_stops_writing_before_it_raises(tmp_path):
    run = subprocess.run([sys.executable, __file__, "--interrupts", "120"], capture_output=True, text=True,
                         timeout=600, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["interrupted"] > 0, report


def test_the_first_failed_chunk_cancels_the_chunks_not_started():
    """Every GET fails (the object changed after it was pinned; 412 is not
    retried): each of the `concurrency` workers fails its first chunk, and the
    other chunks never start."""
    import safetensors.distributed as sd
    from safetensors import remote

    saved = dict(remote.DEFAULTS)
    remote.DEFAULTS.update(chunk_size=4 << 10, concurrency=3)
    try:
        with remote_servers.FaultServer() as server:
            server.put("/m.bin", bytes(256 << 10))
            url = f"{server.url}/m.bin"
            pinned = remote.open_source(url, head_bytes=8)
            f = sd._File(url, {"size": pinned.size, "identity": pinned.identity}, None)
            pinned.close()
            opening = len(server.gets("/m.bin"))   # each source's first 8 bytes
            server.put("/m.bin", bytes([1]) * (256 << 10))
            out = torch.empty(256 << 10, dtype=torch.uint8)
            try:
                with pytest.raises(remote.RemoteObjectChangedError):
                    f.read_into(0, [out.numpy()])
            finally:
                f.close()
            assert 1 <= len(server.gets("/m.bin")) - opening <= 3, server.gets("/m.bin")
    finally:
        remote.DEFAULTS.clear()
        remote.DEFAULTS.update(saved)


if __name__ == "__main__":
    if sys.argv[1] == "--interrupts":
        _interrupt_child(int(sys.argv[2]))
    else:
        _rank_main(sys.argv[1:])
