"""The event schema and its one canonical serialisation.

A record is a flat JSON object. Its canonical form (sorted keys, no spaces,
ASCII only) is what is written as one journal line and what the hash chain
covers, so the same record always hashes the same and no value -- whatever a
client sent as a user name, path or version string -- can put a line break,
a control character or a non-ASCII byte into the line: ``json`` escapes them
all as ``\\uXXXX``. Bytes that are not valid UTF-8 are kept exactly as lone
surrogates (``surrogateescape``), so ``value.encode("utf-8", "surrogateescape")``
gives back the original bytes.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

#: ``prev`` of the very first record of a journal.
GENESIS = "0" * 64

#: Keys every record has; the per-type fields may not reuse them.
RESERVED = frozenset({"seq", "ts", "node", "type", "outcome", "prev"})


class EventType(StrEnum):
    """What happened. A member is a ``str``: ``record()`` takes either, the
    journal holds the text; the enum is the list of types the gateway writes."""

    SESSION_START = "session.start"
    SESSION_END = "session.end"
    AUTH_FAILURE = "auth.failure"
    AUTH_TOTP_ENROL = "auth.totp_enrol"  # a TOTP secret given or replaced (never the secret)
    FILE_UPLOAD = "file.upload"
    FILE_DOWNLOAD = "file.download"
    FILE_DELETE = "file.delete"
    FILE_RENAME = "file.rename"
    DIR_CREATE = "dir.create"
    DIR_DELETE = "dir.delete"
    FILE_TIMES = "file.times"
    STORAGE_SWEEP = "storage.sweep"
    ACCESS_DENIED = "access.denied"
    POLICY_RELOAD = "policy.reload"
    SESSION_REVOKE = "session.revoke"
    DEVICE_CONNECT = "device.connect"
    DEVICE_CLOSE = "device.close"
    GATEWAY_START = "gateway.start"
    GATEWAY_STOP = "gateway.stop"
    AUDIT_ALERT = "audit.alert"
    AUDIT_CHECKPOINT = "audit.checkpoint"
    DEFENDER_BAN = "defender.ban"
    DEFENDER_UNBAN = "defender.unban"
    FILE_QUARANTINED = "file.quarantined"  # an upload's checks answered; the item's state
    FILE_EVIDENCE = "file.evidence"  # a signature or manifest kept with its files
    FILE_COMMIT = "file.commit"  # a quarantined file put under its final name
    QUARANTINE_DECISION = "quarantine.decision"  # approve, reject, release, purge
    QUARANTINE_EXPIRE = "quarantine.expire"  # grace or approval time passed; superseded


EVENT_TYPES = frozenset(t.value for t in EventType)


class EventOutcome(StrEnum):
    """How it ended. ``intent``: an effect on storage is about to happen
    (write-ahead); its ``success``/``failed`` record with the same ``intent``
    (or ``transfer``) follows."""

    SUCCESS = "success"
    DENIED = "denied"
    FAILED = "failed"
    STARTED = "started"
    INTENT = "intent"


OUTCOMES = frozenset(o.value for o in EventOutcome)

#: The fields the gateway passes, in the order tables and CSV show them.
FIELDS = (
    "principal",
    "source",
    "zone",
    "session",
    "protocol",
    "client_version",
    "auth_method",
    "key_fingerprint",
    "bytes_in",
    "bytes_out",
    "user_given",
    "reason",
    "path",
    "area",
    "device",
    "target_zone",
    "bytes",
    "duration",
    "sha256",
    "rule",
    "operation",
    "error",
    "transfer",
    "old_path",
    "new_path",
    "intent",
    "atime",
    "mtime",
)

Value = str | int | float | bool | None | list[str]
Record = dict[str, Any]

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_TYPE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")


def utc_now() -> str:
    """The current UTC time with microseconds, e.g. ``2026-11-24T10:42:03.123456Z``.

    The text up to the second is formatted once per second (every record is
    stamped, and the datetime way cost more than hashing the record).
    """
    global _SECOND
    seconds, micros = divmod(time.time_ns() // 1000, 1_000_000)
    cached = _SECOND  # one tuple: threads that stamp records see a matching pair
    if cached[0] != seconds:
        text = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _SECOND = cached = (seconds, text)
    return f"{cached[1]}.{micros:06d}Z"


_SECOND: tuple[int, str] = (-1, "")


def clean_value(value: object) -> Value:
    """A field value as JSON can hold it, without losing what the client sent."""
    kind = type(value)
    if kind is str or kind is int or value is None:  # nearly every field: no more checks
        return value  # type: ignore[return-value]
    if isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return list(value)  # a short list of names, e.g. a login's factors
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "surrogateescape")
    return str(value)


def check_event(
    type_: str, outcome: str, fields: dict[str, object], *, skip_none: bool = False
) -> dict[str, Value]:
    """Validate the parts of an event the caller controls; return cleaned fields
    (``skip_none``: without the fields whose value is None).

    These are programming errors (not untrusted input), so they raise ValueError.
    """
    if type_ not in _GOOD_TYPES:
        if not _TYPE.match(type_):
            raise ValueError(f"bad event type {type_!r}")
        if len(_GOOD_TYPES) < 256:
            _GOOD_TYPES.add(type_)
    if outcome not in OUTCOMES:
        raise ValueError(f"bad outcome {outcome!r}: one of {sorted(OUTCOMES)}")
    cleaned: dict[str, Any] = {}  # Value, typed Any: no cast() call per field
    for name, value in fields.items():
        kind = type(value)  # clean_value's own first test, without the call
        if kind is not str and kind is not int:
            if value is None:
                if skip_none:
                    continue
            else:
                value = clean_value(value)
        if name not in _GOOD_NAMES:
            if name in RESERVED or not _NAME.match(name):
                raise ValueError(f"bad field name {name!r}")
            if len(_GOOD_NAMES) < 256:
                _GOOD_NAMES.add(name)
        cleaned[name] = value
    return cleaned


#: Field names and event types already checked (they come from code: a few
#: dozen, checked once each).
_GOOD_NAMES: set[str] = set()
_GOOD_TYPES: set[str] = set()


def build(
    seq: int, ts: str, node: str, type_: str, outcome: str, fields: dict[str, Value], prev: str
) -> Record:
    """One record: the fixed header, the per-type fields, the chain link; its keys
    in sorted order, the line's order, so :func:`encode_sorted` and the journal's
    readers (see recent.py) need not sort them again."""
    record: Record = dict(fields)
    record.update(seq=seq, ts=ts, node=node, type=type_, outcome=outcome, prev=prev)
    return dict(sorted(record.items()))


def encode(record: Record) -> bytes:
    """The canonical form: one ASCII line (without the newline)."""
    if _C_ENCODE is not None and type(record) is dict:
        return "".join(_C_ENCODE(record, 0)).encode("ascii")
    return json.dumps(
        record, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def encode_sorted(record: Record) -> bytes:
    """:func:`encode` for a record whose keys are already in sorted order (what
    :func:`build` makes): the same bytes, without sorting them a second time."""
    if _C_ENCODE_SORTED is not None and type(record) is dict:
        return "".join(_C_ENCODE_SORTED(record, 0)).encode("ascii")
    return encode(record)


def _c_encoder(sort_keys: bool = True) -> Any:
    """What ``json.dumps`` with :func:`encode`'s arguments builds for every call,
    built once: the same C encoder with the same settings, so the same bytes.
    (No circular-reference bookkeeping: a record is a flat dict of values.)
    ``sort_keys=False``: for a dict whose keys are in sorted order already."""
    c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
    c_escape = getattr(json.encoder, "c_encode_basestring_ascii", None)
    if c_make_encoder is None or c_escape is None:
        return None
    stdlib = json.JSONEncoder(sort_keys=True, separators=(",", ":"), allow_nan=False)
    return c_make_encoder(None, stdlib.default, c_escape, None, ":", ",", sort_keys, False, False)


_C_ENCODE = _c_encoder()
_C_ENCODE_SORTED = _c_encoder(sort_keys=False)


def digest(line: bytes) -> str:
    """SHA-256 (hex) of a canonical line: what the next record carries as ``prev``."""
    return hashlib.sha256(line).hexdigest()


def decode(line: bytes) -> Record:
    """Parse one journal line; ValueError if it is not a well-formed record."""
    try:
        record = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not JSON ({exc.__class__.__name__})") from None
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    seq = record.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        raise ValueError("no valid seq")
    for key in ("ts", "node", "type", "outcome", "prev"):
        if not isinstance(record.get(key), str):
            raise ValueError(f"no valid {key}")
    return record
