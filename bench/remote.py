"""Remote loading benchmark: a bf16 shard and a GPT-2-like file, served by
nginx (as plain HTTP and as a read-only S3 endpoint: /<bucket>/<key>) and by
moto's S3 server, loaded into CPU torch tensors, each run in a fresh process.

Methods (each where it applies):
  ours        safetensors.torch.load_file(url)            (http:// and s3://)
  fsspec-all  fsspec/s3fs cat_file (whole object) + safetensors.torch.load
  boto3       boto3 download_file to local disk + load_file          (s3)
  runai       Run:ai Model Streamer, if installed                    (s3)
  raw         plain concurrent ranged GETs into one buffer: the limit
              (http.client readinto for http; boto3 get_object for s3)

Reported: median wall time of --rounds runs, GB/s, client CPU seconds and
server CPU seconds (nginx workers / moto process) per run.

    .venv/bin/python bench/remote.py                 # 256 MiB shard, small GPT-2-like
    .venv/bin/python bench/remote.py --shard-mb 2048 --gpt2-layers 12   # the full sizes
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

BUCKET = "models"


# --------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------

def make_files(root, shard_mb, gpt2_layers):
    import torch

    import safetensors.torch as st

    os.makedirs(os.path.join(root, BUCKET), exist_ok=True)
    shard = os.path.join(root, BUCKET, "shard.safetensors")
    gpt2 = os.path.join(root, BUCKET, "gpt2.safetensors")
    gen = torch.Generator().manual_seed(0)
    if not os.path.exists(shard):
        rows = 4096
        count = max(1, shard_mb * (1 << 20) // (rows * 4096 * 2))
        st.save_file({f"model.layers.{i}.weight": torch.randn(rows, 4096, generator=gen).to(torch.bfloat16)
                      for i in range(count)}, shard)
    if not os.path.exists(gpt2):
        d, vocab, ctx = 768, 50257, 1024
        tensors = {"wte.weight": torch.randn(vocab, d, generator=gen), "wpe.weight": torch.randn(ctx, d, generator=gen)}
        for i in range(gpt2_layers):
            p = f"h.{i}."
            for name, shape in (("ln_1.weight", (d,)), ("ln_1.bias", (d,)), ("attn.c_attn.weight", (d, 3 * d)),
                                ("attn.c_attn.bias", (3 * d,)), ("attn.c_proj.weight", (d, d)),
                                ("attn.c_proj.bias", (d,)), ("ln_2.weight", (d,)), ("ln_2.bias", (d,)),
                                ("mlp.c_fc.weight", (d, 4 * d)), ("mlp.c_fc.bias", (4 * d,)),
                                ("mlp.c_proj.weight", (4 * d, d)), ("mlp.c_proj.bias", (d,))):
                tensors[p + name] = torch.randn(*shape, generator=gen)
        tensors["ln_f.weight"] = torch.ones(d)
        tensors["ln_f.bias"] = torch.zeros(d)
        st.save_file(tensors, gpt2)
    return {"shard": shard, "gpt2": gpt2}


# --------------------------------------------------------------------------
# one run, in a fresh process
# --------------------------------------------------------------------------

def s3_options(endpoint):
    return {"key": "testing", "secret": "testing",
            "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"}}


def boto3_client(endpoint, threads=16):
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                        aws_secret_access_key="testing",
                        config=Config(max_pool_connections=threads, read_timeout=300, retries={"max_attempts": 2}))


def raw_http(url, size, threads, chunk):
    """Concurrent ranged GETs with keep-alive connections, readinto one buffer."""
    import http.client
    import threading
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    buffer = bytearray(size)
    view = memoryview(buffer)
    ranges = [(lo, min(size, lo + chunk)) for lo in range(0, size, chunk)]
    lock = threading.Lock()

    def worker():
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=300)
        while True:
            with lock:
                if not ranges:
                    break
                lo, hi = ranges.pop()
            conn.request("GET", parts.path, headers={"Range": f"bytes={lo}-{hi - 1}"})
            response = conn.getresponse()
            got = 0
            while got < hi - lo:
                n = response.readinto(view[lo + got:hi])
                if n == 0:
                    raise IOError("short body")
                got += n
            response.read()
        conn.close()

    workers = [threading.Thread(target=worker) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return buffer


def raw_s3(endpoint, key, size, threads, chunk):
    from concurrent.futures import ThreadPoolExecutor

    client = boto3_client(endpoint, threads)
    buffer = bytearray(size)
    view = memoryview(buffer)

    def get(lo):
        hi = min(size, lo + chunk)
        body = client.get_object(Bucket=BUCKET, Key=key, Range=f"bytes={lo}-{hi - 1}")["Body"]
        got = 0
        while got < hi - lo:
            n = body._raw_stream.readinto(view[lo + got:hi])
            if not n:
                raise IOError("short body")
            got += n

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(get, range(0, size, chunk)))
    return buffer


def child(spec):
    """Runs one measurement; prints JSON {seconds, cpu, bytes}."""
    import resource

    import torch  # noqa: F401  (import cost outside the timing)

    import safetensors.torch as st

    method, url, size = spec["method"], spec["url"], spec["size"]
    endpoint = spec.get("endpoint")
    key = url.rsplit("/", 1)[-1]
    opts = s3_options(endpoint) if url.startswith("s3://") else None
    if opts is not None:
        import s3fs  # noqa: F401
    start_cpu = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    if method == "ours":
        out = st.load_file(url, storage_options=opts)
    elif method == "fsspec-all":
        import fsspec

        fs, path = fsspec.core.url_to_fs(url, **(opts or {}))
        out = st.load(fs.cat_file(path))
    elif method == "boto3":
        with tempfile.TemporaryDirectory() as tmp:
            local = os.path.join(tmp, key)
            boto3_client(endpoint).download_file(BUCKET, key, local)
            out = st.load_file(local)
            out = {k: v.clone() for k, v in out.items()}   # touch: the bytes leave the page cache mapping
    elif method == "runai":
        from runai_model_streamer import SafetensorsStreamer

        os.environ.setdefault("AWS_ENDPOINT_URL", endpoint)
        os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
        os.environ.setdefault("RUNAI_STREAMER_S3_USE_VIRTUAL_ADDRESSING", "0")
        os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
        # Its 1 s default request timeout fails against moto: the settings used.
        os.environ.setdefault("RUNAI_STREAMER_S3_REQUEST_TIMEOUT_MS", "600000")
        os.environ.setdefault("RUNAI_STREAMER_S3_TIMEOUT", "600")
        out = {}
        with SafetensorsStreamer() as streamer:
            streamer.stream_file(url)
            for name, tensor in streamer.get_tensors():
                out[name] = tensor.clone()
    elif method == "raw":
        if url.startswith("s3://"):
            out = raw_s3(endpoint, key, size, spec["threads"], spec["chunk"])
        else:
            out = raw_http(url, size, spec["threads"], spec["chunk"])
    else:
        raise SystemExit(f"unknown method {method}")
    seconds = time.perf_counter() - start
    end_cpu = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (end_cpu.ru_utime - start_cpu.ru_utime) + (end_cpu.ru_stime - start_cpu.ru_stime)
    del out
    print(json.dumps({"seconds": seconds, "cpu": cpu}))


# --------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------

def process_cpu(pids):
    """utime + stime seconds of the given processes and their children
    (nginx's workers), read now."""
    pids = list(pids) + [child for pid in pids for child in children_of(pid)]
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except OSError:
            pass
    return total


def children_of(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def run_one(spec, server_pids):
    before = process_cpu(server_pids)
    result = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True,
                            text=True, timeout=1800)
    after = process_cpu(server_pids)
    if result.returncode != 0:
        return {"error": (result.stderr or result.stdout).strip().splitlines()[-1:]}
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    measured["server_cpu"] = after - before
    return measured


def start_moto():
    import remote_servers

    port = remote_servers.free_port()
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    remote_servers._wait_listening(port, process, "moto")
    return process, f"http://127.0.0.1:{port}"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--shard-mb", type=int, default=256, help="bf16 shard size (2048 for the 2 GB run)")
    parser.add_argument("--gpt2-layers", type=int, default=2, help="GPT-2-like file: transformer blocks (12 = GPT-2 small)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=16, help="raw loop concurrency")
    parser.add_argument("--chunk-mb", type=int, default=16, help="raw loop request size")
    parser.add_argument("--moto-max-mb", type=int, default=300,
                        help="skip moto for files above this: it reads the whole object for every ranged GET")
    parser.add_argument("--methods", default="ours,fsspec-all,boto3,runai,raw")
    parser.add_argument("--servers", default="nginx-http,nginx-s3,moto")
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "st-remote-bench"))
    parser.add_argument("--json", help="write results here")
    args = parser.parse_args()
    if args.child:
        return child(json.loads(args.child))

    import signal

    import remote_servers

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))   # stop the servers on kill
    files = make_files(os.path.join(args.workdir, "www"), args.shard_mb, args.gpt2_layers)
    methods = args.methods.split(",")
    servers = args.servers.split(",")
    if "runai" in methods:
        try:
            import runai_model_streamer  # noqa: F401
        except ImportError:
            print("runai-model-streamer not installed: skipped")
            methods.remove("runai")
    results = []
    nginx = remote_servers.Nginx(os.path.join(args.workdir, "www"), os.path.join(args.workdir, "nginx"))
    moto = moto_endpoint = None
    with nginx:
        nginx_pids = [nginx._process.pid]
        if "moto" in servers:
            moto, moto_endpoint = start_moto()
            c = boto3_client(moto_endpoint)
            c.create_bucket(Bucket=BUCKET)
            for path in files.values():
                if os.path.getsize(path) <= args.moto_max_mb << 20:
                    c.upload_file(path, BUCKET, os.path.basename(path))
        try:
            for label, path in files.items():
                size = os.path.getsize(path)
                key = os.path.basename(path)
                for server in servers:
                    if server == "moto" and size > args.moto_max_mb << 20:
                        continue
                    specs = {}
                    for method in methods:
                        if server == "nginx-http" and method in ("boto3", "runai"):
                            continue
                        spec = {"method": method, "server": server, "size": size,
                                "threads": args.threads, "chunk": args.chunk_mb << 20}
                        if server == "nginx-http":
                            spec["url"] = f"{nginx.url}/{BUCKET}/{key}"
                            pids = nginx_pids
                        else:
                            spec["url"] = f"s3://{BUCKET}/{key}"
                            spec["endpoint"] = nginx.url if server == "nginx-s3" else moto_endpoint
                            pids = nginx_pids if server == "nginx-s3" else [moto.pid]
                        specs[method] = (spec, pids)
                    # One untimed read first (the server's page cache), then the
                    # methods in turn, round after round: drift hits them alike.
                    warm = dict(next(iter(specs.values()))[0], method="raw")
                    run_one(warm, [])
                    runs = {method: [] for method in specs}
                    for _ in range(args.rounds):
                        for method, (spec, pids) in specs.items():
                            runs[method].append(run_one(spec, pids))
                    for method, method_runs in runs.items():
                        ok = [r for r in method_runs if "error" not in r]
                        row = {"file": label, "server": server, "method": method, "bytes": size}
                        if not ok:
                            row["error"] = method_runs[0]["error"]
                        else:
                            row["seconds"] = statistics.median(r["seconds"] for r in ok)
                            row["gbps"] = size / row["seconds"] / 1e9
                            row["client_cpu"] = statistics.median(r["cpu"] for r in ok)
                            row["server_cpu"] = statistics.median(r["server_cpu"] for r in ok)
                        results.append(row)
                        print(json.dumps(row), flush=True)
        finally:
            if moto is not None:
                moto.terminate()
                moto.wait()
    print()
    print(f"{'file':6} {'server':10} {'method':10} {'GB/s':>6} {'s':>7} {'client cpu':>10} {'server cpu':>10}")
    for row in results:
        if "error" in row:
            print(f"{row['file']:6} {row['server']:10} {row['method']:10} error: {row['error']}")
        else:
            print(f"{row['file']:6} {row['server']:10} {row['method']:10} {row['gbps']:6.2f} {row['seconds']:7.2f} "
                  f"{row['client_cpu']:10.2f} {row['server_cpu']:10.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
