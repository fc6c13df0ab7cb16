"""load_distributed across real processes: 2 and 4 gloo ranks on CPU, with
both strategies (exchange: each byte read once; direct: each rank reads its
own parts) and the automatic choice between them.

Each test starts its ranks as subprocesses (this file, run as a script),
meeting through a FileStore in the test's tmp dir; gloo listens on the
loopback interface only.  Every rank checks its tensors byte for byte against
``safe_open(...).get_slice(name)[its part]`` and writes a JSON report; the
test asserts on the reports (and on the counters summed over ranks).  Ranks
are killed if they outlive the deadline, so a bug cannot hang the suite.
"""

import datetime
import functools
import json
import math
import os
import subprocess
import sys
import time

import pytest

torch = pytest.importorskip("torch")  # the matrix Pythons have NumPy only

from safetensors import SafetensorError, _safetensors_c, safe_open
from safetensors.torch import LoadStats, Replicate, Shard, load_distributed, save_file

DEADLINE_S = 150
STRATEGIES = ("exchange", "direct")


def _dtypes():
    names = ["float64", "float32", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool",
             "complex64", "float8_e4m3fn", "float8_e5m2", "float8_e8m0fnu", "float8_e4m3fnuz", "float8_e5m2fnuz",
             "uint16", "uint32", "uint64", "float4_e2m1fn_x2"]
    return [getattr(torch, n) for n in names if hasattr(torch, n)]


def _random(shape, dtype, gen):
    nbytes = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
    raw = torch.randint(0, 256, (nbytes,), dtype=torch.uint8, generator=gen)
    if dtype == torch.bool:
        raw &= 1
    return raw.view(dtype).reshape(shape)


