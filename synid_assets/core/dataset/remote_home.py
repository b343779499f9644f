"""An object-store SYNID_HOME (`s3://bucket/prefix`): a local working mirror, pulled from and pushed to S3.

Every module reads and writes files under a DatasetLayout; with an s3:// home that layout is a local mirror
($SYNID_CACHE, default ~/.cache/synid/homes/<endpoint>/<bucket>/<prefix>). A step pulls the files it reads
(what is missing or changed: size and ETag against a per-mirror index) and pushes the files it wrote, each
as one PUT, so another machine never sees half an image: S3 makes an object visible only once it is whole.
LanceDB does not go through the mirror: it opens its tables at `<home>/lancedb` on S3 directly.

The endpoint and credentials come only from the standard variables AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN and AWS_REGION. No message, log line or file holds the secret.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import sqlite3
from collections.abc import Iterable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from synid_assets.core.dataset.layout import atomic_write_bytes, is_remote_home

_LARGE = 64 << 20  # files above this go through s3fs's multipart transfer (still one object once complete)
_CONCURRENCY = 16
# One S3 client per process and setting (building one loads botocore's service model: ~0.4 s), and the buckets
# already checked with it; keyed by pid as well, since a forked process must not share the parent's event loop.
_FILESYSTEMS: dict[tuple, Any] = {}
_CHECKED: set[tuple] = set()


class RemoteHomeError(RuntimeError):
    """An object-store home cannot be used; the message names the URL and the problem, never a secret.

    `retryable`: the endpoint did not answer (a retry may succeed); otherwise the setup is wrong.
    """

    def __init__(self, message: str, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True)
class S3Settings:
    """Endpoint, region and credentials from the standard AWS variables; repr never shows the secret."""

    endpoint: str | None
    region: str
    access_key_id: str | None = field(repr=False)
    secret_access_key: str | None = field(repr=False)
    session_token: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls) -> S3Settings:
        env = os.environ
        return cls(
            endpoint=env.get("AWS_ENDPOINT_URL") or None,
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
            access_key_id=env.get("AWS_ACCESS_KEY_ID") or None,
            secret_access_key=env.get("AWS_SECRET_ACCESS_KEY") or None,
            session_token=env.get("AWS_SESSION_TOKEN") or None,
        )

    def redact(self, text: str) -> str:
        for secret in (self.secret_access_key, self.session_token, self.access_key_id):
            if secret:
                text = text.replace(secret, "***")
        return text

    def lancedb_options(self) -> dict[str, str]:
        """LanceDB's storage_options (object_store keys) for the same endpoint and credentials."""
        options = {"aws_region": self.region}
        if self.endpoint:
            options["aws_endpoint"] = self.endpoint
            if urlparse(self.endpoint).scheme == "http":
                options["allow_http"] = "true"  # a local MinIO / Ceph / moto endpoint without TLS
        if self.access_key_id and self.secret_access_key:
            options["aws_access_key_id"] = self.access_key_id
            options["aws_secret_access_key"] = self.secret_access_key
        if self.session_token:
            options["aws_session_token"] = self.session_token
        return options


def default_cache_dir() -> Path:
    return Path(os.environ.get("SYNID_CACHE") or Path.home() / ".cache" / "synid" / "homes").expanduser().resolve()


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """A relative path pattern (`*` within one path segment) matching the path itself or anything under it."""
    parts = [re.escape(part).replace(r"\*", "[^/]*") for part in pattern.split("/")]
    return re.compile("/".join(parts) + "(/.*)?$")


def _is_scratch(name: str) -> bool:
    # atomic_writer's temp files, DuckDB WALs of a database being built: never part of the dataset
    return name.startswith(".") or name.endswith(".wal")


