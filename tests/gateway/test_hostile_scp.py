"""Hostile legacy SCP: names, numbers and nesting, over real ``scp -O`` and a raw channel.

After each case: nothing on disk under any name, the journal records the
refusal, the client got a clean error line, and ``audit verify`` passes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conduit.cli.main import main
from conduit.names import MAX_PATH_BYTES, has_controls
from tests.support.gateway import RunningGateway, policy_text, wait_for

BAD_NAMES = [
    b"esc\x1b[31mRED\x1b[0m.txt",
    b"cr\rfake.txt",
    b"bell\x07",
    b"\x01start",
    "rlo\u202etxt.exe".encode(),
    "lrm\u200e.txt".encode(),
]
BAD_FOLDER = b"dir\x1b]0;pwned\x07"

BAD_LINES = [
    ("C0644 \u00b2 two.txt".encode(), "size not present"),
    ("C0644 \u0665 five.txt".encode(), "size not present"),
    ("T\u0661\u0662 0 1 0".encode(), "mtime.sec not present"),
    (b"C0644 " + b"9" * 5000 + b" big.txt", "size out of range"),
    (b"C-644 5 neg.txt", "bad mode"),
    (b"T99999999999999999999 0 1 0", "mtime.sec out of range"),
]


@pytest.fixture
def site(make_gateway: Any, keys: dict[str, Path], tmp_path: Path) -> RunningGateway:
    """A gateway with its real journal, and its policy file written for ``audit verify``."""
    root = tmp_path / "site"
    root.mkdir()
    text = policy_text(root, keys) + f'\n[audit]\njournal = "{root}/audit"\n'
    (root / "conduit.toml").write_text(text)
    gw: RunningGateway = make_gateway(text=text, recorder="journal")
    gw.root = root
    return gw


def records(gw: RunningGateway) -> list[dict[str, Any]]:
    out = []
    for path in sorted((gw.root / "audit").glob("journal-*.jsonl")):
        out += [json.loads(line) for line in path.read_text().splitlines() if line]
    return out


def denials(gw: RunningGateway, reason: str) -> list[dict[str, Any]]:
    return [
        r for r in records(gw) if r["type"] == "access.denied" and reason in r.get("reason", "")
    ]


def verified(gw: RunningGateway) -> bool:
    return main(["audit", "verify", "--config", str(gw.root / "conduit.toml")]) == 0


def every_name(folder: Path) -> list[str]:
    return [str(p.relative_to(folder)) for p in folder.rglob("*")]


def clean_error(line: bytes) -> bool:
    """One \\x01/\\x02 line, ``scp: `` and text with no control or bidi character."""
    text = line[1:-1].decode("utf-8")
    return (
        line[:1] in (b"\x01", b"\x02")
        and line.endswith(b"\n")
        and text.startswith("scp: ")
        and not has_controls(text)
    )


async def _sink(gw: RunningGateway, command: str, steps: list[bytes]) -> tuple[list[bytes], int]:
    """Drive ``scp -t`` by hand: the first reply, then one reply per step."""
    async with gw.connect() as conn:
        process = await conn.create_process(command, encoding=None)
        replies = [await process.stdout.readexactly(1)]
        try:
            for step in steps:
                process.stdin.write(step)
                if step.endswith(b"\n") or step == b"\0":
                    first = await process.stdout.read(1)
                    if not first:  # the server ended the session (after a fatal error)
                        break
                    line = first if first == b"\0" else first + await process.stdout.readline()
                    replies.append(line)
            process.stdin.write_eof()
        except BrokenPipeError:  # the server ended the session while we were still sending
            pass
        await process.wait(timeout=20)
        return replies, process.returncode or 0


def sink(gw: RunningGateway, steps: list[bytes], command: str = "scp -t /inbox") -> Any:
    return gw.call(_sink(gw, command, steps), timeout=60)


# -- names ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", BAD_NAMES, ids=lambda n: repr(n)[2:14])
def test_raw_channel_bad_name_refused_that_file_only(site: RunningGateway, name: bytes) -> None:
    replies, status = sink(site, [b"C0644 5 " + name + b"\n", b"C0644 3 ok.txt\n", b"abc", b"\0"])
    assert replies[0] == b"\0"
    refusal = replies[1]
    assert clean_error(refusal) and refusal.startswith(b"\x01"), refusal
    assert b"file name not allowed" in refusal
    assert replies[2:] == [b"\0", b"\0"]  # the next file goes on and lands
    assert status == 1  # a file was refused, as OpenSSH's sink reports it
    inbox = site.area("inbox")
    assert every_name(inbox) == ["ok.txt"]
    denied = denials(site, "file name not allowed")
    assert len(denied) == 1 and denied[0]["path"] == "/inbox/" + name.decode()
    assert denied[0]["operation"] == "write" and denied[0]["principal"] == "alice"
    assert verified(site)


def test_raw_channel_bad_folder_refused_with_its_contents(site: RunningGateway) -> None:
    replies, _ = sink(
        site, [b"D0755 0 " + BAD_FOLDER + b"\n", b"D0755 0 good\n", b"E\n"], "scp -r -t /inbox"
    )
    assert clean_error(replies[1]) and replies[1].startswith(b"\x01")
    assert replies[2:] == [b"\0", b"\0"]
    assert every_name(site.area("inbox")) == ["good"]
    assert denials(site, "file name not allowed")[0]["operation"] == "mkdir"
    assert verified(site)


@pytest.mark.parametrize("name", [*BAD_NAMES, BAD_FOLDER], ids=lambda n: repr(n)[2:14])
def test_real_scp_legacy_cannot_create_bad_names(
    site: RunningGateway, name: bytes, tmp_path: Path
) -> None:
    local = tmp_path / "local"
    local.mkdir()
    if name == BAD_FOLDER:
        folder = local / os.fsdecode(name)
        folder.mkdir()
        (folder / "inner.txt").write_bytes(b"inner\n")
        result = site.scp("-r", str(folder), ":/inbox/", legacy=True)
    else:
        (local / os.fsdecode(name)).write_bytes(b"hello")
        result = site.scp(str(local / os.fsdecode(name)), ":/inbox/", legacy=True)
    assert result.returncode != 0
    assert "file name not allowed" in result.stderr
    assert every_name(site.area("inbox")) == []
    assert denials(site, "file name not allowed")
    assert verified(site)


def test_deep_folders_stop_at_the_path_limit(site: RunningGateway) -> None:
    level = b"D0755 0 " + b"d" * 200 + b"\n"
    replies, _ = sink(site, [level] * 25, "scp -r -t /inbox")
    accepted = replies[1:].count(b"\0")
    refused = [r for r in replies[1:] if r != b"\0"]
    assert accepted == (MAX_PATH_BYTES - len("/inbox")) // 201  # 20 levels fit
    assert refused and all(clean_error(r) and b"path too long" in r for r in refused)
    # The real path is longer than PATH_MAX: walk down by folder descriptors.
    depth, fd = 0, os.open(site.area("inbox"), os.O_RDONLY | os.O_DIRECTORY)
    while names := os.listdir(fd):
        assert names == ["d" * 200]
        child = os.open(names[0], os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd, depth = child, depth + 1
    os.close(fd)
    assert depth == accepted and len("/inbox") + depth * 201 <= MAX_PATH_BYTES
    assert denials(site, "path too long")
    assert verified(site)


# -- numbers -------------------------------------------------------------------------


@pytest.mark.parametrize(("line", "message"), BAD_LINES, ids=lambda v: repr(v)[:20])
def test_raw_channel_bad_numbers_are_protocol_errors(
    site: RunningGateway, line: bytes, message: str
) -> None:
    replies, status = sink(site, [line + b"\n"])
    assert len(replies) == 2 and clean_error(replies[1]), replies
    assert replies[1] == f"\x02scp: protocol error: {message}\n".encode()
    assert status == 1
    assert every_name(site.area("inbox")) == []
    assert denials(site, f"protocol error: {message}")
    assert not [r for r in records(site) if r["type"] == "file.upload"]
    assert verified(site)


def test_time_out_of_range_is_refused_before_any_byte_is_written(site: RunningGateway) -> None:
    # Before: the file was committed, then set_times raised OverflowError.
    replies, _ = sink(
        site, [b"T99999999999999999999 0 1 0\n", b"C0644 5 late.txt\n"], "scp -p -t /inbox"
    )
    assert replies[1:] == [b"\x02scp: protocol error: mtime.sec out of range\n"]
    assert every_name(site.area("inbox")) == []


_piece = st.sampled_from(
    [
        b"0",
        b"7",
        b"644",
        b"0644",
        b" ",
        b"-",
        b"\xc2\xb2",
        b"\xd9\xa5",
        b"9" * 30,
        b"a",
        b"\x1b",
        b"\xe2\x80\xae",
        b"/",
        b"..",
        b"\r",
        b"\xff",
    ]
)
_hostile_line = st.builds(
    lambda kind, parts: kind + b"".join(parts),
    st.sampled_from([b"C", b"D", b"T", b"E", b"X"]),
    st.lists(_piece, max_size=8),
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(line=_hostile_line)
def test_any_control_line_gets_ok_or_a_clean_error(site: RunningGateway, line: bytes) -> None:
    replies, _ = sink(site, [line + b"\n"], "scp -r -t /inbox/sub")
    assert replies[1] == b"\0" or clean_error(replies[1]), replies
    assert b"internal error" not in replies[1]
    for path in site.area("inbox").rglob("*"):
        assert not has_controls(path.name)


# -- interoperability: the last status byte -------------------------------------------


def test_all_bytes_then_eof_without_status_commits_and_says_so(site: RunningGateway) -> None:
    async def scenario() -> int:
        async with site.connect() as conn:
            process = await conn.create_process("scp -t /inbox", encoding=None)
            assert await process.stdout.readexactly(1) == b"\0"
            process.stdin.write(b"C0644 5 whole.txt\n")
            assert await process.stdout.readexactly(1) == b"\0"
            process.stdin.write(b"hello")
            process.stdin.write_eof()  # no final \0
            await process.wait(timeout=20)
            return process.returncode or 0

    assert site.call(scenario()) == 0
    assert (site.area("inbox") / "whole.txt").read_bytes() == b"hello"
    done = [r for r in records(site) if r["type"] == "file.upload" and r["outcome"] == "success"]
    assert len(done) == 1 and done[0]["bytes"] == 5
    assert "final status" in done[0]["note"]
    assert verified(site)


def test_short_transfer_then_eof_is_discarded(site: RunningGateway) -> None:
    async def scenario() -> None:
        async with site.connect() as conn:
            process = await conn.create_process("scp -t /inbox", encoding=None)
            await process.stdout.readexactly(1)
            process.stdin.write(b"C0644 10 short.txt\n")
            await process.stdout.readexactly(1)
            process.stdin.write(b"hello")
            process.stdin.write_eof()
            await process.wait(timeout=20)

    site.call(scenario())
    assert wait_for(lambda: every_name(site.area("inbox")) == [], timeout=10)
    failed = [r for r in records(site) if r["type"] == "file.upload" and r["outcome"] == "failed"]
    assert len(failed) == 1 and "note" not in failed[0]
    # a plain reason, not the name of an internal exception class
    assert failed[0]["error"] == "transfer interrupted: connection closed mid-file"
    assert verified(site)


def test_status_byte_error_after_all_bytes_is_discarded(site: RunningGateway) -> None:
    """The client says its side failed (e.g. a read error): nothing is kept."""
    replies, _ = sink(site, [b"C0644 5 bad.txt\n", b"hello", b"\x01scp: read error\n"])
    assert replies[1] == b"\0"
    assert every_name(site.area("inbox")) == []
    failed = [r for r in records(site) if r["type"] == "file.upload" and r["outcome"] == "failed"]
    assert [r["error"] for r in failed] == ["transfer interrupted: scp: read error"]


def test_download_cut_short_by_the_client_says_so_plainly(site: RunningGateway) -> None:
    """A client that drops the channel mid-download: the record gives a reason a person
    can read, never an exception's class name."""
    (site.area("outbox") / "big.bin").write_bytes(os.urandom(4 << 20))

    async def scenario() -> None:
        async with site.connect() as conn:
            process = await conn.create_process("scp -f /outbox/big.bin", encoding=None)
            process.stdin.write(b"\0")
            header = await process.stdout.readuntil(b"\n")
            assert header.startswith(b"C0")
            process.stdin.write(b"\0")
            await process.stdout.readexactly(1024)
            process.close()  # the channel goes, mid-file

    site.call(scenario())

    def failed() -> list[dict[str, Any]]:
        return [
            r for r in records(site) if r["type"] == "file.download" and r["outcome"] == "failed"
        ]

    assert wait_for(failed, timeout=10)
    (record,) = failed()
    assert record["error"] in (
        "transfer interrupted: connection lost",
        "transfer interrupted: session ended",
    ), record
    assert verified(site)


