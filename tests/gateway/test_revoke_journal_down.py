"""A reload revokes a session while the journal refuses the revocation's record.

The revocation is protective: the connection is cut in the step that marks
it, whatever the journal then does with ``session.revoke``. The open upload
is aborted (nothing under its final name, no temp file) and its records say
so: storage and journal agree.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from tests.support.gateway import MemoryRecorder, RunningGateway, policy_text, wait_for


class RevokeRefused(MemoryRecorder):
    """A journal that cannot write the ``session.revoke`` record (its disk failed then)."""

    async def record(self, type: str, outcome: str, **fields: Any) -> None:
        if type == "session.revoke":
            raise OSError(5, "Input/output error")
        await super().record(type, outcome, **fields)


def test_a_revocation_cuts_the_session_though_its_record_fails(
    make_gateway: Callable[..., RunningGateway],
) -> None:
    gw = make_gateway(recorder=RevokeRefused())
    source = gw.config.source
    assert source is not None
    source.write_text(policy_text(gw.root, gw.keys))

    async def scenario() -> list[dict[str, str]]:
        async with gw.connect() as conn, conn.start_sftp_client() as sftp:
            upload = await sftp.open("/inbox/cut.bin", "wb")
            await upload.write(b"x" * 100_000)  # open, bytes in, not committed
            source.write_text(
                policy_text(gw.root, gw.keys, '\n[auth.second_factor]\ntotp_users = ["alice"]\n')
            )
            result = await gw.gateway.reload_policy()
            await asyncio.wait_for(conn.wait_closed(), 10)  # cut, record or not
            return list(result.revoked)

    revoked = gw.call(scenario())
    assert [r["principal"] for r in revoked] == ["alice"]
    assert not gw.recorder.of("session.revoke")  # the journal refused it

    def outcomes() -> list[str]:
        uploads = gw.recorder.of("file.upload")
        return [e["outcome"] for e in uploads if e.get("path") == "/inbox/cut.bin"]

    # The session's clean-up aborts the upload after the socket is cut: wait for it.
    assert wait_for(lambda: outcomes() == ["started", "failed"] and gw.recorder.of("session.end"))
    inbox = gw.area("inbox")
    assert sorted(p.name for p in inbox.iterdir()) == []  # no file, no temp name
