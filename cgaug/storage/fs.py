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
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

TMP_MARKER = ".tmp-"
"""Temporary files are named ``.{name}.tmp-{uuid}``: hidden, and never matching a data suffix."""

_HASH_CHUNK = 1 << 20


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

    def sha256(self, path: str) -> str:
        """Hex sha256 of a file, read in chunks so that large shards never sit in memory whole."""
        digest = hashlib.sha256()
        with self.open(path, "rb") as f:
            while chunk := f.read(_HASH_CHUNK):
                digest.update(chunk)
        return digest.hexdigest()

    def write_bytes_atomic(self, path: str, data: bytes) -> None:
        self.write_atomic(path, lambda f: f.write(data))

    def write_parquet_atomic(self, path: str, table: pa.Table, **kwargs: Any) -> None:
        """Write `table` as Parquet (`kwargs` go to `pyarrow.parquet.write_table`), atomically."""
        self.write_atomic(path, lambda f: pq.write_table(table, f, **kwargs))

    def read_parquet(self, path: str, columns: list[str] | None = None) -> pa.Table:
        try:
            with self.open_input(path) as f:
                return pq.read_table(f, columns=columns)
        except FileNotFoundError:
            raise FileNotFoundError(f"{self.uri(path)}: no such file") from None

    def write_atomic(self, path: str, write: Callable[[IO[bytes]], object]) -> None:
        final = self.join(path)
        directory, name = posixpath.split(final)
        tmp = posixpath.join(directory, f".{name}{TMP_MARKER}{uuid.uuid4().hex}")
        if self.is_local:
            os.makedirs(directory, exist_ok=True)
        try:
            if self.is_local:
                with open(tmp, "wb") as f:
                    write(f)
                    f.flush()
                    os.fsync(f.fileno())  # the rename must not become visible before the data is durable
            else:
                with self.fs.open(tmp, "wb") as f:
                    write(f)
            self._rename(tmp, final)
        except BaseException:
            with contextlib.suppress(OSError):
                if self.fs.exists(tmp):
                    self.fs.rm_file(tmp)
            raise

    def _rename(self, tmp: str, final: str) -> None:
        if self.is_local:
            os.replace(tmp, final)
        else:
            self.fs.mv(tmp, final)


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