# -- the same rule through SFTP --------------------------------------------------------


def test_sftp_refuses_the_same_names_for_writes_and_rename_targets(site: RunningGateway) -> None:
    import asyncssh

    async def scenario() -> list[str]:
        refused = []
        async with site.connect() as conn, conn.start_sftp_client() as sftp:
            async with sftp.open("/inbox/ok.txt", "wb") as f:
                await f.write(b"ok")
            for name in [*BAD_NAMES, BAD_FOLDER]:
                target = "/inbox/" + name.decode()
                for attempt in (
                    sftp.open(target, "wb"),
                    sftp.rename("/inbox/ok.txt", target),
                    sftp.posix_rename("/inbox/ok.txt", target),
                    sftp.mkdir(target),
                ):
                    try:
                        await attempt
                    except asyncssh.SFTPError as exc:
                        refused.append(str(exc.reason))
        return refused

    refused = site.call(scenario())
    assert len(refused) == 4 * (len(BAD_NAMES) + 1)
    assert all("control characters" in reason for reason in refused)
    assert every_name(site.area("inbox")) == ["ok.txt"]


def test_names_made_outside_the_gateway_are_not_shown(site: RunningGateway, tmp_path: Path) -> None:
    inbox = site.area("inbox")
    (inbox / "plain.txt").write_bytes(b"plain")
    (inbox / "esc\x1b[31m.txt").write_bytes(b"planted")
    (inbox / "rlo\u202etxt.exe").write_bytes(b"planted")

    async def listing() -> list[str]:
        async with site.connect() as conn, conn.start_sftp_client() as sftp:
            return sorted(await sftp.listdir("/inbox"))

    assert [n for n in site.call(listing()) if n not in (".", "..")] == ["plain.txt"]
    out = tmp_path / "out"
    result = site.scp("-r", ":/inbox", str(out), legacy=True)
    assert result.returncode == 0, result.stderr
    assert every_name(out) == ["plain.txt"]


