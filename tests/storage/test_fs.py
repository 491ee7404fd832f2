"""Output roots on a local directory and on fsspec's in-memory filesystem: round trips and atomic writes."""

from __future__ import annotations

import hashlib
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cgaug.storage.fs import TMP_MARKER, Root, open_root


def all_names(root: Root, prefix: str = "") -> list[str]:
    """Every entry under `prefix`, hidden temporary files included (`Root.list` hides them)."""
    directory = root.join(prefix)
    if not root.fs.isdir(directory):
        return []
    return sorted(os.path.basename(entry.rstrip("/")) for entry in root.fs.ls(directory, detail=False))


def test_local_root_is_absolute_and_created(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = open_root("relative/out")
    assert root.is_local
    assert root.path == str(tmp_path / "relative" / "out")
    assert (tmp_path / "relative" / "out").is_dir()
    assert root.uri("a/b.txt") == str(tmp_path / "relative" / "out" / "a" / "b.txt")


def test_open_root_without_create_leaves_no_directory(tmp_path):
    root = open_root(tmp_path / "typo", create=False)
    assert not (tmp_path / "typo").exists()
    assert not root.exists("manifest.json")
    assert root.list("shards", ".parquet") == []


def test_memory_root_is_not_local_and_has_a_full_uri(memory_uri):
    root = open_root(memory_uri)
    assert not root.is_local
    assert root.uri("shards/x.parquet") == f"memory:///{memory_uri.removeprefix('memory://')}/shards/x.parquet"


def test_empty_uri_is_refused():
    with pytest.raises(ValueError, match="output root is empty"):
        open_root("")


def test_join_refuses_to_leave_the_root(root):
    assert root.join("a", "b.txt") == root.path + "/a/b.txt"
    with pytest.raises(ValueError, match="leaves the output root"):
        root.join("../escape.txt")


def test_bytes_round_trip_overwrite_and_nested_directories(root):
    root.write_bytes_atomic("deep/er/file.bin", b"first")
    assert root.read_bytes("deep/er/file.bin") == b"first"
    root.write_bytes_atomic("deep/er/file.bin", b"second, longer")
    assert root.read_bytes("deep/er/file.bin") == b"second, longer"
    assert root.size("deep/er/file.bin") == len(b"second, longer")
    assert all_names(root, "deep/er") == ["file.bin"]  # no temporary file left behind


def test_read_missing_file_names_it(root):
    with pytest.raises(FileNotFoundError, match=r"nothing\.bin: no such file"):
        root.read_bytes("nothing.bin")
    with pytest.raises(FileNotFoundError, match=r"nothing\.parquet: no such file"):
        root.read_parquet("nothing.parquet")


def test_sha256_matches_hashlib_on_data_larger_than_one_chunk(root):
    data = bytes(range(256)) * 9000  # 2.3 MB: several 1 MiB chunks
    root.write_bytes_atomic("blob.bin", data)
    assert root.sha256("blob.bin") == hashlib.sha256(data).hexdigest()


def test_list_filters_by_suffix_sorts_and_hides_temporary_files(root):
    for name in ("b.parquet", "a.parquet", "c.json"):
        root.write_bytes_atomic(f"shards/{name}", b"x")
    root.fs.pipe_file(root.join(f"shards/.d.parquet{TMP_MARKER}123"), b"half")  # a crashed writer's leftover
    assert root.list("shards", ".parquet") == ["shards/a.parquet", "shards/b.parquet"]
    assert root.list("shards") == ["shards/a.parquet", "shards/b.parquet", "shards/c.json"]
    assert root.list("missing", ".parquet") == []


def test_remove_is_idempotent(root):
    root.write_bytes_atomic("x.txt", b"1")
    root.remove("x.txt")
    assert not root.exists("x.txt")
    root.remove("x.txt")  # a second removal is not an error


def test_parquet_round_trip_with_column_selection(root):
    table = pa.table({"a": pa.array([1, 2, 3], pa.int32()), "b": ["x", "y", "z"]})
    root.write_parquet_atomic("t/table.parquet", table, row_group_size=2)
    assert root.read_parquet("t/table.parquet").equals(table)
    assert root.read_parquet("t/table.parquet", columns=["b"]).column_names == ["b"]
    with root.open("t/table.parquet") as f:
        assert pq.ParquetFile(f).num_row_groups == 2  # the writer options reached pyarrow


def test_failure_while_writing_leaves_old_file_and_no_temporary(root):
    """The writer dies after some bytes went out: the old file is untouched and nothing else is visible."""
    root.write_bytes_atomic("data/file.bin", b"old content")

    def dies_halfway(f):
        f.write(b"partial new content")
        raise OSError("disk full (injected)")

    with pytest.raises(OSError, match="injected"):
        root.write_atomic("data/file.bin", dies_halfway)
    assert root.read_bytes("data/file.bin") == b"old content"
    assert all_names(root, "data") == ["file.bin"]


def test_a_full_disk_is_a_write_error_that_names_the_final_file(root):
    import errno

    from cgaug.storage.fs import WriteError

    def disk_full(f):
        f.write(b"some")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(WriteError) as caught:
        root.write_atomic("shards/shard-00001.parquet", disk_full)
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == root.uri("shards/shard-00001.parquet")
    assert all_names(root, "shards") == []


def test_temporary_names_record_their_writer_for_the_sweep(root):
    import os

    from cgaug.storage.fs import process_alive, process_identity, temp_name, temp_owner
    from tests.faults.dead import dead_owner, temp_token

    me = process_identity()
    mine = temp_name("shards", "shard-00001.parquet")
    assert mine.startswith(f"shards/.shard-00001.parquet{TMP_MARKER}")
    assert temp_owner(os.path.basename(mine)) == (me["host_tag"], os.getpid(), me["start"])
    assert process_alive(*temp_owner(os.path.basename(mine))) is True
    dead = dead_owner()
    assert process_alive(*temp_owner(f".x{TMP_MARKER}{temp_token(dead)}-abc")) is False
    assert process_alive("0badc0de", os.getpid(), me["start"]) is None  # another host: unknown
    assert temp_owner(f".x{TMP_MARKER}0123abcd") is None  # a name of an older release says nothing
    root.write_bytes_atomic("shards/a.parquet", b"whole")
    root.fs.pipe_file(root.join(f"shards/.a.parquet{TMP_MARKER}123"), b"half")
    assert root.list_temps("shards") == [f"shards/.a.parquet{TMP_MARKER}123"]


def test_failure_in_parquet_writer_leaves_nothing(root, monkeypatch):
    original = pq.ParquetWriter.write_table

    def partial_then_fail(self, table, *args, **kwargs):
        original(self, table.slice(0, 1), *args, **kwargs)
        raise OSError("writer crashed (injected)")

    monkeypatch.setattr(pq.ParquetWriter, "write_table", partial_then_fail)
    table = pa.table({"a": list(range(100))})
    with pytest.raises(OSError, match="injected"):
        root.write_parquet_atomic("p/new.parquet", table, row_group_size=10)
    assert not root.exists("p/new.parquet")
    assert all_names(root, "p") == []


def test_failure_during_rename_removes_the_temporary(root, monkeypatch):
    def failing_rename(self, tmp, final):
        raise OSError("rename failed (injected)")

    monkeypatch.setattr(Root, "_rename", failing_rename)
    with pytest.raises(OSError, match="injected"):
        root.write_bytes_atomic("r/file.bin", b"data")
    assert not root.exists("r/file.bin")
    assert all_names(root, "r") == []


def test_open_root_accepts_file_uri(tmp_path):
    root = open_root(f"file://{tmp_path}/viafile")
    assert root.is_local
    root.write_bytes_atomic("x.txt", b"1")
    assert (tmp_path / "viafile" / "x.txt").read_bytes() == b"1"
