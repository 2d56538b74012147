"""Only the SFTP subsystem and plain scp -t/-f are served; everything else is refused and logged."""

from __future__ import annotations

import pytest

from conduit.scpcodec import ScpProtocolError, parse_command
from tests.support.gateway import RunningGateway


@pytest.mark.parametrize(
    "command",
    [
        "bash",
        "sh -c id",
        "rsync --server -vlogDtpre.iLsfxC . /inbox",
        "scp -t '/x;id'",
        "scp -t /inbox/x;id",
        "scp -t /inbox/$(id)",
        "scp -t /inbox/`id`",
        "scp -t /inbox/x | nc 127.0.0.1 9",
        "scp -t /inbox/x > /tmp/y",
        "scp -f /inbox/a /inbox/b",
        "scp -t -f /inbox",
        "scp -x -t /inbox",
        "scp",
        "echo scp -t /inbox",
        "internal-sftp",
    ],
)
def test_bad_exec_refused_and_logged(gw: RunningGateway, command: str) -> None:
    result = gw.ssh(command)
    assert result.returncode != 0
    denied = gw.recorder.of("access.denied")
    if command.startswith("scp -t '/x;id'"):
        # Quoted, this is a legitimate (odd) file name; it is refused because
        # "/x;id" is in no area, before any byte is accepted.
        assert any(e["path"] == "/x;id" for e in denied), denied
        return
    assert any(e.get("operation") == "exec" and e["path"] == command for e in denied), denied


def test_no_shell(gw: RunningGateway) -> None:
    result = gw.ssh(extra=("-T",))
    assert result.returncode != 0
    assert any(e["path"] == "(shell)" for e in gw.recorder.of("access.denied"))


def test_no_other_subsystem(gw: RunningGateway) -> None:
    result = gw.ssh("netconf", extra=("-s",))
    assert result.returncode != 0


def test_no_port_forwarding(gw: RunningGateway) -> None:
    result = gw.ssh("-N", extra=("-o", "ExitOnForwardFailure=yes", "-L", "0:127.0.0.1:22"))
    assert result.returncode != 0


def test_compression_request_falls_back_to_none(gw: RunningGateway, tmp_path) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "z.txt"
    src.write_bytes(b"0" * 100_000)
    result = gw.scp(str(src), ":/inbox/", extra=("-C",))
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("command", "source", "path", "recursive", "preserve", "must_be_dir"),
    [
        ("scp -t /inbox", False, "/inbox", False, False, False),
        ("scp -f /outbox/a.csv", True, "/outbox/a.csv", False, False, False),
        ("scp -r -p -d -t -- /inbox/x", False, "/inbox/x", True, True, True),
        ("scp -v -rpt /inbox", False, "/inbox", True, True, False),
        ("scp -t -- -leading", False, "-leading", False, False, False),
        ("scp -t '/inbox/with space'", False, "/inbox/with space", False, False, False),
        ("scp -t '/x;id'", False, "/x;id", False, False, False),
    ],
)
def test_parse_command_accepts_openssh_shapes(
    command: str, source: bool, path: str, recursive: bool, preserve: bool, must_be_dir: bool
) -> None:
    parsed = parse_command(command)
    assert (parsed.source, parsed.path, parsed.recursive, parsed.preserve, parsed.must_be_dir) == (
        source,
        path,
        recursive,
        preserve,
        must_be_dir,
    )


@pytest.mark.parametrize(
    "command",
    [
        "scp -t /x;id",
        "scp -t $HOME",
        "scp -t a\nid",
        "scp -t 'unbalanced",
        "scp -t a b",
        "scp -tf x",
        "scp x",
        "scpx -t x",
        "scp -t /a&&id",
        "scp -t (x)",
    ],
)
def test_parse_command_refuses(command: str) -> None:
    with pytest.raises(ScpProtocolError):
        parse_command(command)
