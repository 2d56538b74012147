"""A real syslog receiver on loopback: UDP, TCP (octet counting) and TLS (RFC 5425)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


class Listener:
    def __init__(self, kind: str, ssl_ctx: ssl.SSLContext | None = None) -> None:
        self.kind = kind
        self.ssl = ssl_ctx
        self.messages: list[bytes] = []
        self.port = 0
        self._server: asyncio.AbstractServer | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._conns: set[asyncio.StreamWriter] = set()
        self.arrived = asyncio.Event()

    @property
    def target(self) -> str:
        return f"{self.kind}://127.0.0.1:{self.port}"

    async def start(self, port: int = 0) -> Listener:
        loop = asyncio.get_running_loop()
        if self.kind == "udp":
            listener = self

            class Proto(asyncio.DatagramProtocol):
                def datagram_received(self, data: bytes, addr: object) -> None:
                    listener._got(data)

            transport, _ = await loop.create_datagram_endpoint(
                Proto, local_addr=("127.0.0.1", port)
            )
            self._udp = transport
            self.port = transport.get_extra_info("sockname")[1]
        else:
            self._server = await asyncio.start_server(
                self._handle, "127.0.0.1", port, ssl=self.ssl, reuse_address=True
            )
            self.port = self._server.sockets[0].getsockname()[1]
        return self

    def _got(self, message: bytes) -> None:
        self.messages.append(message)
        self.arrived.set()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._conns.add(writer)
        try:
            while True:
                length = await reader.readuntil(b" ")
                self._got(await reader.readexactly(int(length[:-1])))
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError, ValueError):
            pass
        finally:
            self._conns.discard(writer)
            writer.close()

    async def stop(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._server is not None:
            self._server.close()
            for w in list(self._conns):
                w.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def wait_for(self, count: int, timeout: float = 10.0) -> None:
        async def enough() -> None:
            while len(self.messages) < count:
                self.arrived.clear()
                await self.arrived.wait()

        await asyncio.wait_for(enough(), timeout)


def make_pki(directory: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1/localhost, and a stranger CA's certificate."""
    now = datetime.datetime.now(datetime.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return path

    def ca(cn: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(name(cn))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        return key, cert

    def leaf(cn: str, ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, tag: str):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        (directory / f"{tag}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        write_key(key, directory / f"{tag}.key")

    ca_key, ca_cert = ca("Test SIEM CA")
    (directory / "ca.crt").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    leaf("siem", ca_key, ca_cert, "server")
    leaf("gateway", ca_key, ca_cert, "client")
    other_key, other_cert = ca("Stranger CA")
    leaf("siem", other_key, other_cert, "stranger")
    return {
        n: directory / n
        for n in (
            "ca.crt",
            "server.crt",
            "server.key",
            "client.crt",
            "client.key",
            "stranger.crt",
            "stranger.key",
        )
    }


def server_context(pki: dict[str, Path], tag: str = "server", client_ca: bool = False):
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(pki[f"{tag}.crt"], pki[f"{tag}.key"])
    if client_ca:
        ctx.load_verify_locations(pki["ca.crt"])
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx
