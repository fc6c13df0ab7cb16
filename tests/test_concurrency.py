"""Thread stress tests. Each runs in a subprocess with a timeout, so a crash
(segfault, abort) or a deadlock fails the test instead of killing or hanging
the suite. sys.setswitchinterval(1e-6) makes the interpreter switch threads
as often as it can.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

TIMEOUT = int(os.environ.get("ST_STRESS_TIMEOUT", "120"))
ROUNDS = int(os.environ.get("ST_STRESS_ROUNDS", "1"))

PRELUDE = textwrap.dedent(r"""
    import os, sys, threading, traceback
    import numpy as np
    from safetensors import SafetensorError, safe_open
    from safetensors.numpy import save_file, load_file
    sys.setswitchinterval(1e-6)
    ROUNDS = int(os.environ.get("ST_STRESS_ROUNDS", "1"))
    errors = []
    def guard(fn):
        def run(*a):
            try:
                fn(*a)
            except BaseException:
                errors.append(traceback.format_exc())
        return run
    def start(fns):
        ts = [threading.Thread(target=f) for f in fns]
        for t in ts: t.start()
        return ts
    def join(ts):
        for t in ts:
            t.join(60)
            if t.is_alive():
                print("DEADLOCK: thread still running", file=sys.stderr)
                os._exit(3)
    def finish():
        if errors:
            print("\n".join(errors[:5]), file=sys.stderr)
            sys.exit(2)
        print("OK")
    def make_arrays(seed, n=12):
        rng = np.random.default_rng(seed)
        out = {}
        for i in range(n):
            shape = (int(rng.integers(1, 9)), int(rng.integers(1, 33)))
            dt = [np.float32, np.int64, np.uint8, np.float16, np.int32][i % 5]
            out[f"t{i:02d}"] = (rng.standard_normal(shape) * 100).astype(dt)
        return out
