"""Conduit's client side: copy files to devices and gateways with asyncssh's client.

``Client`` copies to and from one SSH server (SFTP, or legacy SCP for devices
without an SFTP server); every file is hashed with SHA-256 as it streams and
nothing partial is left under a final name where the protocol allows. This
package may import only ``_asyncssh`` and ``config`` (tests/test_imports.py):
it never uses the gateway's parts. See docs/client.md.
"""

from conduit.client.client import Client, Protocol, RemoteHash
from conduit.client.common import Progress, Transfer
from conduit.client.endpoint import Endpoint, parse_remote
from conduit.client.errors import ClientError, RemoteMismatch
from conduit.client.fleet import DeviceResult, Fleet
from conduit.client.inventory import Device, Inventory, load
from conduit.client.job import Job, load_job

__all__ = [
    "Client",
    "ClientError",
    "Device",
    "DeviceResult",
    "Endpoint",
    "Fleet",
    "Inventory",
    "Job",
    "Progress",
    "Protocol",
    "RemoteHash",
    "RemoteMismatch",
    "Transfer",
    "load",
    "load_job",
    "parse_remote",
]