def _write_checkpoint(folder):
    """Three files and an index: every torch dtype, scalars, empty tensors,
    tensors smaller than the world, dims not divisible by 2 or 4, some large
    enough to take several rounds at small chunk sizes."""
    gen = torch.Generator().manual_seed(12)
    files = [{}, {}, {}]
    shapes = [(), (0,), (3,), (1,), (7, 5), (5, 7, 3), (2, 0, 4), (9, 16)]
    for i, dtype in enumerate(_dtypes()):
        for j, shape in enumerate(shapes):
            if dtype == getattr(torch, "float4_e2m1fn_x2", None) and len(shape) != 2:
                continue   # F4 is covered by the 2-D shapes (header last dim = 2 x torch's)
            files[(i + j) % 3][f"t{i}.{j}"] = _random(shape, dtype, gen)
    files[0]["big.rows"] = _random((300, 33), torch.float32, gen)
    files[1]["big.cols"] = _random((41, 257), torch.bfloat16, gen)
    files[2]["big.cube"] = _random((6, 50, 7), torch.int16, gen)
    weight_map, paths = {}, []
    for k, tensors in enumerate(files):
        name = f"model-0000{k + 1}-of-00003.safetensors"
        save_file(tensors, os.path.join(folder, name), metadata={"format": "pt"})
        paths.append(os.path.join(folder, name))
        weight_map.update({t: name for t in tensors})
    index = os.path.join(folder, "model.safetensors.index.json")
    with open(index, "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f)
    return paths, index


# ---------------------------------------------------------------------------
# rank side
# ---------------------------------------------------------------------------

def _bounds(length, size, rank):
    sizes = [len(p) for p in torch.tensor_split(torch.arange(length), size)]
    return sum(sizes[:rank]), sum(sizes[: rank + 1])


def _expected(path_of, name, placement, size, rank):
    with safe_open(path_of[name], framework="pt") as f:
        view = f.get_slice(name)
        if isinstance(placement, Replicate):
            return view[...]
        shape = view.get_shape()
        dim = placement.dim % len(shape)
        lo, hi = _bounds(shape[dim], size, rank)
        return view[(slice(None),) * dim + (slice(lo, hi),)]


def _same_bytes(a, b):
    return (a.dtype == b.dtype and a.shape == b.shape and a.device == b.device
            and torch.equal(a.contiguous().reshape(-1).view(torch.uint8), b.contiguous().reshape(-1).view(torch.uint8)))


def _plans(names, shapes, dtypes):
    def shard_last(name):
        return Shard(-1) if shapes[name] else Replicate()

    def mixed(name, shape, dtype):
        if not shape:
            return Replicate()
        return [Replicate(), Shard(0), Shard(-1), Shard(len(shape) // 2)][sum(map(ord, name)) % 4]

    return {
        "replicate": None,
        "shard0": {n: Shard(0) for n in names if shapes[n]},
        "shard_last": {n: shard_last(n) for n in names},
        "mixed": mixed,
    }


def _f4_safe(plan_fn, shapes, dtypes, size):
    """Drops F4 tensors whose last dim cannot be cut on whole bytes into
    `size` parts (that case has its own test)."""
    def ok(name, placement):
        if dtypes[name] != "F4" or not isinstance(placement, Shard):
            return True
        shape = shapes[name]
        if placement.dim % len(shape) != len(shape) - 1:
            return True
        return all(_bounds(shape[-1], size, r)[0] % 2 == 0 for r in range(size))

    def plan(name, shape, dtype):
        if plan_fn is None:
            placement = Replicate()
        elif callable(plan_fn):
            placement = plan_fn(name, shape, dtype)
        else:
            placement = plan_fn.get(name, Replicate())
        return placement if ok(name, placement) else Replicate()

    return plan


def _stats(stats, out=None):
    """The counters, and the bytes of the tensors returned (``held``)."""
    return dict({k: getattr(stats, k) for k in ("bytes_read", "header_bytes_read", "check_bytes_read", "bytes_sent",
                                                "bytes_received", "rounds", "strategy", "strategy_reason")},
                held=sum(t.nbytes for t in (out or {}).values()))


def _headers(paths, path_of=None):
    """{name: (header dtype, header shape)}; fills path_of {name: path}."""
    out = {}
    for p in paths:
        with safe_open(p, framework="pt") as f:
            for n in f.keys():
                out[n] = (f.get_slice(n).get_dtype(), tuple(f.get_slice(n).get_shape()))
                if path_of is not None:
                    path_of[n] = p
    return out


def _worker_correctness(rank, size, paths, index, report):
    import safetensors.distributed as sd

    path_of = {}
    headers = _headers(paths, path_of)
    shapes = {n: s for n, (_, s) in headers.items()}
    dtypes = {n: d for n, (d, _) in headers.items()}
    names = sorted(path_of)
    default_direct = sd._DIRECT_RUN

    def check(case, plan, **kwargs):
        stats = LoadStats()
        out = load_distributed(kwargs.pop("source", paths), plan, group=None, stats=stats, timeout=60, **kwargs)
        bad = []
        if sorted(out) != names:
            bad.append(f"names {sorted(out)[:5]}...")
        for n in names:
            placement = plan(n, shapes[n], dtypes[n])
            want = _expected(path_of, n, placement, size, rank)
            if n in out and not _same_bytes(out[n], want):
                bad.append(f"{n} {dtypes[n]} {shapes[n]} {placement}: got {tuple(out[n].shape)}")
        report.append({"case": case, "bad": bad, "stats": _stats(stats, out)})

    for plan_name, raw_plan in _plans(names, shapes, dtypes).items():
        plan = _f4_safe(raw_plan, shapes, dtypes, size)
        for source_name, source in (("files", paths), ("index", index)):
            for chunk in (4096, 1 << 20):
                for direct in (default_direct, 1):
                    if source_name == "index" and (chunk, direct) != (4096, default_direct):
                        continue   # the index only changes the sources
                    sd._DIRECT_RUN = direct
                    check(f"{plan_name}/{source_name}/chunk={chunk}/direct={direct}", plan, source=source,
                          chunk_bytes=chunk, strategy="exchange")
                    sd._DIRECT_RUN = default_direct
            check(f"{plan_name}/{source_name}/strategy=direct", plan, source=source, strategy="direct")
    # The automatic choice: one host, local files; then one rank says it is elsewhere.
    mixed = _f4_safe(_plans(names, shapes, dtypes)["mixed"], shapes, dtypes, size)
    inline, sd._INLINE = sd._INLINE, 64   # besides, every control message takes two all-gathers
    try:
        check("auto", mixed)
    finally:
        sd._INLINE = inline
    if rank == size - 1:
        here = sd._whereabouts
        sd._whereabouts = lambda paths: (("another-host", ""), here(paths)[1])
    try:
        check("auto/two hosts", mixed)
    finally:
        if rank == size - 1:
            sd._whereabouts = here
    # A plan that skips tensors (None), and a device given as a torch.device.
    for strategy in STRATEGIES:
        stats = LoadStats()
        out = load_distributed(paths, {"big.rows": Shard(0)}, default=None, device=torch.device("cpu"), stats=stats,
                               strategy=strategy)
        want = _expected(path_of, "big.rows", Shard(0), size, rank)
        report.append({"case": f"only-one/strategy={strategy}", "stats": _stats(stats, out),
                       "bad": [] if list(out) == ["big.rows"] and _same_bytes(out["big.rows"], want)
                       else [f"got {list(out)}"]})


def _fails(report, case, fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except Exception as exc:
        report.append({"case": case, "type": type(exc).__name__, "message": str(exc)})
    else:
        report.append({"case": case, "type": None, "message": "no exception"})


def _worker_failures(rank, size, paths, index, report):
    for strategy in STRATEGIES:
        cases = []
        _failures(rank, size, paths, index, cases, strategy)
        report += [dict(case, strategy=strategy) for case in cases]
    _fails(report, "strategies differ", load_distributed, paths, strategy=STRATEGIES[rank % 2], timeout=60)
    report[-1]["strategy"] = "both"


def _failures(rank, size, paths, index, report, strategy):
    import safetensors.distributed as sd

    load = functools.partial(load_distributed, timeout=60, strategy=strategy)
    folder = os.path.dirname(index)
    _fails(report, "missing tensor", load, paths, {"no.such.tensor": Shard(0)})
    _fails(report, "missing file", load, paths + [os.path.join(folder, "absent.safetensors")])
    bad = os.path.join(folder, "corrupt.safetensors")
    _fails(report, "corrupt file", load, [bad] + paths)

    def plan_fails_on_rank1(name, shape, dtype):
        if rank == 1:
            raise ValueError("plan refused on rank 1")
        return Replicate()

    _fails(report, "plan raises on one rank", load, paths, plan_fails_on_rank1)
    _fails(report, "plans differ", load, paths, {"big.rows": Shard(0) if rank == 2 else Replicate()})
    # An F4 tensor of header shape [7, 10]: 4 parts of its last dim start at values 0, 3, 6, 8.
    f4 = next(n for n, (d, s) in _headers(paths).items() if d == "F4" and s == (7, 10))
    _fails(report, "F4 not on bytes", load, paths, {f4: Shard(1)}, default=None)
    _fails(report, "shard a scalar", load, paths, {"t0.0": Shard(0)}, default=None)
    _fails(report, "sources differ", load, paths[: 1 + rank % 2])

    def failing(original, error):
        """``original``, but raising ``error`` on the last rank."""
        def method(self, *args):
            if rank == size - 1:
                raise error
            return original(self, *args)
        return method

    # The reads: exchange's through _read_cpu, direct's through the handles (_take).
    read, take = sd._Work._read_cpu, sd._Work._take
    sd._Work._read_cpu = failing(read, OSError(5, "injected read error", "disk"))
    sd._Work._take = failing(take, OSError(5, "injected read error", "disk"))
    try:
        _fails(report, "read fails on the last rank", load, paths, {"big.cols": Shard(1)})
    finally:
        sd._Work._read_cpu, sd._Work._take = read, take

    class FailingTorch:
        """torch, but on the last rank, in the data step, allocations above
        4000 bytes that _Work.run makes itself fail (the outputs, not the
        buffers of the error reports)."""

        def __getattr__(self, name):
            return getattr(torch, name)

        def empty(self, *args, **kwargs):
            if (rank == size - 1 and args and isinstance(args[0], int) and args[0] > 4000
                    and sys._getframe(1).f_code.co_name == "run"):
                raise MemoryError("injected allocation failure")
            return torch.empty(*args, **kwargs)

    def run_failing(self, *args):
        sd.torch = FailingTorch()
        try:
            return original_run(self, *args)
        finally:
            sd.torch = torch

    # Exchange allocates its outputs; direct's are allocated by the handle (_take).
    original_run, sd._Work.run = sd._Work.run, run_failing
    sd._Work._take = failing(take, MemoryError("injected allocation failure"))
    try:   # only exchanged shards: nothing is replicated, so the exchange's first round reports it
        _fails(report, "allocation fails on the last rank", load, paths, {"big.cols": Shard(1)}, default=None)
    finally:
        sd._Work.run, sd._Work._take = original_run, take
    # The group is still usable after all of that.
    out = load(paths, {"big.cube": Shard(1)}, default=None)
    report.append({"case": "after failures", "type": None, "message": str(tuple(out["big.cube"].shape))})


def _worker_identity(rank, size, paths, index, report):
    """Node-local copies: each rank reads the same relative path from its own
    directory (the fixture's identity/node<rank>)."""
    os.chdir(os.path.join(os.path.dirname(index), "identity", f"node{rank}"))
    for strategy in STRATEGIES:
        for case in _COPIES:
            name = f"{case}.safetensors"
            try:
                out = load_distributed(name, timeout=60, strategy=strategy)
            except Exception as exc:
                report.append({"strategy": strategy, "case": case, "type": type(exc).__name__, "message": str(exc)})
                continue
            with safe_open(name, framework="pt") as f:
                same = sorted(out) == sorted(f.keys()) and all(_same_bytes(out[n], f.get_tensor(n)) for n in out)
            report.append({"strategy": strategy, "case": case, "type": None,
                           "message": "same bytes" if same else "different bytes"})
    os.chdir(os.path.dirname(index))


def _worker_timeout(rank, size, paths, index, report):
    if rank == 0:
        start = time.monotonic()
        _fails(report, "peer never joins", load_distributed, paths, timeout=2)
        report[-1]["seconds"] = time.monotonic() - start
    else:
        # Stay alive (but out of the load) until rank 0 has given up.
        deadline = time.monotonic() + 30
        while not os.path.exists(os.environ["ST_TEST_DONE"]) and time.monotonic() < deadline:
            time.sleep(0.1)


def _rank_main(argv):
    import torch.distributed as dist

    scenarios, rank, size, store_path, workdir = argv[0].split("+"), int(argv[1]), int(argv[2]), argv[3], argv[4]
    with open(os.path.join(workdir, "checkpoint.json")) as f:
        paths, index = json.load(f)
    store = dist.FileStore(store_path, size)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=size,
                            timeout=datetime.timedelta(seconds=60))
    for scenario in scenarios:
        report = []
        out_path = os.path.join(workdir, f"report-{scenario}-{size}-{rank}.json")
        try:
            globals()[f"_worker_{scenario}"](rank, size, paths, index, report)
        finally:
            with open(out_path + ".tmp", "w") as f:
                json.dump(report, f)
            os.replace(out_path + ".tmp", out_path)
            if scenario == "timeout" and rank == 0:
                open(os.environ["ST_TEST_DONE"], "w").close()
                os._exit(0)   # the half-finished collective would make a clean shutdown wait
    dist.destroy_process_group()


# ---------------------------------------------------------------------------
# test side
# ---------------------------------------------------------------------------

# Copies of one file on two "nodes" (identity/node0, identity/node1): the
# same size and, but for "same", the same mtime (0, as image builds set it).
_COPIES = {
    "same": "identical bytes, different mtimes",
    "data": "node0's copy differs in one tensor byte, in the first sampled block",
    "header": "node1's copy differs in one byte of the header (a metadata value)",
}


def _write_copies(folder):
    gen = torch.Generator().manual_seed(3)
    tensors = {"w": _random((512, 512), torch.float32, gen), "b": _random((7,), torch.bfloat16, gen)}
    nodes = [folder / "identity" / f"node{r}" for r in range(2)]
    for node in nodes:
        node.mkdir(parents=True)
    for case in _COPIES:
        first = nodes[0] / f"{case}.safetensors"
        save_file(tensors, first, metadata={"note": "aaaa"})
        raw = bytearray(first.read_bytes())
        other = bytearray(raw)
        if case == "data":
            raw[8 + int.from_bytes(raw[:8], "little") + 100] ^= 0xFF
            first.write_bytes(raw)
        elif case == "header":
            at = other.index(b'"aaaa"')
            other[at:at + 6] = b'"aaab"'
        (nodes[1] / first.name).write_bytes(other)
        for r, node in enumerate(nodes):
            stamp = r * 1_000_000 if case == "same" else 0
            os.utime(node / first.name, (stamp, stamp))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dist")
    paths, index = _write_checkpoint(str(folder))
    _write_copies(folder)
    with open(folder / "corrupt.safetensors", "wb") as f:
        f.write((40).to_bytes(8, "little") + b'{"a": {"dtype": "F32", "shape": [2], "data_o')
    with open(folder / "checkpoint.json", "w") as f:
        json.dump([paths, index], f)
    return folder, paths, index


_SPAWNED = {}


def _spawn(scenarios, size, folder):
    """Runs `scenarios` ("a+b") in `size` ranks once per session; returns
    {scenario: [report of rank 0, rank 1, ...]}."""
    key = (scenarios, size, str(folder))
    if key not in _SPAWNED:
        _SPAWNED[key] = _run_ranks(scenarios, size, folder)
    return _SPAWNED[key]


def spawn_ranks(argvs, env, logs):
    """Runs one Python process per rank (argvs[r] after the interpreter),
    output in logs[r]; every rank is killed by DEADLINE_S, and a rank that
    failed fails the test with the tail of its log."""
    procs = []
    try:
        for argv, log_path in zip(argvs, logs):
            with open(log_path, "wb") as log:
                procs.append(subprocess.Popen([sys.executable, *argv], env=env, stdout=log,
                                              stderr=subprocess.STDOUT))
        deadline = time.monotonic() + DEADLINE_S
        for p in procs:
            try:
                p.wait(timeout=max(deadline - time.monotonic(), 1))
            except subprocess.TimeoutExpired:
                break
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    failed = [f"rank {r} exited with {p.returncode}:\n{logs[r].read_text(errors='replace')[-3000:]}"
              for r, p in enumerate(procs) if p.returncode != 0]
    assert not failed, "\n".join(failed)


def _run_ranks(scenarios, size, folder):
    tag = f"{scenarios}-{size}"
    store, done = folder / f"store-{tag}", folder / f"done-{tag}"
    for p in (store, done):
        if p.exists():
            p.unlink()
    env = dict(os.environ, GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1", ST_TEST_DONE=str(done))
    logs = [folder / f"log-{tag}-{r}.txt" for r in range(size)]
    spawn_ranks([[__file__, scenarios, str(r), str(size), str(store), str(folder)] for r in range(size)],
                env, logs)
    reports = {}
    for scenario in scenarios.split("+"):
        reports[scenario] = []
        for r in range(size):
            with open(folder / f"report-{scenario}-{size}-{r}.json") as f:
                reports[scenario].append(json.load(f))
    return reports


@pytest.mark.parametrize("size", [2, 4])
def test_every_rank_gets_its_part_and_every_byte_is_read_once(checkpoint, size):
    folder, paths, index = checkpoint
    scenarios = "correctness+identity+timeout" if size == 2 else "correctness+failures"
    reports = _spawn(scenarios, size, folder)["correctness"]
    file_bytes = sum(os.path.getsize(p) for p in paths)
    cases = [c["case"] for c in reports[0]]
    assert len(cases) == 4 * (5 + 2) + 2 + 2
    for k, case in enumerate(cases):
        per_rank = [rep[k] for rep in reports]
        for r, entry in enumerate(per_rank):
            assert entry["case"] == case
            assert entry["bad"] == [], f"rank {r}, {case}: {entry['bad'][:5]}"
        stats = [e["stats"] for e in per_rank]
        assert sum(s["bytes_sent"] for s in stats) == sum(s["bytes_received"] for s in stats), case
        # Every rank took the same branch; one host and local files: auto is direct.
        strategy = "exchange" if "chunk=" in case or case in ("auto/two hosts", "only-one/strategy=exchange") \
            else "direct"
        assert {s["strategy"] for s in stats} == {strategy}, (case, stats)
        if case == "auto":
            assert all(s["strategy_reason"].startswith(f"one host for all {size} ranks") for s in stats), stats
        if case == "auto/two hosts":
            assert all(s["strategy_reason"].startswith(f"the {size} ranks are on 2 hosts") for s in stats), stats
        if strategy == "direct":
            # Each rank read its own parts and headers; nothing was exchanged.
            for s in stats:
                assert s["bytes_sent"] == s["rounds"] == 0, (case, s)
                assert s["bytes_read"] - s["check_bytes_read"] - s["header_bytes_read"] == s["held"] > 0, (case, s)
            continue
        if case.startswith("only-one"):
            continue
        # Each file's header is read by one rank; each data byte by one rank;
        # besides, copies are compared (the files are smaller than the sample).
        assert sum(s["bytes_read"] - s["check_bytes_read"] for s in stats) == file_bytes, case
        assert sum(s["check_bytes_read"] for s in stats) >= file_bytes, case
        assert sum(s["header_bytes_read"] for s in stats) == sum(
            os.path.getsize(p) - _data_bytes(p) for p in paths), case
        if case.startswith("replicate/files/chunk=1048576"):
            # One all-gather round; each rank sends its slot to the others.
            assert all(s["rounds"] == 1 for s in stats), stats
            assert all(s["bytes_received"] == stats[0]["bytes_received"] > 0 for s in stats), stats
    # Sharding along dim 0 with one round of replicated scalars: little traffic.
    shard0 = next(i for i, c in enumerate(cases) if c.startswith("shard0/files/chunk=1048576/direct=1048576"))
    replicate = cases.index("replicate/files/chunk=1048576/direct=1048576")
    sent_sharded = sum(rep[shard0]["stats"]["bytes_sent"] for rep in reports)
    sent_replicated = sum(rep[replicate]["stats"]["bytes_sent"] for rep in reports)
    assert sent_sharded < sent_replicated / 4


def _data_bytes(path):
    with safe_open(path, framework="pt") as f:
        return sum(f.get_slice(n)[...].reshape(-1).view(torch.uint8).numel() for n in f.keys())


def test_a_failure_on_any_rank_raises_on_every_rank(checkpoint):
    folder, paths, index = checkpoint
    reports = _spawn("correctness+failures", 4, folder)["failures"]
    expected = {
        "missing tensor": ("SafetensorError", "no.such.tensor"),
        "missing file": ("FileNotFoundError", "absent.safetensors"),
        "corrupt file": ("SafetensorError", "Error while deserializing header"),
        "plan raises on one rank": ("ValueError", "plan refused on rank 1"),
        "plans differ": ("ValueError", "different load plan"),
        "F4 not on bytes": ("ValueError", "F4"),
        "shard a scalar": ("ValueError", "cannot shard"),
        "sources differ": ("ValueError", "different sources"),
        "read fails on the last rank": ("OSError", "injected read error"),
        "allocation fails on the last rank": ("MemoryError", "injected allocation failure"),
        "after failures": (None, None),
    }
    for r, report in enumerate(reports):
        # The same errors with either strategy.
        for strategy in STRATEGIES:
            got = {e["case"]: (e["type"], e["message"]) for e in report if e["strategy"] == strategy}
            assert list(got) == list(expected), (strategy, got)
            for case, (kind, text) in expected.items():
                if case == "after failures":
                    parts = torch.tensor_split(torch.arange(50), 4)
                    assert got[case] == (None, str((6, len(parts[r]), 7))), (strategy, got[case])
                    continue
                assert got[case][0] == kind, (r, strategy, case, got[case])
                assert text in got[case][1], (r, strategy, case, got[case])
        # Ranks asked for different strategies: caught before any data moves.
        assert report[-1]["case"] == "strategies differ" and report[-1]["type"] == "ValueError", report[-1]
        assert "different load plan" in report[-1]["message"], report[-1]


def test_ranks_compare_their_copies_by_content_not_mtime(checkpoint):
    folder, paths, index = checkpoint
    reports = _spawn("correctness+identity+timeout", 2, folder)["identity"]
    for r, report in enumerate(reports):
        for strategy in STRATEGIES:
            got = {e["case"]: (e["type"], e["message"]) for e in report if e["strategy"] == strategy}
            assert list(got) == list(_COPIES), got
            assert got["same"] == (None, "same bytes"), (r, strategy, got["same"])
            for case in ("data", "header"):
                kind, message = got[case]
                # The same error on both ranks and with both strategies, naming the file.
                assert kind == "SafetensorError", (r, strategy, case, got[case])
                # Rank 0 reads the header (whichever copy is odd); rank 1 finds the difference.
                assert message.startswith(f"{case}.safetensors: rank 1's copy differs from the copy rank 0 read its "
                                          "header from"), (r, strategy, case, message)
                assert message == reports[0][list(_COPIES).index(case)]["message"], (r, strategy, case, message)


def test_a_rank_that_never_joins_times_out_instead_of_hanging(checkpoint):
    folder, paths, index = checkpoint
    reports = _spawn("correctness+identity+timeout", 2, folder)["timeout"]
    (entry,) = reports[0]
    assert entry["type"] == "RuntimeError" and "timed out" in entry["message"], entry
    assert entry["seconds"] < 30


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_single_process_without_a_process_group(tmp_path, strategy):
    # Not initialized: a group of one; same results as safe_open.
    gen = torch.Generator().manual_seed(1)
    tensors = {"w": _random((5, 3), torch.float16, gen), "s": _random((), torch.int64, gen),
               "b": _random((4,), torch.bfloat16, gen)}
    save_file(tensors, tmp_path / "m.safetensors")
    stats = LoadStats()
    out = load_distributed(tmp_path / "m.safetensors", {"w": Shard(1)}, stats=stats, strategy=strategy)
    assert all(_same_bytes(out[n], tensors[n]) for n in tensors)
    assert (stats.strategy, stats.strategy_reason) == (strategy, f"strategy={strategy!r} was given")
    # Besides, the copy digest (the whole of so small a file): direct reads the
    # header and the digest once, with the handle it reads the data through;
    # exchange reads them with the header's reader, then again when the file
    # is opened for its data (which also reads and validates that copy's header).
    size = os.path.getsize(tmp_path / "m.safetensors")
    assert stats.bytes_read - stats.check_bytes_read == size
    expected = size if strategy == "direct" else 2 * size + size - _data_bytes(tmp_path / "m.safetensors")
    assert stats.check_bytes_read == expected
    assert stats.bytes_sent == stats.bytes_received == 0
    # Replicated tensors each have their own storage (like load_file's), so the dict saves as is.
    assert out["s"].untyped_storage().data_ptr() != out["b"].untyped_storage().data_ptr()
    save_file(out, tmp_path / "again.safetensors")


def test_auto_reads_directly_from_local_file_systems_only(tmp_path, monkeypatch):
    """One host (a group of one): direct for a local file system, exchange for
    a network or FUSE one, as ``_safetensors_c._storage_kind`` names it (an
    extension without it: every file system counts as local)."""
    save_file({"w": torch.arange(6.0).reshape(2, 3)}, tmp_path / "m.safetensors")
    kinds = {"local": None, "nfs": "nfs", "fuse": "fuse", "absent": "absent"}
    for name, kind in kinds.items():
        if kind == "absent":
            monkeypatch.delattr(_safetensors_c, "_storage_kind", raising=False)
        else:
            monkeypatch.setattr(_safetensors_c, "_storage_kind", lambda path, kind=kind: kind, raising=False)
        stats = LoadStats()
        out = load_distributed(tmp_path / "m.safetensors", {"w": Shard(1)}, stats=stats)
        assert torch.equal(out["w"], torch.arange(6.0).reshape(2, 3)), name
        if kind in (None, "absent"):
            assert stats.strategy == "direct", (name, stats)
            assert stats.strategy_reason.startswith("one host for all 1 ranks and local files"), (name, stats)
        else:
            assert stats.strategy == "exchange", (name, stats)
            assert stats.strategy_reason == (f"{tmp_path / 'm.safetensors'} is on a {kind} file system (as rank 0 "
                                             "sees it): each byte is read once"), (name, stats)
    with pytest.raises(ValueError, match="strategy must be one of auto, direct, exchange, not 'fast'"):
        load_distributed(tmp_path / "m.safetensors", strategy="fast")


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize(
    "source, plan, error, text",
    [
        (42, None, TypeError, "source must be"),
        # Nothing listens on port 1: retried, then a clear I/O error naming the URL.
        ("http://127.0.0.1:1/model.safetensors", None, OSError, "http://127.0.0.1:1/model.safetensors"),
        ("{tmp}/m.safetensors", {"w": "rows"}, TypeError, "Replicate(), Shard(dim) or None"),
        ("{tmp}/m.safetensors", {"w": Shard(2)}, ValueError, "cannot shard tensor 'w'"),
        ("{tmp}/m.safetensors", {"x": Shard(0)}, SafetensorError, "'x'"),
        ("{tmp}/index.json", None, ValueError, "not a safetensors index"),
    ],
)
def test_bad_arguments_raise_clear_errors(tmp_path, source, plan, error, text, strategy):
    save_file({"w": torch.zeros(2, 2)}, tmp_path / "m.safetensors")
    (tmp_path / "index.json").write_text('{"weights": {}}')
    if isinstance(source, str):
        source = source.format(tmp=tmp_path)
    with pytest.raises(error, match=None) as info:
        load_distributed(source, plan, strategy=strategy)
    assert text in str(info.value)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_index_and_file_list_mistakes_are_reported(tmp_path, strategy):
    load = functools.partial(load_distributed, strategy=strategy)
    save_file({"w": torch.zeros(2, 2)}, tmp_path / "a.safetensors")
    save_file({"w": torch.ones(2)}, tmp_path / "b.safetensors")
    (tmp_path / "index.json").write_text(json.dumps({"weight_map": {"w": "a.safetensors", "ghost": "a.safetensors"}}))
    with pytest.raises(SafetensorError, match="index names tensor 'ghost'"):
        load(tmp_path / "index.json")
    with pytest.raises(SafetensorError, match="'w' is in both"):
        load([tmp_path / "a.safetensors", tmp_path / "b.safetensors"])
    with pytest.raises(ValueError, match="listed twice"):
        load([tmp_path / "a.safetensors", tmp_path / "a.safetensors"])
    # An index loads only its names, from the files it names.
    (tmp_path / "index.json").write_text(json.dumps({"weight_map": {"w": "b.safetensors"}}))
    out = load(tmp_path / "index.json")
    assert list(out) == ["w"] and torch.equal(out["w"], torch.ones(2))


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("shard", ["../outside.safetensors", "ABSOLUTE", "link.safetensors"])
def test_index_shards_stay_in_the_index_folder(tmp_path, shard, strategy):
    """The index's shard names go through the CLI's rule (safetensors._index.shard_path)."""
    save_file({"w": torch.zeros(2)}, tmp_path / "outside.safetensors")
    model = tmp_path / "model"
    model.mkdir()
    os.symlink(tmp_path / "outside.safetensors", model / "link.safetensors")
    shard = str(tmp_path / "outside.safetensors") if shard == "ABSOLUTE" else shard
    (model / "index.json").write_text(json.dumps({"weight_map": {"w": shard}}))
    with pytest.raises(ValueError, match=f"shard name {shard!r} leads outside the index's folder: refused"):
        load_distributed(model / "index.json", strategy=strategy)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_f4_with_an_odd_last_dim_is_a_clear_error(mk, strategy):
    """torch holds F4 in pairs along the last dim: an odd one is refused as get_tensor refuses it."""
    if not hasattr(torch, "float4_e2m1fn_x2"):
        pytest.skip("this torch has no float4_e2m1fn_x2")
    path = mk.header({"a": {"dtype": "F4", "shape": [2, 3], "data_offsets": [0, 3]}}, b"\x21\x43\x65")
    for plan in (None, {"a": Shard(0)}):
        with pytest.raises(SafetensorError, match="last dimension of 3: torch.float4_e2m1fn_x2 holds 2 values"):
            load_distributed(path, plan, strategy=strategy)


if __name__ == "__main__":
    _rank_main(sys.argv[1:])
