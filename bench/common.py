"""Shared helpers: paths, the upstream virtualenv, worker invocation."""
import json
import os
import subprocess
import sys
import venv

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
# Everything the benchmark generates lives under build/bench/ (`make clean` removes it):
# upstream's virtualenv, the workload files, and (by default) the results.
OUT = os.path.join(REPO, "build", "bench")
UPSTREAM_VENV = os.path.join(OUT, "venv-upstream")
WORK = os.path.join(OUT, "work")
UPSTREAM_REQS = ["safetensors==0.8.0", "numpy", "torch==2.13.0", "ml_dtypes"]


def upstream_python():
    """Create (once) the upstream virtualenv and return its interpreter."""
    py = os.path.join(UPSTREAM_VENV, "bin", "python")
    stamp = os.path.join(UPSTREAM_VENV, ".bench-ready")
    if os.path.exists(stamp) and os.path.exists(py):
        return py
    print(f"[bench] creating {UPSTREAM_VENV} with {' '.join(UPSTREAM_REQS)} ...", flush=True)
    os.makedirs(OUT, exist_ok=True)
    venv.EnvBuilder(with_pip=True, clear=True).create(UPSTREAM_VENV)
    subprocess.check_call([py, "-m", "pip", "install", "-q", *UPSTREAM_REQS])
    # cwd "/": run from the repo root, `-c` would import our package instead.
    out = subprocess.check_output([py, "-c", "import safetensors; print(safetensors.__version__)"],
                                  cwd="/")
    assert out.decode().strip() == "0.8.0", out
    open(stamp, "w").write(" ".join(UPSTREAM_REQS) + "\n")
    return py


def ours_python():
    """The interpreter running the benchmark, with the repo's safetensors importable."""
    return sys.executable


def impl_env(impl):
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if impl == "ours" and not env.get("SAFETENSORS_BENCH_SELFTEST"):
        env["PYTHONPATH"] = REPO
    env.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    return env


def run_worker(impl, args, timeout=1800):
    """Run bench/worker.py in a fresh process of the implementation; return its JSON."""
    selftest = os.environ.get("SAFETENSORS_BENCH_SELFTEST")
    py = upstream_python() if impl == "upstream" or selftest else ours_python()
    cmd = [py, os.path.join(BENCH, "worker.py"), "--impl", impl, *args]
    # run from a neutral directory so the repo's package cannot shadow upstream's
    p = subprocess.run(cmd, env=impl_env(impl), cwd=WORK, capture_output=True, text=True,
                       timeout=timeout)
    if p.returncode != 0:
        return {"error": (p.stderr.strip().splitlines() or ["exit %d" % p.returncode])[-1]}
    return json.loads(p.stdout.strip().splitlines()[-1])
