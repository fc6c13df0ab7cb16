"""Benchmark: loading a tensor-parallel checkpoint into 4 ranks on one machine.

    .venv/bin/python bench/distributed.py                 # ~256 MiB checkpoint, 3 rounds
    .venv/bin/python bench/distributed.py --big           # ~2 GiB
    .venv/bin/python bench/distributed.py --cold          # evict the files from the page cache first
    .venv/bin/python bench/distributed.py --source http   # the same files served by nginx on 127.0.0.1
    .venv/bin/python bench/distributed.py --source s3     # nginx as a read-only S3 endpoint (s3fs)

The checkpoint is a small decoder in 4 shard files (bf16): the embedding and
the q/k/v/gate/up projections are column-parallel (``Shard(0)``), o/down are
row-parallel (``Shard(1)``), norms are replicated.  Modes, alternated in
each round (the machine is shared; only same-round ratios mean anything):

- ``distributed``: ``load_distributed`` over gloo, ``strategy="auto"`` (the
  choice and its reason are printed: one host and local files give
  ``direct``, each rank reading its own parts);
- ``exchange``: ``load_distributed(..., strategy="exchange")``: each byte
  read by one rank, the parts exchanged over gloo;
- ``naive-mmap``: every rank ``safe_open`` (mmap) + ``get_slice(name)[part]``
  + ``clone()`` (what per-rank loaders do before copying to a device);
- ``naive-pread``: the same with ``backend="pread"`` (a fresh copy per slice);
- ``fastsafetensors``: its loader in CPU / no-GDS mode (whole files per rank,
  then scatter and broadcast per tensor), when it is importable
  (``pip install fastsafetensors``; ``PYTHONPATH`` works too).

Per mode: the time until every rank holds its parts (ranks start together
after a barrier), the storage bytes read summed over ranks (exchange: the
loader's counter; naive, and distributed when it chose direct: the 4 KiB
pages each rank's slices cover, the unit a page cache or a block device
reads), bytes exchanged, and the peak RSS growth
per rank during the load.  ``--cold`` evicts the files with
``posix_fadvise(DONTNEED)`` before every load (no root needed).

``--source http`` / ``--source s3``: nginx on 127.0.0.1 serves the folder
(plain HTTP, or path-style ``/<bucket>/<key>`` as a read-only S3 endpoint for
s3fs), and the modes become ``distributed`` (``load_distributed(index URL,
storage_options=...)``) and ``naive-url`` (every rank reads the index, then
``safe_open(url)`` + ``get_slice(name)[part]``, compacted with ``clone()``
when the slice is a view of a larger fetch).  The storage bytes read are
then the response body bytes nginx sent (its access log, summed over the
ranks, index included).  nginx is stopped on exit, error or SIGTERM.
"""

import argparse
import datetime
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

RANKS = 4
PAGE = 4096
BUCKET = "ckpt"      # the checkpoint's folder under the served root (the S3 bucket)
INDEX = "model.safetensors.index.json"


def layer_names(layer):
    p = f"model.layers.{layer}."
    return {
        p + "input_layernorm.weight": ("norm", None),
        p + "self_attn.q_proj.weight": ("col", None),
        p + "self_attn.k_proj.weight": ("col", None),
        p + "self_attn.v_proj.weight": ("col", None),
        p + "self_attn.o_proj.weight": ("row", None),
        p + "post_attention_layernorm.weight": ("norm", None),
        p + "mlp.gate_proj.weight": ("col", "mlp"),
        p + "mlp.up_proj.weight": ("col", "mlp"),
        p + "mlp.down_proj.weight": ("row", "mlp"),
    }


def shapes(hidden, layers, vocab):
    out = {"model.embed_tokens.weight": ((vocab, hidden), "col")}
    for i in range(layers):
        for name, (kind, mlp) in layer_names(i).items():
            inner = 4 * hidden if mlp else hidden
            if kind == "norm":
                out[name] = ((hidden,), "norm")
            elif kind == "col":
                out[name] = ((inner, hidden), "col")
            else:
                out[name] = ((hidden, inner), "row")
    out["model.norm.weight"] = ((hidden,), "norm")
    return out


