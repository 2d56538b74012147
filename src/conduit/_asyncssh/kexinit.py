"""Key exchange: a wrongly guessed first packet is ignored, and what was agreed is kept.

RFC 4253 section 7 lets a client send its first key-exchange packet right
after its KEXINIT, guessing the algorithms (``first_kex_packet_follows``).
The guess is right only if both sides prefer the same key exchange *and*
host key algorithm (the first of each list); otherwise the guessed packet
"MUST be silently ignored" and the client sends the right one. asyncssh
2.24.1 compares only the negotiated key exchange with the client's first,
so a client whose key exchange guess matched an algorithm the gateway
supports but does not prefer, or whose host key guess was wrong, had its
guess processed, then its real packet taken for a protocol violation, and
was disconnected during key exchange. :func:`process_kexinit` wraps
asyncssh's handler and applies the RFC's rule (as OpenSSH does), and records
the negotiated key exchange and host key algorithms as the connection's
``kex_algorithm`` and ``host_key_algorithm`` extra info (asyncssh records
only ciphers and MACs) for the audit trail. Installed by
:func:`conduit._asyncssh.tuning.apply`, removed by its ``revert``; the
asyncssh members used are in :data:`USES`, pinned in tests/test_tuning.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from asyncssh import connection as _connection
from asyncssh.constants import MSG_KEXINIT
from asyncssh.packet import SSHPacket

_SSHConnection = _connection.SSHConnection
ORIGINAL = _SSHConnection._process_kexinit
#: asyncssh's packet dispatch table as released (install() changes one entry).
HANDLERS: dict[int, Any] = dict(_SSHConnection._packet_handlers)

#: Private members used here besides ORIGINAL (``_kex``, ``_ignore_first_kex``
#: and the KEXINIT payloads are set in ``__init__``, pinned with the send path;
#: ``_recv_packet``, also pinned there, reads ``_ignore_first_kex``).
USES: dict[str, Any] = {
    "SSHConnection._packet_handlers": HANDLERS,
    "SSHConnection._send_kexinit": _SSHConnection._send_kexinit,
}


def _preferences(payload: bytes) -> tuple[Sequence[bytes], Sequence[bytes], bool]:
    """Key exchange and host key lists and ``first_kex_packet_follows`` of a
    KEXINIT payload (after the message type)."""
    packet = SSHPacket(payload)
    packet.get_bytes(16)  # cookie
    kex = packet.get_namelist()
    host_keys = packet.get_namelist()
    for _ in range(8):  # ciphers, MACs, compression (both ways), languages
        packet.get_namelist()
    return kex, host_keys, packet.get_boolean()


def _first(names: Sequence[bytes]) -> bytes | None:
    return names[0] if names else None


async def process_kexinit(self: Any, pkttype: int, pktid: int, packet: SSHPacket) -> None:
    peer_kex, peer_host_keys, follows = _preferences(packet.get_remaining_payload())
    await ORIGINAL(self, pkttype, pktid, packet)
    own = self._server_kexinit if self.is_server() else self._client_kexinit
    own_kex, own_host_keys, _ = _preferences(own[1:])
    if follows:
        guessed_right = _first(peer_kex) == _first(own_kex) and _first(peer_host_keys) == _first(
            own_host_keys
        )
        self._ignore_first_kex = not guessed_right
    client_host_keys, server_host_keys = (
        (peer_host_keys, own_host_keys) if self.is_server() else (own_host_keys, peer_host_keys)
    )
    host_key = next((a for a in client_host_keys if a in server_host_keys), None)
    kex = getattr(self._kex, "algorithm", None)
    self.set_extra_info(
        kex_algorithm=kex.decode("ascii") if kex else None,
        host_key_algorithm=host_key.decode("ascii") if host_key else None,
    )


def install() -> None:
    """Make asyncssh dispatch KEXINIT to :func:`process_kexinit` (idempotent;
    tuning.apply also sets the method, for the pin test)."""
    _SSHConnection._packet_handlers[MSG_KEXINIT] = process_kexinit


def uninstall() -> None:
    """Undo :func:`install` (idempotent)."""
    _SSHConnection._packet_handlers[MSG_KEXINIT] = HANDLERS[MSG_KEXINIT]
