"""Real servers on 127.0.0.1 for the remote tests and the remote benchmark.

* ``MotoS3``: moto's S3 in server mode (a thread of this process).
* ``Nginx``: Debian's nginx serving a directory, Range/ETag/If-Match as nginx
  does them; ``/forbidden/`` answers 403.
* ``FaultServer``: a small HTTP server of ours that serves objects from a dict
  and misbehaves on request: drops connections mid-body, truncates bodies,
  stalls until released, ignores Range, answers 403/404; it honours If-Match
  and logs every request, so tests can count and inspect ranges.

Each is a context manager: started on a free port, stopped on exit. The
pytest fixtures ``faults`` and ``s3`` (module scope) and ``assert_same`` are
shared by the remote test modules, which import them.
"""

import hashlib
import os
import shutil
import socket
import struct
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_listening(port: int, process=None, what="server", limit=30.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} exited with status {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not start listening on 127.0.0.1:{port}")


class MotoS3:
    """moto's S3 in server mode; .endpoint and .options (s3fs storage_options)."""

    def __init__(self):
        from moto.server import ThreadedMotoServer

        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.options = {
            "key": "testing",
            "secret": "testing",
            "client_kwargs": {"endpoint_url": self.endpoint, "region_name": "us-east-1"},
            "skip_instance_cache": True,
        }

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def __enter__(self):
        self._server.start()
        _wait_listening(self.port, what="moto")
        return self

    def __exit__(self, *exc):
        self._server.stop()


NGINX_CONF = """
daemon off;
worker_processes 2;
{user}
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location /forbidden/ {{ return 403; }}
    }}
}}
"""


def nginx_binary():
    return shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)


