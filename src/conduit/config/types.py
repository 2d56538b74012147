"""Strict value types for the policy file: sizes, durations and networks.

pydantic's own ``ByteSize`` reads only the start of a string, so
``max_size = "600 MB?"`` or ``"600 MB per file"`` silently meant 600 MB; a
typo in a limit must be an error, not a guess. Its network types try IPv4 and
then IPv6 and report both failures in validator jargon; an administrator
needs one sentence: "host bits set" or "not a network".
"""

from __future__ import annotations

import re
from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Annotated

from pydantic import BeforeValidator, ByteSize

Network = IPv4Network | IPv6Network

_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*")
SIZE_HELP = 'a size like "600MB", "1.5GiB" or a number of bytes'


def parse_size(value: object) -> int:
    """Bytes in ``value`` (an int, or a number and a unit); ValueError otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"must be {SIZE_HELP}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("must not be negative")
        return value
    match = _SIZE.fullmatch(value)
    if match is None:
        raise ValueError(f"{value!r} is not {SIZE_HELP}")
    number, unit = match.groups()
    factor = ByteSize.byte_sizes.get(unit.lower() or "b")
    if factor is None:
        units = "B, KB, MB, GB, TB, KiB, MiB, GiB, TiB"
        raise ValueError(f"{value!r}: unknown unit {unit!r} (use {units})")
    return int(float(number) * factor)


_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|)\s*")
_SECONDS = {"ms": 0.001, "": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
DURATION_HELP = 'a duration like "90s", "15m", "2h", "1d" or a number of seconds'


def parse_duration(value: object) -> float:
    """Seconds in ``value`` (a number, or a number and ms/s/m/h/d); ValueError otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"must be {DURATION_HELP}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.fullmatch(value)
        if match is None:
            raise ValueError(f"{value!r} is not {DURATION_HELP}")
        seconds = float(match[1]) * _SECONDS[match[2]]
    if seconds < 0:
        raise ValueError("must not be negative")
    return seconds


def _size(value: object) -> object:
    return ByteSize(parse_size(value))


def _network(value: object) -> object:
    if isinstance(value, IPv4Network | IPv6Network):
        return value
    if not isinstance(value, str):
        raise ValueError('must be a network in CIDR notation, e.g. "10.10.0.0/16"')
    try:
        return ip_network(value.strip(), strict=True)
    except ValueError:
        pass
    try:
        network = ip_network(value.strip(), strict=False)
    except ValueError:
        raise ValueError(
            f"{value!r} is not a network (CIDR notation, e.g. 10.10.0.0/16 or fd00::/64)"
        ) from None
    raise ValueError(f"{value!r} has host bits set: the network is {network}")


Size = Annotated[ByteSize, BeforeValidator(_size)]
"""Bytes: an integer, or a number and a unit (KB, MiB, ...) and nothing else."""

Duration = Annotated[float, BeforeValidator(parse_duration)]
"""Seconds: a number, or a number and a unit (ms, s, m, h, d) and nothing else."""

CheckedNetwork = Annotated[Network, BeforeValidator(_network)]
"""An IPv4 or IPv6 network; host bits set or anything else is one plain error."""
