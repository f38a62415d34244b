"""Servers for the `llm-fetch` tests, all on 127.0.0.1: moto's S3 server (real S3 protocol, SigV4 verified by
botocore's signer), a fault-injecting proxy in front of it, and protocol stand-ins for the Hugging Face Hub and
the GCS JSON API (no model store can be reached from here). Shared by tests/runtime/test_model_fetch.py and
images/test_fetch_image.py.

moto lives in its own folder, `.venv/moto` (`make install`): botocore pins python-dateutil<3 while
kubernetes>=37 needs >=3, so moto cannot be installed into the project's venv.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import http.server
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

MOTO_DIR = Path(sys.prefix) / "moto"
ACCESS_KEY_USER = "model-reader"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_model(root: Path) -> dict[str, bytes]:
    """A tiny model folder: a few files, one nested, one binary of 300 KB. Returns {relative path: bytes}."""
    rng = random.Random(12)
    files = {
        "config.json": json.dumps({"model_type": "llama", "hidden_size": 16}).encode(),
        "model.safetensors": bytes(rng.getrandbits(8) for _ in range(300_000)),
        "tokenizer/tokenizer.json": json.dumps({"version": "1.0", "vocab": list("abc")}).encode(),
        "tokenizer/special tokens+map.json": b'{"eos_token": "</s>"}',
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


def tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != ".llm-fetch.json"
    }


# ------------------------------------------------------------------------------------------------- moto

# Run with moto's boto3 (PYTHONPATH=.venv/moto): an IAM user whose key may read S3, the buckets and objects.
_SETUP = r"""
import json, sys
from pathlib import Path
import boto3
endpoint, model_dir = sys.argv[1], Path(sys.argv[2])
s = boto3.Session(aws_access_key_id="setup", aws_secret_access_key="setup", region_name="us-east-1")
iam = s.client("iam", endpoint_url=endpoint)
iam.create_user(UserName="model-reader")
iam.put_user_policy(UserName="model-reader", PolicyName="read", PolicyDocument=json.dumps({
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetObject"], "Resource": "*"}]}))
key = iam.create_access_key(UserName="model-reader")["AccessKey"]
s3 = s.client("s3", endpoint_url=endpoint)
s3.create_bucket(Bucket="models")
for p in sorted(model_dir.rglob("*")):
    if p.is_file():
        s3.put_object(Bucket="models", Key="tiny/" + p.relative_to(model_dir).as_posix(), Body=p.read_bytes())
s3.put_object(Bucket="models", Key="tiny-other/config.json", Body=b"{}")  # same prefix, other folder
s3.put_object(Bucket="models", Key="tiny/", Body=b"")  # a console "folder" placeholder
s3.create_bucket(Bucket="evil")
s3.put_object(Bucket="evil", Key="m/config.json", Body=b"{}")
s3.put_object(Bucket="evil", Key="m/../escape.txt", Body=b"outside")
print(json.dumps({"access_key": key["AccessKeyId"], "secret_key": key["SecretAccessKey"]}))
"""


@dataclass
class Moto:
    endpoint: str
    access_key: str
    secret_key: str
    files: dict[str, bytes]
    process: subprocess.Popen[bytes] = field(repr=False)


@contextmanager
def moto_server(workdir: Path) -> Iterator[Moto]:
    """moto's S3 server on 127.0.0.1 with IAM auth on: every request after the setup must carry a valid SigV4
    signature of a known access key whose policy allows the action."""
    if not (MOTO_DIR / "moto").is_dir():
        raise RuntimeError(f"moto is not installed in {MOTO_DIR}: run `make install` (it installs it there)")
    env = {**os.environ, "PYTHONPATH": str(MOTO_DIR), "AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""}
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log = open(workdir / "moto.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=workdir,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2).read()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto did not start: {(workdir / 'moto.log').read_text()[-2000:]}") from None
                time.sleep(0.2)
        model = workdir / "model-src"
        files = make_model(model)
        out = subprocess.run(
            [sys.executable, "-c", _SETUP, endpoint, str(model)],
            env=env, capture_output=True, text=True, check=True, timeout=120,
        )
        keys = json.loads(out.stdout.strip().splitlines()[-1])
        # From now on every request is authenticated and authorized (moto's INITIAL_NO_AUTH_ACTION_COUNT = 0).
        req = urllib.request.Request(f"{endpoint}/moto-api/reset-auth", data=b"0", method="POST",
                                     headers={"Content-Type": "text/plain"})
        urllib.request.urlopen(req, timeout=10).read()
        yield Moto(endpoint, keys["access_key"], keys["secret_key"], files, proc)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def reply(handler: http.server.BaseHTTPRequestHandler, status: int, body: bytes = b"",
          headers: Iterable[tuple[str, str]] = (), *, head: bool = False) -> None:
    handler.send_response(status)
    for k, v in headers:
        handler.send_header(k, v)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    if not head:
        handler.wfile.write(body)


class _Quiet(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


class _Served:
    """A threaded HTTP server on 127.0.0.1 (an ephemeral port) for one handler class, stopped by close()."""

    def _serve(self, handler: type[http.server.BaseHTTPRequestHandler]) -> None:
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class FaultProxy(_Served):
    """A forwarding proxy on 127.0.0.1 that answers the first `fail` requests with HTTP 500 and passes the rest,
    Host header and all (so SigV4 signatures stay valid), to `upstream`."""

    def __init__(self, upstream: str, fail: int) -> None:
        self.upstream = urllib.parse.urlsplit(upstream)
        self.fail = fail
        self.seen: list[tuple[int, str]] = []
        proxy = self

        class Handler(_Quiet):
            def do_GET(self) -> None:
                if proxy.fail > 0:
                    proxy.fail -= 1
                    proxy.seen.append((500, self.path))
                    return reply(self, 500)
                upstream = proxy.upstream
                conn = http.client.HTTPConnection(upstream.hostname or "127.0.0.1", upstream.port, timeout=30)
                conn.request("GET", self.path, headers=dict(self.headers.items()))
                resp = conn.getresponse()
                body = resp.read()
                conn.close()
                proxy.seen.append((resp.status, self.path))
                hop = ("content-length", "transfer-encoding", "connection", "server", "date")
                reply(self, resp.status, body, [(k, v) for k, v in resp.getheaders() if k.lower() not in hop])

        self._serve(Handler)


# ----------------------------------------------------------------------------------- Hub and GCS stand-ins


class StandIn(_Served):
    """A threaded HTTP server on 127.0.0.1 serving `files` the way the Hugging Face Hub (hf) or the GCS JSON API
    (gs) does, for the calls llm-fetch makes. `fail` answers the first N requests with 500; `token`, when set,
    is the bearer token every request must carry (401/403 otherwise)."""

    COMMIT = "0123456789abcdef0123456789abcdef01234567"

    def __init__(self, kind: str, files: dict[str, bytes], *, repo: str = "llmops/tiny", bucket: str = "models",
                 prefix: str = "tiny", token: str = "", fail: int = 0) -> None:
        self.kind, self.files, self.repo, self.bucket, self.prefix = kind, files, repo, bucket, prefix
        self.token, self.fail = token, fail
        self.requests: list[str] = []
        stand_in = self

        class Handler(_Quiet):
            def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
                      *, head: bool = False) -> None:
                reply(self, status, body, (headers or {}).items(), head=head)

            def _handle(self, head: bool) -> None:
                stand_in.requests.append(f"{self.command} {self.path}")
                if stand_in.fail > 0:
                    stand_in.fail -= 1
                    return self._send(500, b'{"error": "injected"}', head=head)
                if stand_in.token:
                    auth = self.headers.get("Authorization", "")
                    if not auth:
                        return self._send(401, b'{"error": {"message": "Anonymous caller"}}', head=head)
                    if auth != f"Bearer {stand_in.token}":
                        return self._send(403, b'{"error": {"message": "Forbidden"}}', head=head)
                status, body, headers = (stand_in._hf if stand_in.kind == "hf" else stand_in._gcs)(self.path)
                self._send(status, body, headers, head=head)

            def do_GET(self) -> None:
                self._handle(head=False)

            def do_HEAD(self) -> None:
                self._handle(head=True)

        self._serve(Handler)

    # The Hub: repo_info (/api/models/{repo}/revision/{rev}), the recursive tree listing
    # (/api/models/{repo}/tree/{commit}) and /{repo}/resolve/{commit}/{file} (HEAD for the metadata, GET for
    # the bytes), with the headers huggingface_hub reads: X-Repo-Commit, ETag, Content-Length.
    def _hf(self, raw: str) -> tuple[int, bytes, dict[str, str]]:
        path = urllib.parse.unquote(urllib.parse.urlsplit(raw).path)
        not_found = (404, b'{"error": "Repository not found"}',
                     {"X-Error-Code": "RepoNotFound", "Content-Type": "application/json"})
        api = f"/api/models/{self.repo}/"
        if path.startswith(api + "revision/"):
            rev = path[len(api + "revision/"):]
            if rev not in ("main", self.COMMIT):
                return 404, b'{"error": "Invalid rev id"}', {"X-Error-Code": "RevisionNotFound"}
            body = {"id": self.repo, "sha": self.COMMIT, "siblings": [{"rfilename": f} for f in self.files]}
            return 200, json.dumps(body).encode(), {"Content-Type": "application/json"}
        if path.startswith(api + "tree/"):
            entries = [{"type": "file", "path": f, "size": len(d), "oid": hashlib.sha1(d).hexdigest()}
                       for f, d in self.files.items()]
            return 200, json.dumps(entries).encode(), {"Content-Type": "application/json"}
        resolve = f"/{self.repo}/resolve/"
        if path.startswith(resolve):
            rev, _, name = path[len(resolve):].partition("/")
            if name not in self.files:
                return 404, b"Entry not found", {"X-Error-Code": "EntryNotFound"}
            data = self.files[name]
            return 200, data, {"X-Repo-Commit": self.COMMIT, "ETag": f'"{hashlib.sha1(data).hexdigest()}"',
                               "Content-Type": "application/octet-stream"}
        return not_found

    # GCS: GET /storage/v1/b/{bucket}/o?prefix=&pageToken= (one object per page, to exercise paging) and
    # GET /storage/v1/b/{bucket}/o/{object}?alt=media.
    def _gcs(self, raw: str) -> tuple[int, bytes, dict[str, str]]:
        parts = urllib.parse.urlsplit(raw)
        query = dict(urllib.parse.parse_qsl(parts.query))
        base = f"/storage/v1/b/{self.bucket}/o"
        objects = {f"{self.prefix}/{k}": v for k, v in self.files.items()}
        if not parts.path.startswith(base):
            return 404, b'{"error": {"code": 404, "message": "The specified bucket does not exist."}}', {}
        if parts.path == base:
            names = sorted(n for n in objects if n.startswith(query.get("prefix", "")))
            start = int(query.get("pageToken") or 0)
            page: dict[str, object] = {"kind": "storage#objects"}
            if names[start:start + 1]:
                name = names[start]
                md5 = base64.b64encode(hashlib.md5(objects[name]).digest()).decode()
                page["items"] = [{"name": name, "size": str(len(objects[name])), "md5Hash": md5}]
            if start + 1 < len(names):
                page["nextPageToken"] = str(start + 1)
            return 200, json.dumps(page).encode(), {"Content-Type": "application/json"}
        name = urllib.parse.unquote(parts.path[len(base) + 1:])
        if query.get("alt") != "media" or name not in objects:
            return 404, b'{"error": {"code": 404, "message": "No such object"}}', {}
        return 200, objects[name], {"Content-Type": "application/octet-stream"}