class Nginx:
    """nginx serving `root` on 127.0.0.1; .url is the base URL."""

    def __init__(self, root: str, prefix: str):
        self.root, self.prefix = os.path.abspath(root), os.path.abspath(prefix)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._process = None

    def __enter__(self):
        binary = nginx_binary()
        if binary is None:
            raise RuntimeError("nginx is not installed")
        os.makedirs(self.prefix, exist_ok=True)
        conf = os.path.join(self.prefix, "nginx.conf")
        # As root, nginx's workers would switch to `nobody`, who cannot read
        # pytest's 0700 temporary directories.
        user = "user root;" if os.geteuid() == 0 else ""
        with open(conf, "w") as f:
            f.write(NGINX_CONF.format(user=user, prefix=self.prefix, port=self.port, root=self.root))
        self._process = subprocess.Popen([binary, "-c", conf, "-p", self.prefix],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            _wait_listening(self.port, self._process, "nginx")
        except RuntimeError as e:
            self.__exit__()
            raise RuntimeError(f"{e}: {self._stderr()}") from None
        return self

    def _stderr(self) -> str:
        try:
            with open(os.path.join(self.prefix, "error.log")) as f:
                return f.read()[-2000:]
        except OSError:
            return ""

    def __exit__(self, *exc):
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()


class FaultServer:
    """HTTP server with per-object misbehaviour.

    objects: path -> bytes.  faults: path -> dict with any of
      drop: n           first n GETs of the path send half the body, then close
      drop_all          every GET is dropped that way
      truncate          every GET announces and sends fewer bytes than asked
      stall             every GET waits on the server's release event first
      ignore_range      answer 200 with the whole object
      status: n         answer every request with HTTP n
      head_status: n    answer HEAD with HTTP n (GET served: a presigned URL)
      redirect: loc     answer every request with 302 to Location `loc`
      ignore_if_match   serve whatever the object is now, If-Match or not
      wrong_range       a 206 of other bytes of the asked length, saying so in Content-Range
      range_total: n    a 206 whose Content-Range claims a total of n bytes
      chunked: how      a 206 sent chunked, no Content-Length; how: "exact",
                        "long" (more bytes than asked) or "short"
      trickle: (s, n)   the first n body bytes one at a time, s seconds apart
      garbage_after     bytes that are no HTTP response follow each body
      garbage           every request is answered with bytes that are no HTTP response
      content_length: v every answer's Content-Length header is v
    requests: list of (method, path, range header) in arrival order;
    headers_seen: list of (method, path, {header: value}) likewise."""

    def __init__(self):
        self.objects = {}
        self.generations = {}
        self.faults = {}
        self.requests = []
        self.headers_seen = []
        self.release = threading.Event()
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def handle(self):
                try:
                    super().handle()
                except ConnectionResetError:   # a client that closed with unread data (a cancelled read)
                    pass

            def do_HEAD(self):
                self._serve(body=False)

            def do_GET(self):
                self._serve(body=True)

            def _serve(self, body):
                try:
                    self._answer(body)
                except OSError:   # the client went away (a cancelled or timed-out read)
                    self.close_connection = True

            def _answer(self, body):
                path = self.path
                with server._lock:
                    server.requests.append((self.command, path, self.headers.get("Range")))
                    server.headers_seen.append((self.command, path, dict(self.headers.items())))
                    data = server.objects.get(path)
                    fault = dict(server.faults.get(path, {}))
                    if body and fault.get("drop"):
                        server.faults[path]["drop"] -= 1
                    etag = server.etag(path)
                if fault.get("garbage"):
                    self.wfile.write(b"NOT HTTP AT ALL\r\n\r\n")
                    self.close_connection = True
                    return
                if "status" in fault:
                    return self._empty(fault["status"])
                if not body and "head_status" in fault:
                    return self._empty(fault["head_status"])
                if "redirect" in fault:
                    return self._empty(302, Location=fault["redirect"])
                if data is None:
                    return self._empty(404)
                match = self.headers.get("If-Match")
                if match is not None and match != etag and not fault.get("ignore_if_match"):
                    return self._empty(412)
                start, end, status = 0, len(data), 200
                ranged = self.headers.get("Range")
                if ranged and not fault.get("ignore_range"):
                    first, _, last = ranged.split("=", 1)[1].partition("-")
                    start, end, status = int(first), min(len(data), int(last) + 1), 206
                    if start >= len(data):
                        return self._empty(416, **{"Content-Range": f"bytes */{len(data)}"})
                    if fault.get("wrong_range"):
                        shift = 1 if end < len(data) else -1
                        start, end = start + shift, end + shift
                payload = data[start:end]
                if body and fault.get("stall"):
                    server.release.wait()
                sent = payload
                if body and fault.get("truncate"):
                    sent = payload[: len(payload) // 2]
                    payload = sent
                chunked = status == 206 and fault.get("chunked")
                if body and chunked == "long":
                    sent = payload + b"extra"
                elif body and chunked == "short":
                    sent = payload[:-1]
                self.send_response(status)
                if chunked:
                    self.send_header("Transfer-Encoding", "chunked")
                else:
                    self.send_header("Content-Length", str(fault.get("content_length", len(payload))))
                self.send_header("ETag", etag)
                self.send_header("Accept-Ranges", "bytes")
                if status == 206:
                    total = fault.get("range_total", len(data))
                    self.send_header("Content-Range", f"bytes {start}-{end - 1}/{total}")
                self.end_headers()
                if not body:
                    return
                if chunked:
                    half = len(sent) // 2
                    for piece in (sent[:half], sent[half:]):
                        if piece:
                            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                    self.wfile.write(b"0\r\n\r\n")
                    return
                if fault.get("drop") or fault.get("drop_all"):
                    self.wfile.write(sent[: len(sent) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if "trickle" in fault:
                    delay, count = fault["trickle"]
                    for i in range(min(count, len(sent))):
                        self.wfile.write(sent[i:i + 1])
                        self.wfile.flush()
                        time.sleep(delay)
                    sent = sent[count:]
                self.wfile.write(sent)
                if fault.get("garbage_after"):
                    self.wfile.write(b"GARBAGE AFTER THE BODY\r\n\r\n")

            def _empty(self, status, **headers):
                self.send_response(status)
                self.send_header("Content-Length", "0")
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"

    def etag(self, path):
        data = self.objects.get(path, b"")
        return '"' + hashlib.sha256(data).hexdigest()[:16] + "-" + str(self.generations.get(path, 0)) + '"'

    def put(self, path, data, **fault):
        with self._lock:
            self.objects[path] = bytes(data)
            self.generations[path] = self.generations.get(path, 0) + 1
            self.faults[path] = fault

    def gets(self, path):
        return [r for r in self.requests if r[0] == "GET" and r[1] == path]

    def __enter__(self):
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.release.set()
        self._server.shutdown()
        self._server.server_close()


class FailingProxy:
    """A TCP proxy on 127.0.0.1 in front of `port` that breaks uploads.

    It forwards until it breaks: when `budget` bytes from clients have gone
    through in all, or when a client sends `pattern` (e.g. the request line of
    the commit, ``POST /bucket/key?uploadId=``); the connection that broke it
    is reset, as is every later one sending `pattern`. Once broken, every connection may carry `after` more bytes from
    its client (None: no limit; small requests such as an abort pass, a part
    does not) and is reset when it carries more; `after=0`: nothing passes."""

    def __init__(self, port: int, budget=None, pattern=None, after=None):
        self.target, self.budget, self.pattern, self.after = port, budget, pattern, after
        self.sent = 0
        self.broken = threading.Event()
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._closed = False

    @staticmethod
    def _reset(*socks) -> None:
        for sock in socks:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()
            except OSError:
                pass

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.broken.is_set() and self.after == 0:
                self._reset(client)
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                self._reset(client)
                continue
            threading.Thread(target=self._upload, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._download, args=(upstream, client), daemon=True).start()

    def _over(self, data: bytes, tail: bytes, carried: int) -> bool:
        """Whether this piece breaks the connection (and the proxy)."""
        hit = self.pattern is not None and self.pattern in tail + data
        with self._lock:
            if self.broken.is_set():
                return hit or (self.after is not None and carried > self.after)
            self.sent += len(data)
            if hit or (self.budget is not None and self.sent > self.budget):
                self.broken.set()
                return True
            return False

    def _upload(self, client, upstream) -> None:
        carried, tail, broken_seen = 0, b"", False
        while True:
            try:
                data = client.recv(65536)
            except OSError:
                data = b""
            if not data:
                break
            if self.broken.is_set() and not broken_seen:
                broken_seen, carried = True, 0   # `after` counts from the break
            carried += len(data)
            if self._over(data, tail, carried):
                break
            tail = data[-256:]
            try:
                upstream.sendall(data)
            except OSError:
                break
        self._reset(client, upstream)

    def _download(self, upstream, client) -> None:
        while True:
            try:
                data = upstream.recv(65536)
                if not data:
                    break
                client.sendall(data)
            except OSError:
                break
        self._reset(client, upstream)

    def __enter__(self):
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self._closed = True
        try:
            self._listener.shutdown(socket.SHUT_RDWR)   # wakes accept()
        except OSError:
            pass
        self._listener.close()


@pytest.fixture(scope="module")
def faults():
    with FaultServer() as server:
        yield server


@pytest.fixture(scope="module")
def s3():
    pytest.importorskip("s3fs")
    pytest.importorskip("moto.server")
    pytest.importorskip("flask")
    with MotoS3() as server:
        server.client().create_bucket(Bucket="models")
        yield server


def assert_same(got, want):
    """Two dicts of torch tensors: the same names, dtypes, shapes and values."""
    import torch

    assert sorted(got) == sorted(want)
    for name in want:
        assert got[name].dtype == want[name].dtype, name
        assert got[name].shape == want[name].shape, name
        assert torch.equal(got[name], want[name]), name
