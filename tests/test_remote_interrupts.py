"""Remote reads that stop early: an interrupt (Ctrl-C, any exception from a
signal handler) during a load, the first failing chunk, close() while reads
are in flight, and a header claiming more memory than exists. A read into
caller memory never outlives the call that started it."""

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

torch = pytest.importorskip("torch")

sys.path.insert(0, os.path.dirname(__file__))
import remote_servers  # noqa: E402

import safetensors.torch  # noqa: E402
from safetensors import SafetensorError, remote, safe_open  # noqa: E402
from safetensors.remote import SafetensorIOError, _Cancelled  # noqa: E402

# Tensors of sizes on both sides of glibc's mmap threshold, so that memory a
# read wrote after its tensor was freed is either unmapped (a crash) or handed
# to the buffers allocated next (changed bytes).
SIZES = [16_384, 40_000, 65_536, 100_000, 131_072, 180_000, 250_000, 300_000]


def _file_bytes():
    gen = torch.Generator().manual_seed(1)
    # bytes 0..0x7f only: never the 0xA5 the checker's buffers are filled with
    return safetensors.torch.save({f"t{i}": torch.randint(0, 0x80, (n,), dtype=torch.uint8, generator=gen)
                                   for i, n in enumerate(SIZES)})


@pytest.fixture(scope="module")
def server():
    with remote_servers.FaultServer() as s:
        yield s


INTERRUPTED_LOADS = r"""
import os, random, signal, sys, threading, time
from safetensors import safe_open

framework, url, rounds, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
sizes = [int(n) for n in sys.argv[5].split(",")]
if framework == "pt":
    import torch
    patterned = lambda n: torch.full((n,), 0xA5, dtype=torch.uint8)
else:
    import numpy as np
    patterned = lambda n: np.full(n, 0xA5, dtype=np.uint8)

def intact(buf):
    return buf.count(0xA5) == len(buf) if isinstance(buf, bytearray) else not bool((buf != 0xA5).any())

armed = False
def on_sigint(signum, frame):   # one KeyboardInterrupt per round, wherever it lands
    global armed
    if armed:
        armed = False
        raise KeyboardInterrupt

signal.signal(signal.SIGINT, on_sigint)
rng = random.Random(seed)
kept, stopped = [], 0
with safe_open(url, framework=framework, chunk_size=4096, concurrency=8, head_bytes=64) as f:
    for round_ in range(rounds):
        timer = threading.Timer(rng.uniform(0, 0.05), os.kill, (os.getpid(), signal.SIGINT))
        try:
            try:
                armed = True
                timer.start()
                f.get_tensors()
                timer.join()
            finally:
                armed = False
        except KeyboardInterrupt:
            stopped += 1
        timer.join()
        # The interrupted load's tensors are freed: what is allocated now may
        # get their memory, and nothing may write into it any more.
        fresh = [patterned(n) for n in sizes for _ in range(2)] + [bytearray(b"\xa5" * n) for n in sizes]
        time.sleep(0.02)
        if not all(intact(buf) for buf in fresh):
            sys.exit(f"round {round_}: a buffer allocated after the interrupt changed")
        kept.extend(fresh[:4])
time.sleep(0.2)
if not all(intact(buf) for buf in kept):
    sys.exit("a buffer allocated after an interrupt changed later")
print(f"ok: {stopped} of {rounds} loads interrupted")
"""


