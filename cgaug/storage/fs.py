"""One output root on any fsspec filesystem, with atomic writes.

Every file a run produces goes through `Root`, so that the commit protocol is
in one place: write under a hidden temporary name in the target directory,
then rename. A reader (or a crashed writer's successor) therefore sees either
the old file, the whole new file, or nothing, never a prefix of one. Locally
the rename is `os.replace` (atomic on POSIX); elsewhere it is `fs.mv`, which
on object stores is a copy of an object that was itself uploaded whole.

Paths given to `Root` methods are relative to the root, '/'-separated
(e.g. ``"shards/shard-00000.parquet"``); `join` turns them into the
filesystem's own path and `uri` into a full URI for messages and other tools.

Temporary names carry their writer (``.{name}.tmp-{host tag}.{pid}.{start}-{uuid}``), so that a
later run on the same host can tell a dead writer's leftover from a live writer's file in progress
(`temp_owner`, `process_alive`) and sweep the first at once; a write that fails is re-raised as
`WriteError`, which names the file it was writing.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import os
import posixpath
import signal
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

TMP_MARKER = ".tmp-"
"""Temporary files are named ``.{name}.tmp-{owner}-{uuid}``: hidden, and never matching a data suffix."""

FAULT_ENV = "_CGAUG_FAULT"  # outside the CGAUG_ prefix, which the config reads as settings
"""Test-only: ``_CGAUG_FAULT=point`` or ``point@shard`` SIGKILLs the process at that point (`fault_point`)."""

_HASH_CHUNK = 1 << 20


class WriteError(OSError):
    """A write into an output root failed (disk full, permission denied, read-only...).

    Keeps the errno of the cause and names the final file (not its temporary name), so the
    command line can say which path, why, and what to do without a traceback.
    """


# --- who writes: process identity and liveness ------------------------------------------------------


@functools.cache
def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux), which tells a reused pid apart."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()
    return int(fields[19]) if len(fields) > 19 and fields[0] != "Z" else -1


def host_tag() -> str:
    """This host (and pid namespace) as 8 hex digits: pids are only comparable within one namespace."""
    return hashlib.sha1(f"{socket.gethostname()}|{_pid_namespace()}".encode()).hexdigest()[:8]


def process_identity() -> dict[str, object]:
    """Host, pid namespace tag, pid and start time of this process: enough to tell later whether it died."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "host_tag": host_tag(), "pid": pid, "start": start_ticks(pid)}


def process_alive(tag: object, pid: object, start: object = None) -> bool | None:
    """Whether the process is still running: None when it is on another host (only a TTL can tell).

    A zombie, or a pid now used by a process that started at another time, counts as dead.
    """
    if tag != host_tag() or not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by another user
    ticks = start_ticks(pid)
    if ticks == -1:  # a zombie: killed, not yet reaped
        return False
    return not (isinstance(start, int) and ticks is not None and start >= 0 and ticks != start)


def _owner_token() -> str:
    identity = process_identity()
    return f"{identity['host_tag']}.{identity['pid']}.{identity['start']}"


def temp_name(directory: str, name: str) -> str:
    """A hidden temporary path next to `name` that records this process as its writer."""
    return posixpath.join(directory, f".{name}{TMP_MARKER}{_owner_token()}-{uuid.uuid4().hex}")


def temp_owner(name: str) -> tuple[str, int, int] | None:
    """(host tag, pid, start) of the writer of a temporary file, or None when the name does not say."""
    token = name.rpartition(TMP_MARKER)[2].partition("-")[0]
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        return parts[0], int(parts[1]), int(parts[2])
    except ValueError:
        return None


def fault_point(point: str, shard: int | None = None) -> None:
    """Test-only fault injection: SIGKILL this process here when ``_CGAUG_FAULT`` names `point`.

    ``_CGAUG_FAULT=after_commit`` fires at the first shard to reach the point, ``after_commit@3``
    at shard 3 only. The points: ``before_claim``, ``while_writing`` (a shard's temporary file is
    written, not yet renamed), ``after_commit`` (the shard is renamed, its report not yet
    written) and ``during_index`` (the index's temporary file is written, the manifest removed).
    Unset in production, where this costs one environment lookup.
    """
    wanted = os.environ.get(FAULT_ENV)
    if not wanted:
        return
    name, _, at = wanted.partition("@")
    if name == point and (not at or (shard is not None and int(at) == shard)):
        os.kill(os.getpid(), signal.SIGKILL)


