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


def _shared_site_packages():
    """The site-packages of the interpreter running the benchmark (ours: `.venv`) when it holds
    torch 2.13.0, NumPy and ml_dtypes, else None. Upstream's venv then takes them from there
    (a .pth line) and installs only safetensors 0.8.0: both sides run the same torch and NumPy,
    and the venv takes seconds and a few MB instead of minutes and a GB."""
    import importlib.metadata as md
    import sysconfig
    try:
        if md.version("torch").split("+")[0] != "2.13.0":
            return None
        md.version("numpy"), md.version("ml_dtypes")
    except md.PackageNotFoundError:
        return None
    return sysconfig.get_paths()["purelib"]


def upstream_python():
    """Create (once) the upstream virtualenv and return its interpreter."""
    py = os.path.join(UPSTREAM_VENV, "bin", "python")
    stamp = os.path.join(UPSTREAM_VENV, ".bench-ready")
    if os.path.exists(stamp) and os.path.exists(py):
        return py
    if os.path.exists(py):  # made elsewhere (e.g. a shared venv linked here): use it, never clear it
        p = subprocess.run([py, "-c", "import safetensors, torch, numpy, ml_dtypes; "
                            "print(safetensors.__version__)"], cwd="/", capture_output=True, text=True)
        if p.returncode == 0 and p.stdout.strip() == "0.8.0":
            return py
        raise SystemExit(f"[bench] {UPSTREAM_VENV} exists but lacks {' '.join(UPSTREAM_REQS)}: "
                         f"remove it to let the benchmark make its own")
    shared = _shared_site_packages()
    what = f"safetensors==0.8.0 over {shared}'s torch, NumPy, ml_dtypes" if shared else " ".join(UPSTREAM_REQS)
    print(f"[bench] creating {UPSTREAM_VENV} with {what} ...", flush=True)
    os.makedirs(OUT, exist_ok=True)
    venv.EnvBuilder(with_pip=True, clear=True).create(UPSTREAM_VENV)
    subprocess.check_call([py, "-m", "pip", "install", "-q", *(["--no-deps", UPSTREAM_REQS[0]]
                                                             if shared else UPSTREAM_REQS)])
    if shared:
        # Added after the install (pip would take ours, 0.8.0+c.N, for 0.8.0) and after the venv's
        # own site-packages in sys.path, so upstream's safetensors comes first; .pth files over
        # there (ours, installed in place) are not read.
        purelib = subprocess.check_output([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                          cwd="/", text=True).strip()
        with open(os.path.join(purelib, "bench-shared.pth"), "w") as f:
            f.write(shared + "\n")
    # cwd "/": run from the repo root, `-c` would import our package instead.
    out = subprocess.check_output([py, "-c", "import safetensors, torch, numpy, ml_dtypes; "
                                   "print(safetensors.__version__, safetensors.__file__)"], cwd="/")
    version, where = out.decode().split()
    assert version == "0.8.0" and where.startswith(UPSTREAM_VENV + os.sep), out
    open(stamp, "w").write(what + "\n")
    return py


def ours_python():
    """The interpreter running the benchmark, with the repo's safetensors importable."""
    return sys.executable


# bench/run.py --baseline DIR: an earlier build of ours (a checkout built in place) run as a
# third implementation, "baseline", beside upstream and ours.
BASELINE = None


def impl_env(impl):
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if impl == "ours" and not env.get("SAFETENSORS_BENCH_SELFTEST"):
        env["PYTHONPATH"] = REPO
    if impl == "baseline":
        env["PYTHONPATH"] = BASELINE
    env.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    return env


def run_worker(impl, args, timeout=1800, python=None):
    """Run bench/worker.py in a fresh process of the implementation (a peer: with its
    interpreter `python`); return its JSON."""
    selftest = os.environ.get("SAFETENSORS_BENCH_SELFTEST")
    py = python or (upstream_python() if impl == "upstream" or selftest else ours_python())
    cmd = [py, os.path.join(BENCH, "worker.py"), "--impl", "ours" if impl == "baseline" else impl,
           *args]
    # run from a neutral directory so the repo's package cannot shadow upstream's
    p = subprocess.run(cmd, env=impl_env(impl), cwd=WORK, capture_output=True, text=True,
                       timeout=timeout)
    if p.returncode != 0:
        return {"error": (p.stderr.strip().splitlines() or ["exit %d" % p.returncode])[-1][:300]}
    return json.loads(p.stdout.strip().splitlines()[-1])


# Optional competitors (issue 10): each in its own virtualenv under build/bench/, installed once
# from PyPI; one that cannot install or import is skipped with the reason printed and recorded.
PEERS = {
    # name: (pip requirements, module to import)
    "fastsafetensors": (["fastsafetensors", "torch==2.13.0", "numpy"], "fastsafetensors"),
    "runai": (["runai-model-streamer", "torch==2.13.0", "numpy"], "runai_model_streamer"),
    "instanttensor": (["instanttensor", "torch==2.13.0", "numpy"], "instanttensor"),
}
# Peers that load to CUDA devices only (InstantTensor 0.2): not even installed without one.
NEEDS_CUDA = {"instanttensor"}


def cuda_present():
    """An NVIDIA GPU with its driver loaded (whatever torch build the venvs have)."""
    gpus = "/proc/driver/nvidia/gpus"
    return os.path.isdir(gpus) and bool(os.listdir(gpus))


def peer_python(name, log=print):
    """Create (once) the peer's virtualenv; return (interpreter, None) or (None, why skipped).

    The outcome is remembered in a stamp file (delete the venv to retry)."""
    reqs, module = PEERS[name]
    if name in NEEDS_CUDA and not cuda_present():
        return None, "loads to CUDA devices only, and this machine has none: not installed"
    vdir = os.path.join(OUT, "venv-" + name)
    py = os.path.join(vdir, "bin", "python")
    stamp = os.path.join(vdir, ".bench-result")
    if os.path.exists(stamp):
        why = open(stamp).read().strip()
        return (py, None) if why == "ok" else (None, why)
    log(f"[bench] creating {vdir} with {' '.join(reqs)} ...")
    os.makedirs(OUT, exist_ok=True)
    why = "ok"
    try:
        venv.EnvBuilder(with_pip=True, clear=True).create(vdir)
        p = subprocess.run([py, "-m", "pip", "install", "-q", *reqs], capture_output=True,
                           text=True, timeout=1800)
        if p.returncode != 0:
            why = "pip install failed: " + (p.stderr.strip().splitlines() or ["?"])[-1]
        else:
            p = subprocess.run([py, "-c", f"import {module}"], cwd="/", capture_output=True,
                               text=True, timeout=300)
            if p.returncode != 0:
                why = f"import {module} failed: " + (p.stderr.strip().splitlines() or ["?"])[-1]
    except (OSError, subprocess.SubprocessError) as e:
        why = f"venv setup failed: {e}"
    with open(stamp, "w") as f:
        f.write(why[:300] + "\n")
    return (py, None) if why == "ok" else (None, why)
