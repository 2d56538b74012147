"""Conduit: a secure SCP/SFTP file-transfer gateway for OT networks."""

import warnings

from cryptography.utils import CryptographyDeprecationWarning

__version__ = "0.1.0"

# cryptography deprecates DSA (release 47 onwards) and asyncssh names its DSA key
# classes as it is imported: without this, ten lines of that warning precede every
# command's output and every one-line error. Only that warning, only from asyncssh.
warnings.filterwarnings(
    "ignore",
    message="DSA is deprecated",
    category=CryptographyDeprecationWarning,
    module=r"asyncssh\.",
)
