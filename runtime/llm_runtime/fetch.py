"""`llm-fetch SOURCE DEST`: download a model into DEST, the model pod's fetch init container.

SOURCE is `spec.model.uri` as the operator renders it:

* ``hf://ORG/REPO[:REVISION]``: ``huggingface_hub.snapshot_download`` (every file of the repository at that
  revision). Reads ``HF_ENDPOINT`` and ``HF_TOKEN`` (or the older ``HUGGING_FACE_HUB_TOKEN``).
* ``s3://BUCKET/PREFIX``: every object under ``PREFIX/`` (ListObjectsV2, paginated), AWS Signature Version 4
  signed with the standard library. Reads ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
  ``AWS_SESSION_TOKEN`` (anonymous requests when no key is set), ``AWS_REGION`` / ``AWS_DEFAULT_REGION``
  (default ``us-east-1``) and ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` (S3-compatible stores; path-style
  addressing when one is set), the way boto3 reads them.
* ``gs://BUCKET/PREFIX``: every object under ``PREFIX/`` through the GCS JSON API. Anonymous, or with the
  OAuth2 access token in ``GCS_OAUTH_TOKEN``; ``STORAGE_EMULATOR_HOST`` overrides the endpoint as in Google's
  client libraries.

DEST is owned by the tool (the pod's emptyDir). Files are downloaded into ``DEST/.partial``, sizes (and MD5
where the store reports a plain one) are checked, then everything is moved into DEST and the marker
``DEST/.llm-fetch.json`` (holding the source) is written last. A DEST whose marker names the same source is
left alone, so a restarted init container costs one stat; an interrupted fetch (``.partial`` present) starts
over. Object keys containing ``..``, empty segments or absolute paths are refused: nothing is written outside
DEST. Server errors (5xx, 429) and transport errors are retried with exponential backoff
(``LLM_FETCH_RETRIES`` attempts, default 5). Any failure ends with exit status 1 and one line on stderr that
names the source and the fix, which the container's termination message (FallbackToLogsOnError) carries to
the LLMDeployment's ModelFetchFailed condition.

Only the standard library (plus ``huggingface_hub``, which ``transformers`` already installs, for hf://).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import hashlib
import hmac
import http.client
import json
import os
import random
import shutil
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

MARKER = ".llm-fetch.json"
PARTIAL = ".partial"
CHUNK = 1 << 20
TIMEOUT = 60.0
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()

T = TypeVar("T")


class FetchError(Exception):
    """A failure the user can act on: the message is the single stderr line."""


class Retryable(Exception):
    """A transient failure (5xx, 429, reset connection, short read): tried again with backoff."""


@dataclass(frozen=True)
class RemoteObject:
    key: str  # the store's name for it
    rel: str  # path relative to DEST
    size: int
    md5: str | None  # hex digest when the store gives a plain MD5


# ----------------------------------------------------------------------------------------------- helpers


def _env(*names: str, default: str = "") -> str:
    for name in names:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return default


def _retries() -> int:
    try:
        return max(1, int(_env("LLM_FETCH_RETRIES", default="5")))
    except ValueError:
        return 5


def _backoff_base() -> float:
    try:
        return max(0.0, float(_env("LLM_FETCH_BACKOFF_SECONDS", default="1")))
    except ValueError:
        return 1.0


def with_retries(what: str, fn: Callable[[], T]) -> T:
    """Run ``fn``; on :class:`Retryable` wait 1, 2, 4, ... s (capped at 30 s, with jitter) and try again."""
    attempts = _retries()
    base = _backoff_base()
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except Retryable as exc:
            if attempt == attempts:
                raise FetchError(f"{what}: {exc}; gave up after {attempts} attempts") from exc
            delay = min(30.0, base * 2 ** (attempt - 1)) * (0.5 + random.random() / 2)
            print(f"llm-fetch: {what}: {exc}; retrying in {delay:.1f}s ({attempt}/{attempts})", file=sys.stderr)
            time.sleep(delay)
    raise AssertionError("unreachable")


def safe_relative(rel: str, *, source: str) -> str:
    """``rel`` as a path inside DEST, or FetchError: no absolute path, no ``..``, no empty segment, and not one
    of the tool's own names."""
    if not rel or rel.startswith("/") or "\\" in rel or "\x00" in rel:
        raise FetchError(f"{source}: refusing object {rel!r}: not a relative path inside the model directory")
    parts = rel.split("/")
    if any(p in ("", ".", "..") for p in parts) or parts[0] in (MARKER, PARTIAL):
        raise FetchError(
            f"{source}: refusing object {rel!r}: its key contains '..', '.', an empty segment or a reserved "
            "name, which could write outside the model directory; rename the object in the store"
        )
    return str(PurePosixPath(*parts))


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # A signed S3 request cannot be replayed elsewhere, and a region redirect must become a clear error.
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect())


