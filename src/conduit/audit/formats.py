"""Record formatters for SIEMs: RFC 5424 syslog (JSON payload) and ArcSight CEF.

Pure functions over a record (a dict from the journal); no I/O. Whatever a
client sent as a user name, path or version string, the output stays one
line and one frame: RFC 5424 carries the canonical JSON record (ASCII, every
control character escaped), CEF escapes ``\\``, ``|`` (header), ``=``
(extension), CR and LF as the CEF spec says, and every other control,
bidirectional control (U+202E...) or unencodable character as ``\\uXXXX``
(unambiguous, since a literal backslash is always doubled). :func:`parse_cef`
reverses it.
"""

from __future__ import annotations

import ipaddress
import json
import re
from datetime import datetime

from conduit import __version__
from conduit.audit.events import Record, encode
from conduit.names import CONTROLS

FACILITY_LOG_AUDIT = 13
#: IANA's example private enterprise number (RFC 5612); SD-ID is "conduit@32473".
SD_ID = "conduit@32473"
BOM = b"\xef\xbb\xbf"


def syslog_severity(record: Record) -> int:
    if record.get("severity") == "alert":
        return 1  # alert: e.g. a device's host key no longer matches (relay)
    if record["type"] == "audit.alert":
        return 2  # critical
    return {"failed": 3, "denied": 4}.get(record["outcome"], 6)


_NOT_PRINTUSASCII = re.compile(r"[^\x21-\x7e]")


def _printusascii(text: str, limit: int) -> str:
    """RFC 5424 header fields: PRINTUSASCII only (every other character becomes _)."""
    text = text[:limit]
    if text.isascii() and text.isprintable() and " " not in text:
        return text or "-"  # the usual case (a time stamp, a type), without the regex
    return _NOT_PRINTUSASCII.sub("_", text) or "-"


