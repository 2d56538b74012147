"""The state database: private to the gateway, atomic, shared across processes."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest

from conduit.state import StateDB

DDL = "CREATE TABLE IF NOT EXISTS demo_items (id TEXT PRIMARY KEY, n INTEGER NOT NULL);"


def test_the_file_is_private_and_tables_are_created_once(tmp_path: Path) -> None:
    db = StateDB.open(tmp_path / "data")
    db.ensure(DDL)
    db.ensure(DDL)
    mode = stat.S_IMODE((tmp_path / "data" / "state.sqlite").stat().st_mode)
    assert mode == 0o600
    assert db.query("SELECT count(*) AS n FROM demo_items")[0]["n"] == 0


def test_a_failed_transaction_leaves_nothing(tmp_path: Path) -> None:
    db = StateDB.open(tmp_path)
    db.ensure(DDL)
    with pytest.raises(ValueError), db.transaction() as tx:
        tx.execute("INSERT INTO demo_items VALUES ('a', 1)")
        raise ValueError("half-way")
    assert db.query("SELECT * FROM demo_items") == []


def test_another_process_sees_a_committed_change(tmp_path: Path) -> None:
    db = StateDB.open(tmp_path)
    db.ensure(DDL)
    with db.transaction() as tx:
        tx.execute("INSERT INTO demo_items VALUES ('a', 1)")
    script = (
        "import sys; from pathlib import Path; from conduit.state import StateDB;"
        "db = StateDB.open(Path(sys.argv[1]));"
        "print(db.query('SELECT n FROM demo_items WHERE id = ?', ('a',))[0]['n'])"
    )
    src = Path(__file__).resolve().parents[2] / "src"
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(src)},
    )
    assert out.stdout.strip() == "1"


def test_a_second_handle_in_one_process_keeps_the_first_ones_locks(tmp_path: Path) -> None:
    """Closing any descriptor of the file drops every POSIX lock the process
    holds on it: a second StateDB must not, or another process that closes its
    connection takes the file for unused, checkpoints and removes the WAL under
    the first handle, and what that handle writes next is lost to others."""
    first = StateDB.open(tmp_path)
    first.ensure("CREATE TABLE IF NOT EXISTS t (x INTEGER)")
    with first.transaction() as tx:
        tx.execute("INSERT INTO t VALUES (1)")
    second = StateDB.open(tmp_path)
    count = (
        "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]);"
        " print(c.execute('SELECT count(*) FROM t').fetchone()[0]); c.close()"
    )
    path = str(tmp_path / "state.sqlite")
    seen = subprocess.run([sys.executable, "-c", count, path], capture_output=True, text=True)
    assert seen.stdout.strip() == "1", seen.stderr
    with first.transaction() as tx:
        tx.execute("INSERT INTO t VALUES (2)")
    seen = subprocess.run([sys.executable, "-c", count, path], capture_output=True, text=True)
    assert seen.stdout.strip() == "2", seen.stderr
    second.close()
    first.close()