class Response:
    """An open HTTP response (status 2xx) or the error's status, headers and (bounded) body."""

    def __init__(self, status: int, headers: Any, body: bytes = b"", stream: Any = None) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.stream = stream


def http_request(url: str, headers: dict[str, str], *, what: str) -> Response:
    """GET ``url``. 2xx: the response with its stream open. 5xx/429 and transport errors: Retryable. Other
    statuses: a Response with the body read, for the caller to explain."""
    req = urllib.request.Request(url, headers=headers, method="GET")
    try:
        resp = _OPENER.open(req, timeout=TIMEOUT)
    except urllib.error.HTTPError as exc:
        body = exc.read(65536) if exc.fp is not None else b""
        if exc.code >= 500 or exc.code == 429:
            raise Retryable(f"HTTP {exc.code} from {_origin(url)}") from exc
        return Response(exc.code, exc.headers, body)
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise Retryable(f"cannot reach {_origin(url)} ({reason})") from exc
    return Response(resp.status, resp.headers, stream=resp)


def _origin(url: str) -> str:
    p = urllib.parse.urlsplit(url)
    return f"{p.scheme}://{p.netloc}"


def download_to(resp: Response, path: Path, obj: RemoteObject, *, source: str) -> None:
    """Stream an open response into ``path``; check the size and MD5. Short or corrupt: Retryable."""
    path.parent.mkdir(parents=True, exist_ok=True)
    md5 = hashlib.md5(usedforsecurity=False)
    got = 0
    try:
        with resp.stream, open(path, "wb") as out:
            while True:
                chunk = resp.stream.read(CHUNK)
                if not chunk:
                    break
                out.write(chunk)
                md5.update(chunk)
                got += len(chunk)
    except (http.client.HTTPException, OSError) as exc:
        raise Retryable(f"download of {obj.key!r} broke off after {got} bytes ({exc})") from exc
    if got != obj.size:
        raise Retryable(f"{obj.key!r}: got {got} bytes, the listing says {obj.size}")
    if obj.md5 is not None and md5.hexdigest() != obj.md5:
        raise Retryable(f"{obj.key!r}: MD5 {md5.hexdigest()} does not match the store's {obj.md5}")


def _split_bucket(source: str, scheme: str) -> tuple[str, str]:
    rest = source[len(scheme) + 3 :]
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise FetchError(f"{source}: no bucket: spec.model.uri must be {scheme}://<bucket>/<prefix>")
    return bucket, prefix.strip("/")


def _dir_prefix(prefix: str) -> str:
    return f"{prefix}/" if prefix else ""


# -------------------------------------------------------------------------------------------------- S3


def _sign(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def _uri_encode(text: str, *, slash: bool) -> str:
    return urllib.parse.quote(text, safe="-_.~" + ("/" if not slash else ""))


def sigv4_headers(
    *,
    method: str,
    url: str,
    region: str,
    access_key: str,
    secret_key: str,
    session_token: str = "",
    service: str = "s3",
    now: dt.datetime | None = None,
) -> dict[str, str]:
    """The headers of an AWS Signature Version 4 signed request with an empty body (the AWS documentation's
    "Create a signed AWS API request"). ``url`` must already be in canonical form (path URI-encoded)."""
    now = now or dt.datetime.now(dt.UTC)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    date = amz_date[:8]
    parts = urllib.parse.urlsplit(url)
    host = parts.netloc
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    canonical_query = "&".join(
        f"{_uri_encode(k, slash=True)}={_uri_encode(v, slash=True)}" for k, v in sorted(query)
    )
    headers = {"host": host, "x-amz-content-sha256": EMPTY_SHA256, "x-amz-date": amz_date}
    if session_token:
        headers["x-amz-security-token"] = session_token
    signed = ";".join(sorted(headers))
    canonical_headers = "".join(f"{k}:{headers[k].strip()}\n" for k in sorted(headers))
    canonical_request = "\n".join(
        [method, parts.path or "/", canonical_query, canonical_headers, signed, EMPTY_SHA256]
    )
    scope = f"{date}/{region}/{service}/aws4_request"
    string_to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical_request.encode()).hexdigest()]
    )
    key = _sign(_sign(_sign(_sign(f"AWS4{secret_key}".encode(), date), region), service), "aws4_request")
    signature = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    out = {k: v for k, v in headers.items() if k != "host"}
    out["Authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={signed}, Signature={signature}"
    )
    return out


