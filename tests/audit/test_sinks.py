"""SIEM delivery against a real syslog listener on loopback."""

import asyncio
import time

import pytest

from conduit.audit.formats import parse_cef, parse_rfc5424
from conduit.audit.sinks import LINGER
from conduit.config.model import SiemSink

from .syslog_listener import Listener, make_pki, server_context

HOSTILE = "evil\r\n<13>1 - fake|cef=1\\ \x1b[31m"


def seqs(listener: Listener, fmt: str = "rfc5424") -> list[int]:
    out = []
    for m in listener.messages:
        if fmt == "cef":
            out.append(int(parse_cef(m.decode())[1]["externalId"]))
        else:
            out.append(parse_rfc5424(m)[2]["seq"])
    return out


def deduped(values: list[int]) -> list[int]:
    seen, out = set(), []
    for v in values:
        if v not in seen:
            seen.add(v)
            out.append(v)
    return out


@pytest.fixture
def pki(tmp_path):
    d = tmp_path / "pki"
    d.mkdir()
    return make_pki(d)


@pytest.mark.parametrize("kind", ["udp", "tcp", "tls"])
@pytest.mark.parametrize("fmt", ["rfc5424", "cef"])
async def test_events_reach_a_real_listener(make_auditor, pki, kind, fmt):
    ctx = server_context(pki) if kind == "tls" else None
    listener = await Listener(kind, ctx).start()
    sink = SiemSink(target=listener.target, format=fmt, ca=pki["ca.crt"] if ctx else None)
    auditor = await make_auditor(siem=[sink])
    for i in range(20):
        await auditor.record("file.upload", "success", principal=HOSTILE, path=f"/fw/{i}.bin")
    await listener.wait_for(21)
    await auditor.close()
    await listener.stop()
    assert seqs(listener, fmt)[:21] == list(range(1, 22))
    # seq 1 is the signed checkpoint written at open: checkpoints reach the SIEM too
    if fmt == "cef":
        assert parse_cef(listener.messages[0].decode())[1]["act"] == "audit.checkpoint"
        assert parse_cef(listener.messages[1].decode())[1]["suser"] == HOSTILE
    else:
        assert parse_rfc5424(listener.messages[0])[2]["reason"] == "start"
        assert parse_rfc5424(listener.messages[1])[2]["principal"] == HOSTILE


@pytest.mark.parametrize("kind", ["udp", "tcp"])
async def test_a_burst_is_read_and_sent_in_a_few_batches(make_auditor, monkeypatch, kind):
    """One client's tree of small files: the sink must not chase it event by event."""
    from conduit.audit.reader import JournalReader

    reads = 0
    real = JournalReader.read_lines_after

    def counting(self, after, limit=1000):
        nonlocal reads
        found = real(self, after, limit)
        reads += bool(found)
        return found

    monkeypatch.setattr(JournalReader, "read_lines_after", counting)
    listener = await Listener(kind).start()
    auditor = await make_auditor(siem=[SiemSink(target=listener.target)])
    started = time.monotonic()
    for i in range(300):
        await auditor.record("file.upload", "success", path=f"/tree/{i}.cfg")
        await asyncio.sleep(0.0002)  # the client's round trip before its next file
    burst = time.monotonic() - started
    await listener.wait_for(300)
    await auditor.close()
    await listener.stop()
    assert seqs(listener)[:300] == list(range(1, 301))
    # One read per linger window of the burst (a busy machine makes the burst
    # longer, so more windows), never one per event.
    windows = burst / LINGER
    assert reads <= windows + 3, f"{reads} reads for 300 events in {burst:.2f} s"
    assert reads < 100, f"{reads} journal reads with events for 300 events"


async def test_tls_with_client_certificate(make_auditor, pki):
    listener = await Listener("tls", server_context(pki, client_ca=True)).start()
    sink = SiemSink(
        target=listener.target, ca=pki["ca.crt"], cert=pki["client.crt"], key=pki["client.key"]
    )
    auditor = await make_auditor(siem=[sink])
    await auditor.record("gateway.start", "success")
    await listener.wait_for(1)
    await auditor.close()
    await listener.stop()


async def test_several_sinks_at_once(make_auditor, pki):
    a = await Listener("udp").start()
    b = await Listener("tcp").start()
    c = await Listener("tls", server_context(pki)).start()
    auditor = await make_auditor(
        siem=[
            SiemSink(target=a.target),
            SiemSink(target=b.target, format="cef"),
            SiemSink(target=c.target, ca=pki["ca.crt"]),
        ]
    )
    for _ in range(5):
        await auditor.record("session.start", "success", principal="alice")
    for listener in (a, b, c):
        await listener.wait_for(5)
    await auditor.close()
    for listener in (a, b, c):
        await listener.stop()
    assert seqs(b, "cef")[:5] == seqs(c)[:5] == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("kind", ["tcp", "tls"])