@pytest.mark.parametrize("legacy", [True, False], ids=["legacy-scp", "sftp-mode"])
def test_real_scp_target_path_with_a_bad_name_is_refused(
    site: RunningGateway, legacy: bool, tmp_path: Path
) -> None:
    src = tmp_path / "fine.txt"
    src.write_bytes(b"fine")
    result = site.scp(str(src), ":/inbox/invoice\u202etxt.exe", legacy=legacy)
    assert result.returncode != 0
    assert every_name(site.area("inbox")) == []
    if legacy:  # scp -O shows the text; SFTP mode only the status code's name
        assert "file name not allowed" in result.stderr
        assert denials(site, "file name not allowed")[0]["operation"] == "scp -t"
    assert verified(site)


def test_source_sends_times_a_peer_can_parse(site: RunningGateway) -> None:
    """A file dated after 2106 (or before 1970) goes out with the nearest time."""
    path = site.area("inbox") / "future.txt"
    path.write_bytes(b"x")
    os.utime(path, (2**33, 2**33))

    async def scenario() -> bytes:
        async with site.connect() as conn:
            process = await conn.create_process("scp -p -f /inbox/future.txt", encoding=None)
            process.stdin.write(b"\0")
            line = await process.stdout.readline()
            process.close()
            return bytes(line)

    assert site.call(scenario()) == b"T4294967295 0 4294967295 0\n"