class RemoteHome:
    """An s3:// SYNID_HOME and its local mirror. `pull` and `push` take paths relative to the home.

    A path may hold `*` wildcards within a segment (`batches/*/filter_state.json`); a path naming a directory
    stands for every file under it.
    """

    def __init__(self, url: str, cache_dir: Path | None = None, settings: S3Settings | None = None) -> None:
        if not is_remote_home(url):
            raise RemoteHomeError(f"SYNID_HOME {url!r} is not an s3://bucket/prefix URL")
        parsed = urlparse(url)
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/")
        if not self.bucket:
            raise RemoteHomeError(f"SYNID_HOME {url!r} names no bucket (s3://bucket/prefix)")
        self.url = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        self.settings = settings or S3Settings.from_env()
        endpoint = urlparse(self.settings.endpoint).netloc if self.settings.endpoint else "aws"
        mirror_root = (cache_dir or default_cache_dir()) / re.sub(r"[^A-Za-z0-9_.-]", "_", endpoint) / self.bucket
        self.local = (mirror_root / self.prefix).resolve() if self.prefix else mirror_root.resolve()
        self.index_path = self.local.with_name(self.local.name + ".synid-index.sqlite")
        self._fs: Any = None

    def __repr__(self) -> str:
        return f"RemoteHome({self.url!r}, local={str(self.local)!r})"

    # --- connection and errors -------------------------------------------------------------------------

    @property
    def lancedb_uri(self) -> str:
        return f"{self.url}/lancedb"

    def _client_key(self) -> tuple:
        s = self.settings
        secrets = hashlib.sha256(f"{s.access_key_id}\0{s.secret_access_key}\0{s.session_token}".encode()).hexdigest()
        return (os.getpid(), s.endpoint, s.region, secrets)

    @property
    def fs(self) -> Any:
        if self._fs is None:
            settings = self.settings
            if not (settings.access_key_id and settings.secret_access_key):
                raise RemoteHomeError(
                    f"SYNID_HOME {self.url}: no credentials; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
                )
            key = self._client_key()
            if key not in _FILESYSTEMS:
                import s3fs

                # No listing cache: other machines write to the same prefix between two calls.
                _FILESYSTEMS[key] = s3fs.S3FileSystem(
                    key=settings.access_key_id,
                    secret=settings.secret_access_key,
                    token=settings.session_token,
                    endpoint_url=settings.endpoint,
                    client_kwargs={"region_name": settings.region},
                    skip_instance_cache=True,
                    use_listings_cache=False,
                )
            self._fs = _FILESYSTEMS[key]
        return self._fs

    def error(self, exc: BaseException) -> RemoteHomeError:
        """The one-line error for an exception raised while talking to the store."""
        import botocore.exceptions as boto

        where = f"SYNID_HOME {self.url}"
        endpoint = self.settings.endpoint or "AWS S3"
        if isinstance(exc, RemoteHomeError):
            return exc
        if isinstance(exc, (boto.EndpointConnectionError, boto.ConnectTimeoutError, ConnectionError, TimeoutError)):
            return RemoteHomeError(f"{where}: cannot reach the endpoint {endpoint} (is the store running?)", True)
        if isinstance(exc, boto.NoCredentialsError):
            return RemoteHomeError(f"{where}: no credentials; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
        code = ""
        if isinstance(exc, boto.ClientError):
            code = str(exc.response.get("Error", {}).get("Code", ""))
        elif isinstance(exc.__cause__, boto.ClientError):  # s3fs raises OSErrors from the ClientError
            code = str(exc.__cause__.response.get("Error", {}).get("Code", ""))
        if code in ("NoSuchBucket", "404") or (isinstance(exc, FileNotFoundError) and not code):
            return RemoteHomeError(f"{where}: bucket {self.bucket!r} does not exist at {endpoint}")
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403") or isinstance(
            exc, PermissionError
        ):
            return RemoteHomeError(
                f"{where}: access denied at {endpoint} ({code or 'forbidden'}); check AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY"
            )
        text = self.settings.redact(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        return RemoteHomeError(f"{where}: {type(exc).__name__}: {text}", retryable=isinstance(exc, OSError))

    def lancedb_error(self, exc: BaseException) -> RemoteHomeError | None:
        """The one-line error for LanceDB's failure to reach its tables on the store; None for other errors."""
        text = str(exc)
        if "LanceError(IO)" not in text and "object store" not in text.lower() and "S3 error" not in text:
            return None
        where = f"SYNID_HOME {self.url}: LanceDB at {self.lancedb_uri}"
        if any(s in text for s in ("error sending request", "Connection refused", "connect error", "timed out")):
            return RemoteHomeError(f"{where}: cannot reach the endpoint {self.settings.endpoint or 'AWS S3'}", True)
        first = self.settings.redact(text.splitlines()[0])[:300]
        return RemoteHomeError(f"{where}: {first}", retryable=True)

    def check(self) -> None:
        """Fail early, with one line, when the endpoint is down, the bucket missing or the credentials wrong."""
        checked = (*self._client_key(), self.bucket)
        if checked in _CHECKED:
            return
        try:
            self.fs.call_s3("head_bucket", Bucket=self.bucket)
        except Exception as exc:
            raise self.error(exc) from None
        _CHECKED.add(checked)

    def _key(self, relative: str) -> str:
        return f"{self.prefix}/{relative}" if self.prefix else relative

    def _relative(self, key: str) -> str:
        key = key.split("/", 1)[1] if key.startswith(f"{self.bucket}/") else key
        return key[len(self.prefix) + 1 :] if self.prefix else key

    # --- the mirror's index: what was last pulled or pushed, with the local stat it had ---------------

    def _index(self) -> sqlite3.Connection:
        self.index_path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.index_path, timeout=120)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, size INT, mtime_ns INT, etag TEXT)")
        return con

    def _indexed(self, paths: Iterable[str]) -> dict[str, tuple[int, int, str]]:
        wanted = list(paths)
        found: dict[str, tuple[int, int, str]] = {}
        with closing(self._index()) as con:
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                rows = con.execute(
                    f"SELECT path, size, mtime_ns, etag FROM files WHERE path IN ({','.join('?' * len(chunk))})",
                    chunk,
                ).fetchall()
                found.update({p: (s, m, e) for p, s, m, e in rows})
        return found

    def _record(self, entries: list[tuple[str, int, int, str]], forget: Iterable[str] = ()) -> None:
        """Remember (relative path, local size, local mtime_ns, etag); forget paths gone from the store."""
        with closing(self._index()) as con, con:
            con.executemany("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?)", entries)
            con.executemany("DELETE FROM files WHERE path = ?", [(p,) for p in forget])

    def _unchanged(self, relative: str, known: tuple[int, int, str] | None) -> bool:
        """The local file is the one the index describes (pulled or pushed, not written since)."""
        if known is None:
            return False
        try:
            stat = (self.local / relative).stat()
        except FileNotFoundError:
            return False
        return (stat.st_size, stat.st_mtime_ns) == known[:2]

    # --- listing, pull and push ---------------------------------------------------------------------------

    def _list(self, patterns: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Remote files matching the patterns: relative path -> {size, etag}."""
        fs, found = self.fs, {}
        walks: dict[tuple[str, int], dict[str, Any]] = {}  # patterns under the same root share one listing
        for pattern in patterns:
            pattern = pattern.strip("/")
            if "*" not in pattern:
                entries = fs.find(f"{self.bucket}/{self._key(pattern)}", detail=True)
            else:
                segments = pattern.split("/")
                static = [s for s in segments[: next(i for i, s in enumerate(segments) if "*" in s)]]
                root = f"{self.bucket}/{self._key('/'.join(static))}".rstrip("/")
                depth = len(segments) - len(static)
                regex = _pattern_regex(pattern)
                if (root, depth) not in walks:
                    walks[root, depth] = fs.find(root, maxdepth=depth, withdirs=True, detail=True)
                listed = walks[root, depth]
                entries = {}
                for path, info in listed.items():
                    if not regex.match(self._relative(path)):
                        continue
                    if info.get("type") == "directory":
                        entries.update(fs.find(path, detail=True))
                    else:
                        entries[path] = info
            for path, info in entries.items():
                relative = self._relative(path)
                if info.get("type") == "directory" or not relative or relative.endswith("/"):
                    continue
                found[relative] = {"size": int(info.get("size") or 0), "etag": str(info.get("ETag", "")).strip('"')}
        return found

    def pull(self, *patterns: str) -> int:
        """Make the mirror hold the store's current copy of every matching file; returns files downloaded.

        A file that was pulled before and has since gone from the store is removed from the mirror; a file
        written locally and not pushed yet is left alone.
        """
        try:
            self.check()
            remote = self._list(patterns)
            known = self._indexed(remote)
            wanted = [
                (relative, meta)
                for relative, meta in sorted(remote.items())
                if not (self._unchanged(relative, known.get(relative)) and known[relative][2] == meta["etag"])
            ]
            fetched = self._run(self._download_all(wanted))
            self._record(fetched)
            self._forget_deleted(patterns, set(remote))
        except Exception as exc:
            raise self.error(exc) from None
        return len(fetched)

    def _forget_deleted(self, patterns: Iterable[str], present: set[str]) -> None:
        """Drop from the mirror the pulled copies of files that are no longer in the store."""
        gone: list[str] = []
        with closing(self._index()) as con:
            for pattern in patterns:
                pattern = pattern.strip("/")
                static = pattern.split("*", 1)[0]
                regex = _pattern_regex(pattern)
                rows = con.execute(
                    "SELECT path, size, mtime_ns, etag FROM files WHERE substr(path, 1, ?) = ?", (len(static), static)
                ).fetchall()
                for path, size, mtime_ns, etag in rows:
                    if path not in present and regex.match(path):
                        gone.append(path)
                        if self._unchanged(path, (size, mtime_ns, etag)):  # not rewritten locally since
                            (self.local / path).unlink(missing_ok=True)
        self._record([], forget=gone)

    def push(self, *patterns: str) -> int:
        """Upload every matching local file written since it was last pulled or pushed; returns files uploaded.

        Each file is one PUT (a multipart upload above 64 MB), so the store never holds half a file.
        """
        files: list[str] = []
        for pattern in patterns:
            for path in sorted(self.local.glob(pattern.strip("/"))):
                candidates = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
                files += [
                    p.relative_to(self.local).as_posix()
                    for p in candidates
                    if not any(_is_scratch(part) for part in p.relative_to(self.local).parts)
                ]
        files = sorted(set(files))
        if not files:
            return 0
        try:
            self.check()
            known = self._indexed(files)
            changed = [f for f in files if not self._unchanged(f, known.get(f))]
            uploaded = self._run(self._upload_all(changed))
            self._record(uploaded)
        except Exception as exc:
            raise self.error(exc) from None
        return len(uploaded)

    def fetch(self, relative: str) -> Path | None:
        """Pull one file and return its mirror path, or None when the store does not hold it."""
        self.pull(relative)
        path = self.local / relative
        return path if path.is_file() else None

    def exists(self, relative: str) -> bool:
        try:
            self.check()
            return bool(self.fs.exists(f"{self.bucket}/{self._key(relative)}"))
        except Exception as exc:
            raise self.error(exc) from None

    # --- concurrent transfers on s3fs's event loop --------------------------------------------------------

    def _run(self, coroutine: Any) -> Any:
        from fsspec.asyn import sync

        async def wrapped():
            return await coroutine

        return sync(self.fs.loop, wrapped)

    async def _download_all(self, wanted: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, int, int, str]]:
        gate = asyncio.Semaphore(_CONCURRENCY)

        async def one(relative: str, meta: dict[str, Any]) -> tuple[str, int, int, str]:
            async with gate:
                target = self.local / relative
                key = self._key(relative)
                if meta["size"] > _LARGE:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    tmp = target.with_name(f".{target.name}.pull.tmp")
                    await self.fs._get_file(f"{self.bucket}/{key}", str(tmp))
                    os.replace(tmp, target)
                    etag = meta["etag"]
                else:
                    response = await self.fs._call_s3("get_object", Bucket=self.bucket, Key=key)
                    async with response["Body"] as body:
                        data = await body.read()
                    atomic_write_bytes(target, data)
                    etag = str(response.get("ETag", meta["etag"])).strip('"')
                stat = target.stat()
                return relative, stat.st_size, stat.st_mtime_ns, etag

        return list(await asyncio.gather(*(one(r, m) for r, m in wanted)))

    async def _upload_all(self, files: list[str]) -> list[tuple[str, int, int, str]]:
        gate = asyncio.Semaphore(_CONCURRENCY)

        async def one(relative: str) -> tuple[str, int, int, str]:
            async with gate:
                source, key = self.local / relative, self._key(relative)
                stat = source.stat()  # before reading: a rewrite during the upload is pushed again next time
                if stat.st_size > _LARGE:
                    await self.fs._put_file(str(source), f"{self.bucket}/{key}")
                    etag = (await self.fs._info(f"{self.bucket}/{key}")).get("ETag", "")
                else:
                    body = source.read_bytes()
                    response = await self.fs._call_s3("put_object", Bucket=self.bucket, Key=key, Body=body)
                    etag = response.get("ETag", "")
                return relative, stat.st_size, stat.st_mtime_ns, str(etag).strip('"')

        return list(await asyncio.gather(*(one(f) for f in files)))