async def test_siem_down_then_back_nothing_lost_in_order(make_auditor, pki, kind):
    ctx = server_context(pki) if kind == "tls" else None
    listener = await Listener(kind, ctx).start()
    port = listener.port
    sink = SiemSink(target=listener.target, ca=pki["ca.crt"] if ctx else None)
    auditor = await make_auditor(siem=[sink])
    for i in range(10):
        await auditor.record("file.download", "success", path=f"/logs/{i}")
    await listener.wait_for(10)
    await listener.stop()
    # the SIEM is down: transfers go on and are not slowed down
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    for i in range(10, 200):
        await auditor.record("file.download", "success", path=f"/logs/{i}")
    assert loop.time() - t0 < 5
    await asyncio.sleep(1.0)
    back = await Listener(kind, ctx).start(port)
    last = auditor.journal.seq

    async def all_there():
        while not back.messages or max(seqs(back)) < last:
            await asyncio.sleep(0.05)

    await asyncio.wait_for(all_there(), 20)
    await auditor.close()
    await back.stop()
    got = deduped(seqs(listener) + seqs(back))
    assert got == list(range(1, got[-1] + 1))  # every event, in order, none lost
    assert got[-1] >= 200
    alerts = [parse_rfc5424(m)[2] for m in back.messages]
    assert any(r["type"] == "audit.alert" and "unreachable" in r["reason"] for r in alerts)


async def test_bad_certificate_waits_then_delivers(make_auditor, pki):
    bad = await Listener("tls", server_context(pki, tag="stranger")).start()
    port = bad.port
    auditor = await make_auditor(siem=[SiemSink(target=bad.target, ca=pki["ca.crt"])])
    for _ in range(5):
        await auditor.record("auth.failure", "denied", user_given="root", reason="no such key")
    await asyncio.sleep(0.5)
    assert bad.messages == []
    await bad.stop()
    good = await Listener("tls", server_context(pki)).start(port)
    await good.wait_for(5, timeout=20)
    await auditor.close()
    await good.stop()
    assert deduped(seqs(good))[:5] == [1, 2, 3, 4, 5]


async def test_cursor_survives_a_restart(make_auditor, tmp_path):
    listener = await Listener("tcp").start()
    port = listener.port
    target = listener.target
    await listener.stop()
    a = await make_auditor(siem=[SiemSink(target=target, name="siem")])
    for _ in range(5):
        await a.record("session.start", "success")
    await a.close(timeout=0.5)
    assert (tmp_path / "audit" / "cursors" / "siem.json").exists()
    back = await Listener("tcp").start(port)
    b = await make_auditor(siem=[SiemSink(target=target, name="siem")])
    await back.wait_for(5)
    await b.close()
    await back.stop()
    assert deduped(seqs(back))[:5] == [1, 2, 3, 4, 5]


async def test_spool_fill_alert_while_siem_down(make_auditor, monkeypatch):
    from conduit.audit import sinks

    monkeypatch.setattr(sinks, "FILL_CHECK_INTERVAL", 0.05)
    monkeypatch.setattr(sinks, "journal_fill", lambda directory: 0.93)
    listener = await Listener("tcp").start()
    target = listener.target
    await listener.stop()
    auditor = await make_auditor(siem=[SiemSink(target=target)], spool_alert_fill=0.9)
    for _ in range(3):
        await auditor.record("session.start", "success")
    for _ in range(100):
        await asyncio.sleep(0.05)
        text = b"".join(p.read_bytes() for p in auditor.journal.directory.glob("*.jsonl"))
        if b"file system is 93% full" in text:
            break
    await auditor.close(timeout=0.2)
    assert b"event(s) waiting" in text
    assert b"file system is 93% full (alert at 90%)" in text


async def test_a_journal_line_is_the_message_the_sink_would_encode(make_auditor, tmp_path):
    """Sinks send the journal's own line as the RFC 5424 MSG: it must be the canonical one."""
    from conduit.audit.formats import rfc5424
    from conduit.audit.reader import JournalReader

    auditor = await make_auditor()
    for value in (HOSTILE, "plain", "é\u202e\x1b[31m", 'a\\b]c"d'):
        await auditor.record("file.upload", "success", principal=value, path=f"/x/{value}")
    await auditor.close()
    pairs = JournalReader(tmp_path / "audit").read_lines_after(0, 100)
    assert len(pairs) == 6  # the start checkpoint, four events and the closing checkpoint
    for record, line in pairs:
        assert rfc5424(record, line=line) == rfc5424(record)


@pytest.mark.parametrize("fmt", ["rfc5424", "cef"])
def test_a_batch_is_sent_as_each_message_octet_counted_in_order(tmp_path, fmt):
    """The stream a TCP/TLS sink writes for a batch is, byte for byte, each record's
    message octet-counted, in order (the way it was built before it was one join)."""
    from conduit.audit.checkpoint import load_or_create_key
    from conduit.audit.formats import octet_counted
    from conduit.audit.journal import Journal
    from conduit.audit.reader import JournalReader
    from conduit.audit.sinks import format_record, framed

    journal = Journal(tmp_path / "audit", "gw-1", load_or_create_key(tmp_path / "keys"))
    journal.open()
    for value in (HOSTILE, "plain", "é\u202e\x1b[31m", 'a\\b]c"d', "x" * 3000):
        journal.append([("file.upload", "success", {"principal": value, "path": "/x"}, None)])
    journal.append([("audit.alert", "failed", {"reason": HOSTILE, "severity": "alert"}, None)])
    pairs = JournalReader(journal.directory, journal.recall).read_lines_after(0, 100)
    assert len(pairs) == 6
    expected = b"".join(octet_counted(format_record(r, fmt, line)) for r, line in pairs)
    assert framed(pairs, fmt) == expected
    assert framed([], fmt) == b""
    journal.close()
