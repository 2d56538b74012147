"""The asyncssh server: connections, sessions, one file-operation path for SFTP and SCP."""

from conduit.errors import ListenError
from conduit.gateway.app import Gateway

__all__ = ["Gateway", "ListenError"]