class S3:
    def __init__(self, source: str) -> None:
        self.source = source
        self.bucket, self.prefix = _split_bucket(source, "s3")
        self.region = _env("AWS_REGION", "AWS_DEFAULT_REGION", default="us-east-1")
        self.access_key = _env("AWS_ACCESS_KEY_ID")
        self.secret_key = _env("AWS_SECRET_ACCESS_KEY")
        self.session_token = _env("AWS_SESSION_TOKEN")
        if bool(self.access_key) != bool(self.secret_key):
            raise FetchError(
                f"{source}: only one of AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY is set; put both in the "
                "Secret named by spec.model.secretRef (or neither, for a public bucket)"
            )
        endpoint = _env("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL").rstrip("/")
        if endpoint:
            if "://" not in endpoint:
                raise FetchError(f"{source}: AWS_ENDPOINT_URL {endpoint!r} needs a scheme, e.g. https://{endpoint}")
            self.base = f"{endpoint}/{_uri_encode(self.bucket, slash=True)}"  # path-style
        elif "." in self.bucket:
            self.base = f"https://s3.{self.region}.amazonaws.com/{self.bucket}"
        else:
            self.base = f"https://{self.bucket}.s3.{self.region}.amazonaws.com"

    def _get(self, path: str, query: dict[str, str], *, what: str) -> Response:
        url = self.base + (_uri_encode(path, slash=False) if path else "/")
        if query:
            url += "?" + "&".join(
                f"{_uri_encode(k, slash=True)}={_uri_encode(v, slash=True)}" for k, v in sorted(query.items())
            )
        headers: dict[str, str] = {}
        if self.access_key:
            headers = sigv4_headers(
                method="GET",
                url=url,
                region=self.region,
                access_key=self.access_key,
                secret_key=self.secret_key,
                session_token=self.session_token,
            )
        resp = http_request(url, headers, what=what)
        if resp.status >= 300:
            raise FetchError(self._explain(resp, what))
        return resp

    def _explain(self, resp: Response, what: str) -> str:
        code = message = ""
        try:
            root = ET.fromstring(resp.body)
            code = root.findtext("Code") or ""
            message = root.findtext("Message") or ""
        except ET.ParseError:
            pass
        detail = f"HTTP {resp.status}{' ' + code if code else ''}"
        creds = (
            "check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN) in the Secret named by "
            "spec.model.secretRef, and that they may s3:ListBucket and s3:GetObject on this bucket"
            if self.access_key
            else "the request was anonymous: put AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in a Secret and "
            "name it in spec.model.secretRef"
        )
        if code == "NoSuchBucket" or (resp.status == 404 and not code):
            return f"{self.source}: bucket {self.bucket!r} does not exist ({detail}); check spec.model.uri"
        if resp.status in (301, 307) or code in ("PermanentRedirect", "AuthorizationHeaderMalformed"):
            region = resp.headers.get("x-amz-bucket-region") if resp.headers is not None else None
            hint = f"the bucket is in {region}: " if region else ""
            return (
                f"{self.source}: wrong region {self.region!r} ({detail}); {hint}set AWS_REGION in the Secret "
                "named by spec.model.secretRef to the bucket's region"
            )
        if resp.status == 404:
            return f"{self.source}: {what}: not found ({detail}{': ' + message if message else ''})"
        if resp.status in (401, 403):
            return f"{self.source}: access denied ({detail}); {creds}"
        return f"{self.source}: {what} failed ({detail}{': ' + message if message else ''})"

    def list(self) -> list[RemoteObject]:
        prefix = _dir_prefix(self.prefix)
        objects: list[RemoteObject] = []
        token = ""
        while True:
            query = {"list-type": "2", "prefix": prefix}
            if token:
                query["continuation-token"] = token

            def page(query: dict[str, str] = query) -> bytes:
                resp = self._get("", query, what="listing the objects")
                try:
                    return bytes(resp.stream.read())
                except (http.client.HTTPException, OSError) as exc:
                    raise Retryable(f"listing broke off ({exc})") from exc
                finally:
                    resp.stream.close()

            body = with_retries(f"{self.source}: listing", page)
            root = ET.fromstring(body)
            ns = root.tag[: root.tag.index("}") + 1] if root.tag.startswith("{") else ""
            for item in root.iter(f"{ns}Contents"):
                key = item.findtext(f"{ns}Key") or ""
                size = int(item.findtext(f"{ns}Size") or "0")
                if key.endswith("/") and size == 0:
                    continue  # a "folder" placeholder object
                etag = (item.findtext(f"{ns}ETag") or "").strip('"').lower()
                md5 = etag if len(etag) == 32 and all(c in "0123456789abcdef" for c in etag) else None
                rel = safe_relative(key[len(prefix) :], source=self.source)
                objects.append(RemoteObject(key=key, rel=rel, size=size, md5=md5))
            if (root.findtext(f"{ns}IsTruncated") or "false").lower() != "true":
                break
            token = root.findtext(f"{ns}NextContinuationToken") or ""
            if not token:
                break
        return objects

    def fetch(self, obj: RemoteObject, path: Path) -> None:
        def once() -> None:
            download_to(self._get("/" + obj.key, {}, what=f"downloading {obj.key!r}"), path, obj, source=self.source)

        with_retries(f"{self.source}: {obj.key}", once)


