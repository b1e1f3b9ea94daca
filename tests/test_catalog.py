"""`replay PATH` (docs/operations.md): what is served, under which names; through Catalog and the CLI."""

from __future__ import annotations

import shutil
from pathlib import Path

import aiohttp
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recorder.errors import LogNotFoundError, NotALogError, TicktapeError
from replayer.catalog import Catalog
from tests.conftest import make_log, run_cli
from tests.replay_helpers import ServerProcess


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One small log with a single segment, copied around by the tests."""
    return make_log(tmp_path_factory.mktemp("src") / "src", ticks=300)


def _single_file_log(source: Path, path: Path) -> Path:
    (segment,) = source.glob("seg-*.parquet")
    shutil.copyfile(segment, path)
    return path


def _foreign_parquet(path: Path) -> Path:
    pq.write_table(pa.table({"a": [1, 2, 3]}), path)
    return path


def _mixed_folder(source: Path, root: Path) -> Path:
    """A folder of logs: a log directory, a single-file log, and things that are not logs."""
    root.mkdir()
    shutil.copytree(source, root / "dirlog")
    _single_file_log(source, root / "filelog.parquet")
    _foreign_parquet(root / "foreign.parquet")
    (root / "notes.txt").write_text("not a log")
    (root / "empty-dir").mkdir()
    return root


def _two_logs(source: Path, root: Path) -> Path:
    """The case that was served as one log named after the folder."""
    root.mkdir()
    shutil.copytree(source, root / "dirlog")
    _single_file_log(source, root / "filelog.parquet")
    return root


def test_a_folder_holding_a_log_dir_and_a_file_log_serves_both(source: Path,
                                                               tmp_path: Path) -> None:
    catalog = Catalog(_two_logs(source, tmp_path / "two"))
    assert catalog.names == ["dirlog", "filelog"]
    assert catalog.get("filelog").events == catalog.get("dirlog").events == 300
    catalog = Catalog(_mixed_folder(source, tmp_path / "mixed"))
    assert catalog.names == ["dirlog", "filelog"]
    assert catalog.get("filelog").events == catalog.get("dirlog").events == 300
    assert [i["name"] for i in catalog.infos()] == ["dirlog", "filelog"]


def test_a_log_is_served_alone(source: Path, tmp_path: Path) -> None:
    assert Catalog(source).names == ["src"]
    assert Catalog(_single_file_log(source, tmp_path / "one.parquet")).names == ["one"]
    # A log directory is recognised by its segments, whatever else it holds.
    logdir = tmp_path / "logdir"
    shutil.copytree(source, logdir)
    shutil.copytree(source, logdir / "nested")
    (logdir / "README").write_text("x")
    assert Catalog(logdir).names == ["logdir"]


def test_a_folder_of_foreign_named_ticktape_files_serves_each_file(source: Path,
                                                                   tmp_path: Path) -> None:
    root = tmp_path / "parts"
    root.mkdir()
    _single_file_log(source, root / "part-0.parquet")
    _single_file_log(source, root / "part-1.parquet")
    assert Catalog(root).names == ["part-0", "part-1"]


def test_what_is_not_a_log_is_an_input_error(source: Path, tmp_path: Path) -> None:
    with pytest.raises(LogNotFoundError):
        Catalog(tmp_path / "missing")
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    with pytest.raises(NotALogError) as exc:
        Catalog(notes)
    assert exc.value.exit_code == 2
    with pytest.raises(NotALogError):
        Catalog(_foreign_parquet(tmp_path / "foreign.parquet"))


def test_an_empty_folder_is_served_and_rescanned(source: Path, tmp_path: Path) -> None:
    root = tmp_path / "later"
    root.mkdir()
    catalog = Catalog(root, rescan_every=0.0)
    assert catalog.names == [] and catalog.infos() == []
    shutil.copytree(source, root / "arrived")
    assert catalog.get("arrived").events == 300
    assert [i["name"] for i in catalog.infos()] == ["arrived"]


def test_a_damaged_log_in_a_folder_is_listed_with_a_problem(source: Path, tmp_path: Path) -> None:
    root = tmp_path / "folder"
    root.mkdir()
    shutil.copytree(source, root / "good")
    shutil.copytree(source, root / "crashed")
    (root / "crashed" / "_journal.arrows").write_bytes(b"")  # a recorder died here
    catalog = Catalog(root)
    assert catalog.names == ["good"]
    infos = catalog.infos()
    crashed = next(i for i in infos if i["name"] == "crashed")
    assert "recover" in crashed["error"]
    assert str(tmp_path) not in str(infos)  # problems name the log, not the server's path
    with pytest.raises(TicktapeError) as exc:
        catalog.get("crashed")
    assert "crashed" in str(exc.value) and str(tmp_path) not in str(exc.value)


def _err(result) -> str:  # type: ignore[no-untyped-def]
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return str(lines[0])


def test_cli_refuses_what_is_not_a_log(source: Path, tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    result = run_cli("replay", str(notes), "--port", "0", timeout=60)
    assert result.returncode == 2
    assert _err(result) == (f"error: {notes} is neither a log nor a folder of logs (expected a "
                            ".parquet log file or a directory)")
    foreign = _foreign_parquet(tmp_path / "foreign.parquet")
    result = run_cli("replay", str(foreign), "--port", "0", timeout=60)
    assert result.returncode == 2
    message = _err(result)
    assert message.startswith("error: ") and "foreign.parquet" in message
    assert "not a ticktape log" in message
    result = run_cli("replay", str(tmp_path / "missing"), "--port", "0", timeout=60)
    assert result.returncode == 2
    assert _err(result) == f"error: no such file or directory: {tmp_path / 'missing'}"


async def test_cli_serves_every_log_of_a_folder(source: Path, tmp_path: Path) -> None:
    server = ServerProcess(_two_logs(source, tmp_path / "two"))
    try:
        async with aiohttp.ClientSession() as http, http.get(f"{server.url}/api/logs") as resp:
            logs = await resp.json()
        assert [lg["name"] for lg in logs] == ["dirlog", "filelog"]
        assert all(lg["events"] == 300 for lg in logs)
    finally:
        code, out = server.stop()
    assert code == 0, out


def test_rescan_keeps_names_stable(source: Path, tmp_path: Path) -> None:
    root = _mixed_folder(source, tmp_path / "stable")
    catalog = Catalog(root, rescan_every=0.0)
    first = catalog.get("dirlog")
    catalog.scan()
    assert catalog.get("dirlog") is first  # a rescan keeps the opened log (and its caches)