def plan_of(spec):
    from safetensors.torch import Replicate, Shard

    return {n: (Shard(0) if kind == "col" else Shard(1) if kind == "row" else Replicate())
            for n, (_, kind) in spec.items()}


def write_checkpoint(folder, hidden, layers, vocab):
    import torch
    from safetensors.torch import save_file

    spec = shapes(hidden, layers, vocab)
    names = list(spec)
    per_file = -(-len(names) // 4)
    weight_map = {}
    gen = torch.Generator().manual_seed(0)
    for k in range(4):
        file = f"model-{k + 1:05d}-of-00004.safetensors"
        tensors = {n: torch.randn(spec[n][0], generator=gen, dtype=torch.float32).to(torch.bfloat16)
                   for n in names[k * per_file:(k + 1) * per_file]}
        save_file(tensors, os.path.join(folder, file), metadata={"format": "pt"})
        weight_map.update({n: file for n in tensors})
    with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f)


def evict(folder):
    for name in os.listdir(folder):
        fd = os.open(os.path.join(folder, name), os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def status_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def reset_peak_rss():
    # Linux: "5" resets VmHWM to the current RSS, so the peak is the load's.
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


# ---------------------------------------------------------------------------
# one rank
# ---------------------------------------------------------------------------

def pages_covered(offset, runs):
    """4 KiB pages covered by byte runs [(start, length)] of one file region."""
    pages = 0
    last = -1
    for start, length in runs:
        first, end = (offset + start) // PAGE, (offset + start + length - 1) // PAGE
        if end <= last:
            continue
        pages += end - max(first, last + 1) + 1
        last = end
    return pages * PAGE


def pages_read(folder, spec, rank):
    """4 KiB pages of the headers and of rank's slices: what a rank slicing
    for itself reads from a page cache or a block device."""
    import torch
    from safetensors import safe_open

    touched = 0
    for file in sorted(f for f in os.listdir(folder) if f.endswith(".safetensors")):
        path = os.path.join(folder, file)
        with safe_open(path, framework="pt") as f:
            with open(path, "rb") as raw:
                header = 8 + int.from_bytes(raw.read(8), "little")
            touched += -(-header // PAGE) * PAGE
            offset = header
            for name in f.offset_keys():
                shape, kind = spec[name]
                nbytes = 2 * int(torch.tensor(shape).prod())
                if kind == "norm":
                    runs = [(0, nbytes)]
                else:
                    dim = 0 if kind == "col" else 1
                    parts = torch.tensor_split(torch.arange(shape[dim]), RANKS)
                    lo, hi = int(parts[rank][0]), int(parts[rank][-1]) + 1
                    if dim == 0:
                        runs = [(lo * shape[1] * 2, (hi - lo) * shape[1] * 2)]
                    else:
                        runs = [(r * shape[1] * 2 + lo * 2, (hi - lo) * 2) for r in range(shape[0])]
                touched += pages_covered(offset, runs)
                offset += nbytes
    return touched


def rank_part(view, spec_entry, rank):
    """What a naive rank slices out of get_slice's view: the whole of a norm,
    else its part of a column (dim 0) or row (dim 1) split, as tensor_split cuts."""
    import torch

    shape, kind = spec_entry
    if kind == "norm":
        return view[...]
    dim = 0 if kind == "col" else 1
    parts = torch.tensor_split(torch.arange(shape[dim]), RANKS)
    lo, hi = int(parts[rank][0]), int(parts[rank][-1]) + 1
    return view[lo:hi] if dim == 0 else view[:, lo:hi]


def naive_load(folder, spec, rank, backend):
    """Every rank reads its own slices; returns the tensors."""
    from safetensors import safe_open

    with open(os.path.join(folder, "model.safetensors.index.json")) as f:
        weight_map = json.load(f)["weight_map"]
    out = {}
    for file in sorted(set(weight_map.values())):
        with safe_open(os.path.join(folder, file), framework="pt", backend=backend) as f:
            for name in f.offset_keys():
                t = rank_part(f.get_slice(name), spec[name], rank)
                out[name] = t.clone() if backend == "mmap" else t
    return out


def naive_url_load(base, options, spec, rank):
    """Every rank fetches the index, then safe_open(url) + get_slice per tensor;
    returns (tensors, 0): the bytes are counted by the server."""
    import fsspec
    from safetensors import safe_open

    fs, path = fsspec.core.url_to_fs(f"{base}/{INDEX}", **(options or {}))
    weight_map = json.loads(fs.cat_file(path))["weight_map"]
    out = {}
    for file in sorted(set(weight_map.values())):
        with safe_open(f"{base}/{file}", framework="pt", storage_options=options) as f:
            for name in f.offset_keys():
                t = rank_part(f.get_slice(name), spec[name], rank)
                # A column slice is a view of the whole fetched rows: keep only the part.
                if t.untyped_storage().nbytes() != t.numel() * t.element_size():
                    t = t.clone()
                out[name] = t
    return out, 0


def fastsafetensors_load(folder, spec, rank):
    """fastsafetensors (CPU, no GDS): file i is read whole by rank i % 4, then
    get_sharded scatters / get_tensor broadcasts each tensor."""
    import torch.distributed as dist
    from fastsafetensors import SafeTensorsFileLoader

    files = sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(".safetensors"))
    loader = SafeTensorsFileLoader(dist.group.WORLD, "cpu", nogds=True)
    loader.add_filenames({r: files[r::RANKS] for r in range(RANKS)})
    buffers = loader.copy_files_to_device()
    out = {}
    for name, (_, kind) in spec.items():
        if kind == "norm":
            out[name] = buffers.get_tensor(name)
        else:
            out[name] = buffers.get_sharded(name, 0 if kind == "col" else 1)
    buffers.close()
    loader.close()
    return out, sum(os.path.getsize(f) for f in files[rank::RANKS])


def rank_main(args):
    import torch.distributed as dist
    from safetensors.torch import LoadStats, load_distributed

    rank = args.rank
    store = dist.FileStore(args.store, RANKS)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=RANKS,
                            timeout=datetime.timedelta(seconds=600))
    spec = shapes(args.hidden, args.layers, args.vocab)
    if args.base:   # the remote clients' import cost outside the timing
        import fsspec

        fsspec.get_filesystem_class(args.base.split("://", 1)[0])
    dist.barrier()
    reset_peak_rss()
    rss0 = status_kib("VmRSS")
    start = time.perf_counter()
    stats = LoadStats()
    options = json.loads(args.options) if args.options else None
    if args.mode in ("distributed", "exchange"):
        source = f"{args.base}/{INDEX}" if args.base else os.path.join(args.folder, INDEX)
        out = load_distributed(source, plan_of(spec), chunk_bytes=args.chunk_mib << 20, stats=stats,
                               storage_options=options, strategy="auto" if args.mode == "distributed" else "exchange")
        read = stats.bytes_read
    elif args.mode == "naive-url":
        out, read = naive_url_load(args.base, options, spec, rank)
    elif args.mode == "fastsafetensors":
        out, read = fastsafetensors_load(args.folder, spec, rank)
    else:
        out, read = naive_load(args.folder, spec, rank, args.mode.split("-")[1]), None
    seconds = time.perf_counter() - start
    if read is None or stats.strategy == "direct":   # each rank read its own slices: count their pages
        read = pages_read(args.folder, spec, rank)
    peak = status_kib("VmHWM")
    held = sum(t.numel() * t.element_size() for t in out.values())
    dist.barrier()
    dist.destroy_process_group()
    print(json.dumps({"rank": rank, "seconds": seconds, "read": read, "sent": stats.bytes_sent,
                      "received": stats.bytes_received, "held": held, "strategy": stats.strategy,
                      "strategy_reason": stats.strategy_reason,
                      "rss_growth_mib": (peak - rss0) / 1024, "peak_rss_mib": peak / 1024}))