@dataclass(frozen=True, slots=True)
class Root:
    """An fsspec filesystem plus the root directory inside it."""

    fs: fsspec.AbstractFileSystem
    path: str

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, LocalFileSystem)

    def join(self, *parts: str) -> str:
        """The filesystem path of `parts` under the root; refuses '..' so nothing escapes the root."""
        rel = posixpath.join(*parts) if parts else ""
        pieces = [p for p in rel.replace("\\", "/").split("/") if p not in ("", ".")]
        if ".." in pieces:
            raise ValueError(f"path {rel!r} leaves the output root {self.uri()!r}; expected a path inside it")
        return posixpath.join(self.path, *pieces) if pieces else self.path

    def uri(self, path: str = "") -> str:
        """A full address for messages and for other tools (a plain path when local)."""
        full = self.join(path)
        return full if self.is_local else self.fs.unstrip_protocol(full)

    def exists(self, path: str) -> bool:
        return bool(self.fs.exists(self.join(path)))

    def size(self, path: str) -> int:
        return int(self.fs.size(self.join(path)))

    def open(self, path: str, mode: str = "rb") -> IO[Any]:
        return self.fs.open(self.join(path), mode)

    def open_input(self, path: str) -> Any:
        """A file for pyarrow's readers: a native one on local disk, the fsspec file elsewhere.

        pyarrow's Parquet readers call a Python file object from their own I/O threads; a short
        process that exits right after such a read aborts now and then ("terminate called without
        an active exception", about 1 run in 10 here). A native file has no Python callbacks.
        """
        return open_input(self.fs, self.join(path))

    def read_bytes(self, path: str) -> bytes:
        try:
            return self.fs.cat_file(self.join(path))
        except FileNotFoundError:
            raise FileNotFoundError(f"{self.uri(path)}: no such file") from None

    def remove(self, path: str) -> None:
        """Remove a file; a missing file is not an error (removal is idempotent)."""
        full = self.join(path)
        if self.fs.exists(full):
            self.fs.rm_file(full)

    def list(self, prefix: str = "", suffix: str = "") -> list[str]:
        """Sorted root-relative paths of the files directly under `prefix` whose names end in `suffix`.

        Temporary files of unfinished writes are hidden ('.'-prefixed) and left out.
        """
        directory = self.join(prefix)
        if not self.fs.isdir(directory):
            return []
        names = []
        for entry in self.fs.ls(directory, detail=True):
            name = posixpath.basename(entry["name"].rstrip("/"))
            if entry["type"] == "file" and name.endswith(suffix) and not name.startswith("."):
                names.append(posixpath.join(prefix, name) if prefix else name)
        return sorted(names)

    def list_temps(self, prefix: str = "") -> list[str]:
        """Root-relative paths of the temporary files directly under `prefix` (leftovers or writes in progress)."""
        directory = self.join(prefix)
        if not self.fs.isdir(directory):
            return []
        names = [posixpath.basename(entry["name"].rstrip("/")) for entry in self.fs.ls(directory, detail=True)
                 if entry["type"] == "file"]
        return sorted(posixpath.join(prefix, n) if prefix else n for n in names
                      if n.startswith(".") and TMP_MARKER in n)

    def age_s(self, path: str) -> float | None:
        """Seconds since the file was last modified; None when the filesystem does not say."""
        try:
            modified = self.fs.modified(self.join(path))
        except (NotImplementedError, OSError, KeyError, AttributeError):
            return None
        return time.time() - modified.timestamp()

    def move(self, path: str, dest: str) -> None:
        """Rename a file inside the root (atomic locally), creating the destination folder."""
        final = self.join(dest)
        if self.is_local:
            os.makedirs(posixpath.dirname(final), exist_ok=True)
            os.replace(self.join(path), final)
        else:
            self.fs.mv(self.join(path), final)

    def sha256(self, path: str) -> str:
        """Hex sha256 of a file, read in chunks so that large shards never sit in memory whole."""
        digest = hashlib.sha256()
        with self.open(path, "rb") as f:
            while chunk := f.read(_HASH_CHUNK):
                digest.update(chunk)
        return digest.hexdigest()

    def write_bytes_atomic(self, path: str, data: bytes) -> None:
        self.write_atomic(path, lambda f: f.write(data))

    def write_parquet_atomic(self, path: str, table: pa.Table, *, fault: str | None = None,
                             shard: int | None = None, **kwargs: Any) -> None:
        """Write `table` as Parquet (`kwargs` go to `pyarrow.parquet.write_table`), atomically.

        `fault` and `shard` name a test-only kill point (`fault_point`) between write and rename.
        """
        self.write_atomic(path, lambda f: pq.write_table(table, f, **kwargs), fault=fault, shard=shard)

    def read_parquet(self, path: str, columns: list[str] | None = None) -> pa.Table:
        try:
            with self.open_input(path) as f:
                return pq.read_table(f, columns=columns)
        except FileNotFoundError:
            raise FileNotFoundError(f"{self.uri(path)}: no such file") from None

    def write_atomic(self, path: str, write: Callable[[IO[bytes]], object], *, fault: str | None = None,
                     shard: int | None = None) -> None:
        """Write through `write` into a temporary file, then rename it to `path`.

        Raises:
            WriteError: the disk is full, access is denied... (errno kept, `path` named).
        """
        final = self.join(path)
        directory, name = posixpath.split(final)
        tmp = temp_name(directory, name)
        try:
            if self.is_local:
                os.makedirs(directory, exist_ok=True)
                with open(tmp, "wb") as f:
                    write(f)
                    f.flush()
                    os.fsync(f.fileno())  # the rename must not become visible before the data is durable
            else:
                with self.fs.open(tmp, "wb") as f:
                    write(f)
            if fault:
                fault_point(fault, shard)
            self._rename(tmp, final)
        except BaseException as error:
            with contextlib.suppress(OSError):
                if self.fs.exists(tmp):
                    self.fs.rm_file(tmp)
            cause = _os_error(error)
            if cause is not None and not isinstance(error, WriteError):
                raise WriteError(cause.errno, cause.strerror or str(cause), self.uri(path)) from error
            raise

    def _rename(self, tmp: str, final: str) -> None:
        if self.is_local:
            os.replace(tmp, final)
        else:
            self.fs.mv(tmp, final)