# ------------------------------------------------------------------------------------------------- GCS


class GCS:
    def __init__(self, source: str) -> None:
        self.source = source
        self.bucket, self.prefix = _split_bucket(source, "gs")
        host = _env("STORAGE_EMULATOR_HOST").rstrip("/")
        if host and "://" not in host:
            host = f"http://{host}"
        self.endpoint = host or "https://storage.googleapis.com"
        self.token = _env("GCS_OAUTH_TOKEN")

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def _explain(self, resp: Response, what: str) -> str:
        message = ""
        with contextlib.suppress(ValueError, AttributeError):
            message = str(json.loads(resp.body).get("error", {}).get("message", ""))
        detail = f"HTTP {resp.status}{': ' + message if message else ''}"
        if resp.status == 404:
            return f"{self.source}: bucket {self.bucket!r} or object not found ({detail}); check spec.model.uri"
        if resp.status in (401, 403):
            fix = (
                "check GCS_OAUTH_TOKEN in the Secret named by spec.model.secretRef (a current OAuth2 access token "
                "with storage.objects.list and storage.objects.get)"
                if self.token
                else "the request was anonymous: put an OAuth2 access token as GCS_OAUTH_TOKEN in a Secret and "
                "name it in spec.model.secretRef"
            )
            return f"{self.source}: access denied ({detail}); {fix}"
        return f"{self.source}: {what} failed ({detail})"

    def _get(self, url: str, *, what: str) -> Response:
        resp = http_request(url, self._headers(), what=what)
        if resp.status >= 300:
            raise FetchError(self._explain(resp, what))
        return resp

    def list(self) -> list[RemoteObject]:
        prefix = _dir_prefix(self.prefix)
        objects: list[RemoteObject] = []
        token = ""
        base = f"{self.endpoint}/storage/v1/b/{urllib.parse.quote(self.bucket, safe='')}/o"
        while True:
            query = {"prefix": prefix, "fields": "items(name,size,md5Hash),nextPageToken"}
            if token:
                query["pageToken"] = token
            url = f"{base}?{urllib.parse.urlencode(query)}"

            def page(url: str = url) -> Any:
                resp = self._get(url, what="listing the objects")
                try:
                    return json.loads(resp.stream.read())
                except (http.client.HTTPException, OSError) as exc:
                    raise Retryable(f"listing broke off ({exc})") from exc
                finally:
                    resp.stream.close()

            data = with_retries(f"{self.source}: listing", page)
            for item in data.get("items", []):
                name = str(item["name"])
                size = int(item.get("size", 0))
                if name.endswith("/") and size == 0:
                    continue
                md5 = base64.b64decode(item["md5Hash"]).hex() if item.get("md5Hash") else None
                rel = safe_relative(name[len(prefix) :], source=self.source)
                objects.append(RemoteObject(key=name, rel=rel, size=size, md5=md5))
            token = str(data.get("nextPageToken") or "")
            if not token:
                break
        return objects

    def fetch(self, obj: RemoteObject, path: Path) -> None:
        url = (
            f"{self.endpoint}/storage/v1/b/{urllib.parse.quote(self.bucket, safe='')}/o/"
            f"{urllib.parse.quote(obj.key, safe='')}?alt=media"
        )

        def once() -> None:
            download_to(self._get(url, what=f"downloading {obj.key!r}"), path, obj, source=self.source)

        with_retries(f"{self.source}: {obj.key}", once)