# ---------------------------------------------------------------------------
# driver
# ---------------------------------------------------------------------------

def server_bytes(log):
    """Response body bytes nginx has logged so far (one number a line)."""
    try:
        with open(log) as f:
            return sum(int(line) for line in f if line.strip())
    except FileNotFoundError:
        return 0


def run_mode(args, mode, folder, round_no, server):
    store = os.path.join(folder, f".store-{mode}-{round_no}")
    if os.path.exists(store):
        os.unlink(store)
    if args.cold:
        evict(folder)
    env = dict(os.environ, GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1")
    cmd = [sys.executable, os.path.abspath(__file__), "--rank", "{r}", "--mode", mode, "--store", store,
           "--folder", folder, "--hidden", str(args.hidden), "--layers", str(args.layers),
           "--vocab", str(args.vocab), "--chunk-mib", str(args.chunk_mib)]
    if server is not None:
        cmd += ["--base", server["base"]]
        if server["options"]:
            cmd += ["--options", json.dumps(server["options"])]
        before = server_bytes(server["log"])
    procs = [subprocess.Popen([c.replace("{r}", str(r)) for c in cmd], env=env, stdout=subprocess.PIPE, text=True)
             for r in range(RANKS)]
    try:
        outs = [json.loads(p.communicate(timeout=1200)[0].strip().splitlines()[-1]) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    if os.path.exists(store):   # FileStore removes it when the last rank leaves
        os.unlink(store)
    if server is not None:
        # nginx writes each access-log line when the request ends: by now all are in.
        served = server_bytes(server["log"]) - before
        for r in outs:
            r["loader_read"] = r["read"]
            r["read"] = 0
        outs[0]["read"] = served
    return outs


# nginx's configuration from tests/remote_servers.py, logging each response's body bytes.
ACCESS_LOG = "log_format body '$body_bytes_sent';\n    access_log {prefix}/access.log body;"


def start_server(root, prefix):
    """nginx serving root on 127.0.0.1 -> (context manager, server dict)."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
    import remote_servers

    if "access_log off;" not in remote_servers.NGINX_CONF:
        raise SystemExit("tests/remote_servers.py's nginx configuration changed: update ACCESS_LOG here")
    remote_servers.NGINX_CONF = remote_servers.NGINX_CONF.replace("access_log off;", ACCESS_LOG)
    nginx = remote_servers.Nginx(root, prefix)
    server = {"log": os.path.join(prefix, "access.log"), "nginx": nginx}
    return nginx, server


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--big", action="store_true", help="~2 GiB checkpoint (hidden 2048, 14 layers)")
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--chunk-mib", type=int, default=64)
    ap.add_argument("--cold", action="store_true", help="evict the files from the page cache before each load")
    ap.add_argument("--source", choices=("local", "http", "s3"), default="local",
                    help="read the files from disk, or from nginx on 127.0.0.1 over http or as S3")
    ap.add_argument("--modes", help="default: distributed,exchange,naive-mmap,naive-pread,fastsafetensors (local),"
                                    " distributed,naive-url (http, s3)")
    ap.add_argument("--dir", help="where to write the checkpoint (default: a temporary directory)")
    ap.add_argument("--rank", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--mode", help=argparse.SUPPRESS)
    ap.add_argument("--store", help=argparse.SUPPRESS)
    ap.add_argument("--folder", help=argparse.SUPPRESS)
    ap.add_argument("--base", help=argparse.SUPPRESS)
    ap.add_argument("--options", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rank is not None:
        return rank_main(args)
    if args.big:
        args.hidden, args.layers = 2048, 14

    if args.modes is None:
        args.modes = ("distributed,exchange,naive-mmap,naive-pread,fastsafetensors" if args.source == "local"
                      else "distributed,naive-url")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))   # unwind: ranks killed, nginx stopped
    with tempfile.TemporaryDirectory(dir=args.dir) as root:
        folder = os.path.join(root, BUCKET)
        os.mkdir(folder)
        write_checkpoint(folder, args.hidden, args.layers, args.vocab)
        if args.source == "local":
            run_all(args, folder, None)
            return
        nginx, server = start_server(root, os.path.join(root, "nginx"))
        with nginx:
            if args.source == "http":
                server["base"], server["options"] = f"{nginx.url}/{BUCKET}", None
            else:
                server["base"] = f"s3://{BUCKET}"
                server["options"] = {"key": "testing", "secret": "testing", "skip_instance_cache": True,
                                     "client_kwargs": {"endpoint_url": nginx.url, "region_name": "us-east-1"}}
            run_all(args, folder, server)


def run_all(args, folder, server):
    files = [f for f in os.listdir(folder) if f.endswith(".safetensors")]
    total = sum(os.path.getsize(os.path.join(folder, f)) for f in files)
    where = "local files" if server is None else f"{args.source} from nginx on 127.0.0.1"
    print(f"checkpoint: {len(files)} files, {total / 2**20:.1f} MiB (hidden {args.hidden}, {args.layers} layers,"
          f" vocab {args.vocab}); {where}; {RANKS} gloo ranks; {'cold' if args.cold else 'warm'} page cache;"
          f" chunk {args.chunk_mib} MiB; {os.cpu_count()} CPUs")
    modes = args.modes.split(",")
    if "fastsafetensors" in modes and subprocess.run(
            [sys.executable, "-c", "import fastsafetensors"], capture_output=True).returncode != 0:
        print("fastsafetensors is not importable (pip install fastsafetensors): skipping it")
        modes.remove("fastsafetensors")
    results = {m: [] for m in modes}
    for k in range(args.rounds):
        for mode in (modes if k % 2 == 0 else modes[::-1]):
            results[mode].append(run_mode(args, mode, folder, k, server))
    print(f"{'mode':<15} {'time s (median)':>15} {'read MiB (sum)':>15} {'x ckpt':>7} {'sent MiB':>9}"
          f" {'held MiB/rank':>14} {'RSS growth MiB/rank (max)':>26}")
    for mode, rounds in results.items():
        times = sorted(max(r["seconds"] for r in ranks) for ranks in rounds)
        last = rounds[-1]
        read = sum(r["read"] for r in last)
        sent = f"{sum(r['sent'] for r in last) / 2**20:.1f}" if mode in ("distributed", "exchange") else "n/a"
        print(f"{mode:<15} {times[len(times) // 2]:>15.3f} {read / 2**20:>15.1f} {read / total:>7.2f}"
              f" {sent:>9} {max(r['held'] for r in last) / 2**20:>14.1f}"
              f" {max(r['rss_growth_mib'] for r in last):>26.1f}")
    if "distributed" in results:
        choices = {(r["strategy"], r["strategy_reason"]) for ranks in results["distributed"] for r in ranks}
        print("distributed (strategy='auto') chose:", "; ".join(f"{s} ({why})" for s, why in sorted(choices)))
    if server is not None and "distributed" in results:
        loader = sum(r["loader_read"] for r in results["distributed"][-1])
        print(f"distributed: the loader's own bytes_read sum {loader / 2**20:.1f} MiB"
              " (the server's figure also has the index and any retried bytes)")
    print("all times (s, per round):", {m: [round(max(r["seconds"] for r in ranks), 3) for ranks in rounds]
                                        for m, rounds in results.items()})


if __name__ == "__main__":
    main()
