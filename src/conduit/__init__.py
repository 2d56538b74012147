"""Conduit: a secure SCP/SFTP file-transfer gateway for OT networks."""

__version__ = "0.1.0"