def fetch_objects(store: S3 | GCS, partial: Path) -> tuple[int, int]:
    objects = store.list()
    if not objects:
        scheme = "s3" if isinstance(store, S3) else "gs"
        where = f"{scheme}://{store.bucket}/{_dir_prefix(store.prefix)}"
        raise FetchError(f"no objects under {where}: check the bucket and prefix in spec.model.uri")
    seen: set[str] = set()
    for obj in objects:
        if obj.rel in seen:
            raise FetchError(f"{store.source}: two objects map to {obj.rel!r}")
        seen.add(obj.rel)
    for obj in objects:
        store.fetch(obj, partial / obj.rel)
    return len(objects), sum(o.size for o in objects)


# ------------------------------------------------------------------------------------------ Hugging Face


def parse_hf(source: str) -> tuple[str, str | None]:
    rest = source[len("hf://") :].strip("/")
    repo, _, revision = rest.partition(":")
    if not repo or repo.count("/") > 1 or any(not p for p in repo.split("/")):
        raise FetchError(f"{source}: spec.model.uri must be hf://<org>/<repo> (revision in spec.model.revision)")
    return repo, revision or None


def fetch_hf(source: str, partial: Path) -> tuple[int, int]:
    repo, revision = parse_hf(source)
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HOME", str(partial.parent / ".hf-home"))
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    token = _env("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN") or None
    endpoint = _env("HF_ENDPOINT") or None
    rev = revision or "main"

    def http_error(exc: HfHubHTTPError) -> Exception:
        status = exc.response.status_code if exc.response is not None else 0
        if status >= 500 or status == 429:
            return Retryable(f"HTTP {status} from the Hub")
        if status in (401, 403):
            return FetchError(
                f"{source}: access denied (HTTP {status}); check HF_TOKEN in the Secret named by spec.model.secretRef"
            )
        return FetchError(f"{source}: {str(exc).splitlines()[0]}")

    def once() -> None:
        try:
            snapshot_download(repo, revision=revision, local_dir=partial, token=token, endpoint=endpoint)
        except GatedRepoError as exc:
            raise FetchError(
                f"{source}: the repository is gated: accept its terms on the Hub with the account whose HF_TOKEN "
                "is in the Secret named by spec.model.secretRef"
            ) from exc
        except RevisionNotFoundError as exc:
            raise FetchError(f"{source}: revision {rev!r} not found; check spec.model.revision") from exc
        except RepositoryNotFoundError as exc:
            raise FetchError(
                f"{source}: repository {repo!r} not found or private; check spec.model.uri, or put HF_TOKEN in "
                "the Secret named by spec.model.secretRef"
            ) from exc
        except HfHubHTTPError as exc:
            raise http_error(exc) from exc
        except LocalEntryNotFoundError as exc:
            # snapshot_download turns an HTTP error of its listing into "not in the local cache either".
            if isinstance(exc.__cause__, HfHubHTTPError):
                raise http_error(exc.__cause__) from exc
            raise Retryable(f"cannot reach {endpoint or 'https://huggingface.co'}") from exc
        except OSError as exc:
            raise Retryable(f"transport error ({exc})") from exc
        except ValueError as exc:
            # huggingface_hub refuses a file name with '..' or an absolute path before writing it.
            raise FetchError(f"{source}: refusing the repository: {str(exc).splitlines()[0]}") from exc
        except Exception as exc:
            # httpx errors (connection reset, timeouts) do not derive from OSError.
            if type(exc).__module__.startswith(("httpx", "httpcore")):
                raise Retryable(f"transport error ({type(exc).__name__}: {exc})") from exc
            raise

    with_retries(source, once)
    shutil.rmtree(partial / ".cache", ignore_errors=True)  # huggingface_hub's local_dir metadata
    files = [p for p in partial.rglob("*") if p.is_file()]
    if not files:
        raise FetchError(f"{source}: the repository has no files at revision {rev!r}")
    return len(files), sum(p.stat().st_size for p in files)