def _sd_value(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def rfc5424(record: Record, app: str = "conduit", line: bytes | None = None) -> bytes:
    """One RFC 5424 message (no framing): SD with seq/type/outcome, MSG the JSON record.

    ``line``: the record's canonical journal line, when at hand (saves encoding it again).
    """
    body = encode(record) if line is None else line
    type_, outcome, node = record["type"], record["outcome"], record["node"]
    if type(type_) is not str or type(outcome) is not str or type(node) is not str:
        return _header(record, app, record["seq"]).encode("ascii") + BOM + body  # the long way
    if type(app) is not str:  # (not from this gateway's journal, or not its app name)
        return _header(record, app, record["seq"]).encode("ascii") + BOM + body
    key = (type_, outcome, node, app, record.get("severity") == "alert")
    parts = _HEADS.get(key)
    if parts is None:
        # Everything but the time stamp and seq is the same for every record of
        # one type and outcome from one node: a tree's thousands of records
        # format it once. (Bounded: a few dozen types and outcomes, one node.)
        if len(_HEADS) >= 1024:
            _HEADS.clear()
        head = _header(record, app, _SEQ)
        at = head.index(" ", head.index(" ") + 1)  # after "<PRI>1 TIMESTAMP"
        pri_version, rest = head[: head.index(" ") + 1], head[at:]
        before_seq, after_seq = rest.split(_SEQ)
        parts = _HEADS[key] = (pri_version, before_seq, after_seq)
    ts = record["ts"]
    # _printusascii's own test, without its call: a stamp this journal wrote passes
    if type(ts) is not str or not 0 < len(ts) <= 64 or " " in ts or not ts.isascii():
        ts = _printusascii(str(ts), 64)
    elif not ts.isprintable():
        ts = _printusascii(ts, 64)
    return f"{parts[0]}{ts}{parts[1]}{record['seq']}{parts[2]}".encode("ascii") + BOM + body


#: (type, outcome, node, app, severity) -> the header around its time stamp and seq.
_HEADS: dict[tuple[object, ...], tuple[str, str, str]] = {}
_SEQ = "\x00seq\x00"  # a stand-in no header field can hold (PRINTUSASCII only)


def _header(record: Record, app: str, seq: object) -> str:
    """The RFC 5424 header and structured data, up to the BOM."""
    pri = FACILITY_LOG_AUDIT * 8 + syslog_severity(record)
    sd = '[{} seq="{}" type="{}" outcome="{}"]'.format(
        SD_ID,
        seq,
        _sd_value(_printusascii(str(record["type"]), 64)),
        _sd_value(_printusascii(str(record["outcome"]), 32)),
    )
    return "<{}>1 {} {} {} - {} {} ".format(
        pri,
        _printusascii(str(record["ts"]), 64),
        _printusascii(str(record["node"]), 255),
        _printusascii(app, 48),
        _printusascii(str(record["type"]), 32),
        sd,
    )


def octet_counted(message: bytes) -> bytes:
    """RFC 6587 octet-counting framing (also RFC 5425 over TLS): ``LEN SP MSG``."""
    return str(len(message)).encode("ascii") + b" " + message


_RFC5424 = re.compile(
    rb"^<(\d{1,3})>1 (\S+) (\S+) (\S+) (\S+) (\S+) (\[.*?(?<!\\)\]) \xef\xbb\xbf(.*)$", re.S
)


def parse_rfc5424(message: bytes) -> tuple[int, str, Record]:
    """(PRI, SD, record) of a message :func:`rfc5424` made; ValueError if it is not one."""
    m = _RFC5424.match(message)
    if not m:
        raise ValueError("not an RFC 5424 message from conduit")
    return int(m.group(1)), m.group(7).decode("ascii"), json.loads(m.group(8))


# -- CEF ---------------------------------------------------------------------------

CEF_SEVERITY = {"started": 1, "intent": 1, "success": 3, "denied": 6, "failed": 7}

#: record field -> CEF key, with the label for custom keys.
CEF_KEYS: dict[str, tuple[str, str | None]] = {
    "principal": ("suser", None),
    "user_given": ("duser", None),
    "path": ("filePath", None),
    "old_path": ("oldFilePath", None),
    "bytes": ("fsize", None),
    "sha256": ("fileHash", None),
    "reason": ("reason", None),
    "error": ("msg", None),
    "protocol": ("app", None),
    "client_version": ("requestClientApplication", None),
    "bytes_in": ("in", None),
    "bytes_out": ("out", None),
    "zone": ("cs1", "sourceZone"),
    "session": ("cs2", "session"),
    "rule": ("cs3", "rule"),
    "target_zone": ("cs4", "targetZone"),
    "transfer": ("cs5", "transfer"),
    "duration": ("cfp1", "durationSeconds"),
}
_HEADER_SKIP = {"seq", "ts", "node", "type", "outcome", "prev", "source"}
# Controls, bidi controls and marks (Trojan Source), line separators, bad bytes:
# the characters the name rule refuses, so no CEF viewer reorders or recolours.
_CTRL = re.compile(f"[{CONTROLS}]")


def _u(m: re.Match[str]) -> str:
    c = m.group(0)
    special = {"\n": "\\n", "\r": "\\r"}.get(c)
    if special:
        return special
    code = ord(c)
    if code > 0xFFFF:  # beyond the BMP (e.g. U+E0001, a tag): as its UTF-16 pair
        code -= 0x10000
        return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"
    return f"\\u{code:04x}"


def cef_header_escape(text: str) -> str:
    return _CTRL.sub(_u, text.replace("\\", "\\\\").replace("|", "\\|"))


def cef_value_escape(text: str) -> str:
    return _CTRL.sub(_u, text.replace("\\", "\\\\").replace("=", "\\="))


def _rt(ts: str) -> str:
    try:
        return str(int(datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() * 1000))
    except ValueError:
        return "0"


def cef(record: Record, vendor: str = "Conduit", product: str = "Conduit Gateway") -> str:
    """One CEF:0 line (no newline). Unmapped fields go, as JSON, into cs6 ("extra")."""
    type_, outcome = str(record["type"]), str(record["outcome"])
    severity = 9 if type_ == "audit.alert" else CEF_SEVERITY.get(outcome, 5)
    if record.get("severity") == "alert":
        severity = 10
    header = [
        "CEF:0",
        vendor,
        product,
        __version__,
        type_,
        f"{type_} {outcome}",
        str(severity),
    ]
    ext: list[tuple[str, str]] = [
        ("rt", _rt(str(record["ts"]))),
        ("dvchost", str(record["node"])),
        ("externalId", str(record["seq"])),
        ("act", type_),
        ("outcome", outcome),
    ]
    source = record.get("source")
    if source is not None:
        try:
            ipaddress.ip_address(str(source))
            ext.append(("src", str(source)))
        except ValueError:
            ext.append(("shost", str(source)))
    extra: dict[str, object] = {}
    for name, value in record.items():
        if name in _HEADER_SKIP or value is None:
            continue
        mapped = CEF_KEYS.get(name)
        if mapped is None:
            extra[name] = value
            continue
        key, label = mapped
        if label:
            ext.append((f"{key}Label", label))
        ext.append((key, value if isinstance(value, str) else json.dumps(value)))
    if extra:
        ext.append(("cs6Label", "extra"))
        ext.append(("cs6", json.dumps(extra, sort_keys=True, separators=(",", ":"))))
    head = "|".join(cef_header_escape(h) if i else h for i, h in enumerate(header))
    return head + "|" + " ".join(f"{k}={cef_value_escape(v)}" for k, v in ext)


_ESC = re.compile(r"\\(u[0-9a-fA-F]{4}|.)", re.S)


def _unescape(text: str) -> str:
    def sub(m: re.Match[str]) -> str:
        c = m.group(1)
        if c.startswith("u") and len(c) == 5:
            return chr(int(c[1:], 16))
        return {"n": "\n", "r": "\r"}.get(c, c)

    # a pair of \\u escapes beyond the BMP back to its one character; a lone
    # surrogate (an undecodable byte kept by surrogateescape) stays as it is
    return _PAIR.sub(_joined, _ESC.sub(sub, text))


_PAIR = re.compile("[\ud800-\udbff][\udc00-\udfff]")


def _joined(m: re.Match[str]) -> str:
    high, low = (ord(c) for c in m.group(0))
    return chr(0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00))


def parse_cef(line: str) -> tuple[list[str], dict[str, str]]:
    """(7 header fields, extension dict) of a CEF line, escapes undone."""
    header: list[str] = []
    i = start = 0
    while len(header) < 7:
        if i >= len(line):
            raise ValueError("CEF header has fewer than 7 fields")
        c = line[i]
        if c == "\\":
            i += 2
            continue
        if c == "|":
            header.append(_unescape(line[start:i]))
            start = i + 1
        i += 1
    ext_text = line[start:]
    seps = []  # positions of unescaped "="
    j = 0
    while j < len(ext_text):
        if ext_text[j] == "\\":
            j += 2
            continue
        if ext_text[j] == "=":
            seps.append(j)
        j += 1
    ext: dict[str, str] = {}
    keys: list[tuple[int, int]] = []  # (key start, "=" position)
    for pos in seps:
        k = pos
        while k > 0 and (ext_text[k - 1].isalnum() or ext_text[k - 1] == "_"):
            k -= 1
        keys.append((k, pos))
    for n, (kstart, eq) in enumerate(keys):
        end = keys[n + 1][0] - 1 if n + 1 < len(keys) else len(ext_text)
        ext[ext_text[kstart:eq]] = _unescape(ext_text[eq + 1 : end])
    return header, ext