""")


def run_script(body: str, tmp_path, torch=False):
    script = PRELUDE + textwrap.dedent(body)
    env = dict(os.environ, ST_TMP=str(tmp_path), ST_STRESS_ROUNDS=str(ROUNDS))
    try:
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                              timeout=TIMEOUT, env=env)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"stress script timed out after {TIMEOUT}s (deadlock?)\n"
                    f"stdout: {e.stdout}\nstderr: {e.stderr}")
    assert proc.returncode == 0, (
        f"rc={proc.returncode} (negative = killed by signal)\n"
        f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}")
    assert "OK" in proc.stdout


@pytest.mark.parametrize("backend", ["mmap", "pread"])
def test_shared_handle_many_readers(tmp_path, backend):
    run_script(f"""
        path = os.path.join(os.environ["ST_TMP"], "shared.safetensors")
        arrays = make_arrays(1)
        save_file(arrays, path)
        names = sorted(arrays)
        f = safe_open(path, "np", backend={backend!r})
        @guard
        def reader(seed):
            rng = np.random.default_rng(seed)
            for _ in range(300 * ROUNDS):
                k = names[int(rng.integers(len(names)))]
                what = int(rng.integers(4))
                if what == 0:
                    assert f.keys() == names
                elif what == 1:
                    assert np.array_equal(f.get_tensor(k), arrays[k])
                elif what == 2:
                    sl = f.get_slice(k)
                    assert sl.get_shape() == list(arrays[k].shape)
                    r = int(rng.integers(arrays[k].shape[0]))
                    assert np.array_equal(sl[r:], arrays[k][r:])
                    assert np.array_equal(sl[r], arrays[k][r])
                else:
                    assert f.metadata() is None
                    assert f.offset_keys() and sorted(f.offset_keys()) == names
        join(start([lambda s=s: reader(s) for s in range(8)]))
        f.__exit__(None, None, None)
        finish()
    """, tmp_path)


def test_shared_handle_torch(tmp_path):
    pytest.importorskip("torch")
    run_script("""
        import torch
        from safetensors.torch import save_file as tsave
        path = os.path.join(os.environ["ST_TMP"], "t.safetensors")
        ref = {f"w{i}": torch.arange((i + 1) * 64, dtype=torch.float32).reshape(i + 1, -1)
               for i in range(6)}
        ref["w0"] = torch.zeros(3)
        tsave(ref, path)
        f = safe_open(path, "pt")
        @guard
        def reader(seed):
            for j in range(200 * ROUNDS):
                k = f"w{(seed + j) % 6}"
                assert torch.equal(f.get_tensor(k), ref[k])
                assert torch.equal(f.get_slice(k)[:1], ref[k][:1])
        join(start([lambda s=s: reader(s) for s in range(6)]))
        finish()
    """, tmp_path)


def test_save_and_load_different_files(tmp_path):
    run_script("""
        base = os.environ["ST_TMP"]
        @guard
        def worker(i):
            for r in range(20 * ROUNDS):
                arrays = make_arrays(i * 1000 + r, n=6)
                p = os.path.join(base, f"w{i}.safetensors")
                save_file(arrays, p, metadata={"i": str(i), "r": str(r)})
                back = load_file(p)
                assert sorted(back) == sorted(arrays)
                for k in arrays:
                    assert np.array_equal(back[k], arrays[k])
                with safe_open(p, "np", backend="pread") as f:
                    assert f.metadata() == {"i": str(i), "r": str(r)}
        join(start([lambda i=i: worker(i) for i in range(6)]))
        finish()
    """, tmp_path)


def test_save_same_path_while_reading(tmp_path):
    # Writers replace the file atomically; readers see the old or the new one.
    run_script("""
        path = os.path.join(os.environ["ST_TMP"], "same.safetensors")
        versions = [make_arrays(v, n=4) for v in range(3)]
        save_file(versions[0], path)
        stop = threading.Event()
        @guard
        def writer():
            for r in range(40 * ROUNDS):
                save_file(versions[r % 3], path)
            stop.set()
        @guard
        def reader():
            while not stop.is_set():
                with safe_open(path, "np") as f:
                    got = {k: f.get_tensor(k) for k in f.keys()}
                assert any(all(np.array_equal(got[k], v[k]) for k in v) for v in versions)
        join(start([writer, reader, reader, reader]))
        finish()
    """, tmp_path)


@pytest.mark.parametrize("backend", ["mmap", "pread"])
def test_close_while_reading(tmp_path, backend):
    run_script(f"""
        path = os.path.join(os.environ["ST_TMP"], "close.safetensors")
        arrays = make_arrays(7, n=8)
        save_file(arrays, path)
        names = sorted(arrays)
        for rnd in range(30 * ROUNDS):
            f = safe_open(path, "np", backend={backend!r})
            go = threading.Barrier(5)
            closed_seen = []
            @guard
            def reader():
                go.wait()
                for j in range(200):
                    k = names[j % len(names)]
                    try:
                        what = j % 3
                        if what == 0:
                            assert np.array_equal(f.get_tensor(k), arrays[k])
                        elif what == 1:
                            assert np.array_equal(f.get_slice(k)[1:], arrays[k][1:])
                        else:
                            assert f.keys() == names
                    except SafetensorError as e:
                        assert "closed" in str(e).lower(), str(e)
                        closed_seen.append(1)
            @guard
            def closer():
                go.wait()
                f.__exit__(None, None, None)
            join(start([reader, reader, reader, reader, closer]))
            try:
                f.get_tensor(names[0])
            except SafetensorError as e:
                assert str(e) == "File is closed", str(e)
            else:
                raise AssertionError("get_tensor after __exit__ did not raise")
        finish()
    """, tmp_path)


def test_close_while_reading_torch_views_survive(tmp_path):
    pytest.importorskip("torch")
    run_script("""
        import torch
        from safetensors.torch import save_file as tsave
        path = os.path.join(os.environ["ST_TMP"], "tv.safetensors")
        ref = {f"w{i}": torch.full((64, 64), float(i)) for i in range(4)}
        tsave(ref, path)
        for rnd in range(20 * ROUNDS):
            f = safe_open(path, "pt")
            held = []
            go = threading.Barrier(4)
            @guard
            def reader():
                go.wait()
                for j in range(100):
                    k = f"w{j % 4}"
                    try:
                        held.append((k, f.get_tensor(k)))
                    except SafetensorError as e:
                        assert "closed" in str(e).lower(), str(e)
            @guard
            def closer():
                go.wait()
                f.__exit__(None, None, None)
            join(start([reader, reader, reader, closer]))
            del f
            # tensors handed out before the close stay valid views
            for k, t in held:
                assert torch.equal(t, ref[k])
        finish()
    """, tmp_path)


def test_many_handles_open_close(tmp_path):
    run_script("""
        path = os.path.join(os.environ["ST_TMP"], "many.safetensors")
        arrays = make_arrays(3, n=3)
        save_file(arrays, path)
        @guard
        def worker(i):
            for r in range(100 * ROUNDS):
                with safe_open(path, "np", backend=("mmap", "pread")[(i + r) % 2]) as f:
                    k = f.keys()[r % 3]
                    assert np.array_equal(f.get_tensor(k), arrays[k])
        join(start([lambda i=i: worker(i) for i in range(8)]))
        finish()
    """, tmp_path)