@pytest.mark.parametrize("framework", ["pt", "np"])
def test_interrupted_loads_never_write_after_return(server, framework, tmp_path):
    """SIGINT at random points of multi-chunk loads: the KeyboardInterrupt
    reaches the caller only once every chunk read stopped, so memory freed
    with the half-filled tensors is never written afterwards (before: SIGSEGV,
    glibc aborts, or server bytes in buffers allocated after the interrupt)."""
    if framework == "np":
        pytest.importorskip("numpy")
    server.put("/int.safetensors", _file_bytes())
    script = tmp_path / "interrupted_loads.py"
    script.write_text(INTERRUPTED_LOADS)
    run = subprocess.run([sys.executable, str(script), framework, server.url + "/int.safetensors", "40", "0",
                          ",".join(map(str, SIZES))], capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, (run.returncode, run.stdout[-2000:], run.stderr[-2000:])


def _cancelled_by(cancel, limit=10.0):
    """A read in flight stalls until its _Cancel is set (as a transport that
    shuts its socket down does), then stops with _Cancelled."""
    deadline = time.monotonic() + limit
    while cancel is None or not cancel.is_set():
        if time.monotonic() > deadline:
            raise TimeoutError("the read in flight was never cancelled")
        time.sleep(0.001)
    raise _Cancelled()


def test_first_failure_cancels_the_reads_in_flight(server, monkeypatch):
    server.put("/first.safetensors", _file_bytes())
    with safe_open(server.url + "/first.safetensors", framework="pt", chunk_size=4096, concurrency=4,
                   head_bytes=16) as f:
        calls, numbers = [], iter(range(1000))

        def read_into(obj, lo, hi, targets, cancel=None):
            calls.append(cancel)
            if next(numbers) == 0:
                raise SafetensorIOError("the first chunk failed")
            _cancelled_by(cancel)

        monkeypatch.setattr(remote._Source, "_fetch", read_into)   # the reads after the header
        with pytest.raises(SafetensorIOError, match="the first chunk failed"):
            f.get_tensors()
    # one _Cancel for the whole load, set by the failure; nothing started after it
    assert calls[0] is not None and calls[0].is_set()
    assert all(c is calls[0] for c in calls)
    assert len(calls) <= 4


@pytest.fixture
def ctrl_c():
    """Python's own SIGINT handler (KeyboardInterrupt) during the test: a job that a shell starts
    in the background (`make test &`, nohup, some CI runners) inherits SIGINT ignored, and Python
    then installs no handler, so the test's Ctrl-C would do nothing."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


def test_interrupt_returns_only_after_the_reads_stopped(server, monkeypatch, ctrl_c):
    """A KeyboardInterrupt while chunks are in flight, and a second one while
    they are being stopped: get_tensors raises once no read runs any more."""
    server.put("/ki.safetensors", _file_bytes())
    with safe_open(server.url + "/ki.safetensors", framework="pt", chunk_size=4096, concurrency=4,
                   head_bytes=16) as f:
        lock, running, calls = threading.Lock(), [0], []

        def read_into(obj, lo, hi, targets, cancel=None):
            with lock:
                calls.append(lo)
                running[0] += 1
                if len(calls) == 4:
                    os.kill(os.getpid(), signal.SIGINT)      # Ctrl-C with 4 reads in flight
            try:
                _cancelled_by(cancel)
            finally:
                with lock:
                    if len(calls) == 4 and running[0] == 4:
                        os.kill(os.getpid(), signal.SIGINT)  # and again while they stop
                    running[0] -= 1
                time.sleep(0.05)
                with lock:
                    calls.append("stopped")

        monkeypatch.setattr(remote._Source, "_fetch", read_into)   # the reads after the header
        with pytest.raises(KeyboardInterrupt):
            f.get_tensors()
        assert calls.count("stopped") == 4 and len(calls) == 8


def test_close_cancels_reads_in_flight_and_starts_nothing():
    """close() from another thread while get_tensors has chunks in flight: the
    load fails with "File is closed" (before: it went on, or a raw RuntimeError
    from the shut-down pool), and no request starts after the close."""
    with remote_servers.FaultServer() as stalling:
        stalling.put("/c.safetensors", _file_bytes())
        f = safe_open(stalling.url + "/c.safetensors", framework="pt", chunk_size=4096, concurrency=2,
                      head_bytes=16)
        before = len(stalling.gets("/c.safetensors"))
        stalling.faults["/c.safetensors"]["stall"] = True   # GETs from now on wait for release
        outcome = []

        def load():
            try:
                outcome.append(f.get_tensors())
            except BaseException as e:  # noqa: BLE001 - inspected below
                outcome.append(e)

        loader = threading.Thread(target=load)
        loader.start()
        deadline = time.monotonic() + 30
        while len(stalling.gets("/c.safetensors")) < before + 2 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert len(stalling.gets("/c.safetensors")) == before + 2   # both workers' reads in flight
        f.close()
        stalling.release.set()
        loader.join(30)
        assert not loader.is_alive()
        assert isinstance(outcome[0], SafetensorError) and str(outcome[0]) == "File is closed", outcome
        assert len(stalling.gets("/c.safetensors")) == before + 2


def test_closed_handle_every_method_raises(server):
    server.put("/closed.safetensors", _file_bytes())
    f = safe_open(server.url + "/closed.safetensors", framework="pt", chunk_size=4096, head_bytes=16)
    sliced = f.get_slice("t1")
    f.close()
    gets = len(server.gets("/closed.safetensors"))
    calls = [f.keys, f.offset_keys, f.metadata, f.get_tensors, lambda: f.get_tensor("t1"),
             lambda: f.get_slice("t1"), lambda: sliced[2:5]]
    for call in calls:
        with pytest.raises(SafetensorError, match="^File is closed$"):
            call()
    assert sliced.get_shape() == [SIZES[1]]   # header facts, as for a local file
    assert sliced[0:0].shape == (0,)          # nothing to read
    assert len(server.gets("/closed.safetensors")) == gets   # nothing was requested


class _HugeObject:
    """An fsspec-style file object whose header claims 909 TiB of tensor data."""

    def __init__(self, nbytes):
        header = ('{"huge":{"dtype":"U8","shape":[%d],"data_offsets":[0,%d]}}' % (nbytes, nbytes)).encode()
        header += b" " * (-len(header) % 8)
        self.head = len(header).to_bytes(8, "little") + header
        self.size = len(self.head) + nbytes
        self.fs, self.path = self, "huge.safetensors"
        self.protocol = "huge"

    def info(self, path):
        return {"size": self.size, "type": "file"}

    def cat_file(self, path, start, end):   # only the first MiB is ever asked for
        return self.head[start:end].ljust(end - start, b"\0")


@pytest.mark.parametrize("framework", ["pt", "np"])
def test_more_tensor_data_than_memory_is_memory_error(framework):
    if framework == "np":
        pytest.importorskip("numpy")
    with safe_open(_HugeObject(909 << 40), framework=framework) as f:
        with pytest.raises(MemoryError, match="allocate"):
            f.get_tensor("huge")
        with pytest.raises(MemoryError):
            f.get_tensors()


def test_destination_views_are_released_after_read_many(server, monkeypatch):
    """The memoryviews read_many gets over tensor memory are released when
    it returns: a source that kept one could not write through it."""
    server.put("/views.safetensors", _file_bytes())
    kept = []
    real = remote._Source.read_many

    def read_many(self, requests):
        kept.extend(view for _, view in requests)
        return real(self, requests)

    with safe_open(server.url + "/views.safetensors", framework="pt", chunk_size=4096, head_bytes=16) as f:
        monkeypatch.setattr(remote._Source, "read_many", read_many)
        f.get_tensors()
    assert len(kept) > 1
    for view in kept:
        with pytest.raises(ValueError, match="released"):
            view[0:1] = b"\0"


def test_the_wait_for_running_reads_outlasts_further_interrupts():
    """The first failure (ValueError) sends the caller into its wait; three
    KeyboardInterrupts land in that wait (raised by the cancel's set(), in
    the caller's thread only); the read still running ends only once the
    cancel is set, and the caller leaves after it, with the interrupt."""
    import threading

    from safetensors import remote

    class Interrupted(remote._Cancel):
        left = 3

        def set(self):
            if threading.current_thread() is threading.main_thread() and Interrupted.left:
                Interrupted.left -= 1
                raise KeyboardInterrupt
            super().set()

    cancel, finished = Interrupted(), []

    def fails():
        raise ValueError("the first failure")

    def runs_until_cancelled():
        while not cancel.is_set():
            time.sleep(0.001)
        finished.append(True)

    raised = None
    try:
        remote._run_all(lambda fn: fn(), [(runs_until_cancelled,), (fails,)], cancel, 2)
    except BaseException as exc:  # noqa: BLE001 - a KeyboardInterrupt here is a failure, not a stop of pytest
        raised = exc
    assert type(raised) is KeyboardInterrupt, repr(raised)
    assert finished == [True] and Interrupted.left == 0
