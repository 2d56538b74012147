"""The asyncssh server: connections, sessions, one file-operation path for SFTP and SCP."""

from conduit.gateway.app import Gateway, ListenError

__all__ = ["Gateway", "ListenError"]