def _os_error(error: BaseException) -> OSError | None:
    """The OSError with an errno behind `error` (pyarrow wraps a failed write of its own), if any."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno is not None and not isinstance(seen, FileNotFoundError):
            return seen
        seen = seen.__cause__ or seen.__context__
    if isinstance(error, OSError) and "No space left on device" in str(error):  # pyarrow's own IOError
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return None


def open_input(fs: fsspec.AbstractFileSystem, path: str) -> Any:
    """`Root.open_input` for a bare filesystem path (files that live outside an output root)."""
    return pa.OSFile(path, "rb") if isinstance(fs, LocalFileSystem) else fs.open(path, "rb")


def open_root(uri: str | os.PathLike[str], *, create: bool = True) -> Root:
    """The `Root` for a local path or an fsspec URI (``memory://x``, ``s3://bucket/x``, ``file:///x``).

    With `create`, a local root is created (readers pass False so that a
    mistyped path is not left behind as an empty directory); it is always made
    absolute. Remote roots are never created: object stores have no
    directories, and creating a bucket is not ours to do.
    """
    text = os.fspath(uri)
    if not text:
        raise ValueError("output root is empty; expected a local path or an fsspec URI such as s3://bucket/x")
    fs, path = fsspec.core.url_to_fs(text)
    if isinstance(fs, LocalFileSystem):
        path = os.path.abspath(path)
        if create:
            os.makedirs(path, exist_ok=True)
    return Root(fs=fs, path=path.rstrip("/") or "/")