# ----------------------------------------------------------------------------------------------- driver


def _read_marker(dest: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((dest / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _clear(dest: Path) -> None:
    for entry in dest.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _entries(path: Path) -> Iterator[Path]:
    return (p for p in sorted(path.iterdir()) if p.name != MARKER)


def fetch(source: str, dest: Path) -> str:
    """Fetch ``source`` into ``dest``; return a one-line summary. Raises FetchError."""
    scheme = source.split("://", 1)[0] if "://" in source else ""
    if scheme not in ("hf", "s3", "gs"):
        raise FetchError(
            f"{source}: llm-fetch downloads hf://, s3:// and gs:// URIs (oci:// and pvc:// are mounted, not fetched)"
        )
    dest.mkdir(parents=True, exist_ok=True)
    marker = _read_marker(dest)
    if marker is not None and marker.get("source") == source:
        shutil.rmtree(dest / PARTIAL, ignore_errors=True)
        return f"{source} already in {dest} ({marker.get('files')} files, {marker.get('bytes')} bytes): nothing to do"
    leftovers = [p for p in dest.iterdir() if p.name not in (PARTIAL, MARKER, ".hf-home")]
    if leftovers and marker is None and not (dest / PARTIAL).exists():
        raise FetchError(
            f"{source}: {dest} is not empty and holds no earlier llm-fetch download ({leftovers[0].name}, ...); "
            "give llm-fetch an empty folder"
        )
    # An interrupted fetch (.partial present) or another source's files: start over.
    _clear(dest)
    partial = dest / PARTIAL
    partial.mkdir()
    started = time.monotonic()
    if scheme == "hf":
        files, size = fetch_hf(source, partial)
    else:
        files, size = fetch_objects(S3(source) if scheme == "s3" else GCS(source), partial)
    seconds = round(time.monotonic() - started, 3)
    record = {"source": source, "files": files, "bytes": size, "seconds": seconds}
    (partial / MARKER).write_text(json.dumps(record) + "\n")
    # Move everything, the marker last: a crash before it leaves .partial behind, so the next run starts over.
    for entry in _entries(partial):
        os.replace(entry, dest / entry.name)
    os.replace(partial / MARKER, dest / MARKER)
    partial.rmdir()
    shutil.rmtree(dest / ".hf-home", ignore_errors=True)
    return f"fetched {source} into {dest}: {files} files, {size} bytes in {seconds}s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="llm-fetch",
        description="Download a model (hf://, s3://, gs://) into DEST, atomically and idempotently.",
    )
    parser.add_argument("source", help="hf://ORG/REPO[:REVISION], s3://BUCKET/PREFIX or gs://BUCKET/PREFIX")
    parser.add_argument("dest", help="the model folder (the pod's model volume)")
    args = parser.parse_args(argv)
    try:
        print(f"llm-fetch: {fetch(args.source, Path(args.dest))}", flush=True)
    except FetchError as exc:
        print(f"llm-fetch: {exc}", file=sys.stderr, flush=True)
        return 1
    except OSError as exc:
        print(f"llm-fetch: {args.source}: cannot write into {args.dest}: {exc}", file=sys.stderr, flush=True)
        return 1
    except Exception as exc:  # still one line for the termination message, with the traceback before it
        import traceback

        traceback.print_exc()
        print(f"llm-fetch: {args.source}: unexpected {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
