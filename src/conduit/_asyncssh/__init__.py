"""asyncssh's private API, used in one place.

Everything Conduit does with asyncssh beyond its documented API lives in this
package and imports nothing else of Conduit's (tests/test_imports.py): the
run-time changes for throughput (:mod:`.tuning`, its AES-GCM part in
:mod:`.gcm`, its ChaCha20-Poly1305 part in :mod:`.chacha`, the receive
lane in :mod:`.recvlane`, channel data sealed without the generic send path
in :mod:`.sendlane`, the two lanes' per-cipher step, AES-GCM or
ChaCha20-Poly1305, in :mod:`.aead`, the keepalive timer kept armed in
:mod:`.keepalive`), the key-exchange fix
(:mod:`.kexinit`), authentication attempts asyncssh answers itself
(:mod:`.authwatch`), logins that take two methods (:mod:`.multifactor`),
user certificates judged by Conduit, not asyncssh (:mod:`.certwatch`), the
SFTP server handler's private tables and methods (:mod:`.sftpserver`), its
per-file requests without unread debug messages (:mod:`.sftplean`), a
listing's records built without their ``__init__``'s loop (:mod:`.records`), a
stream session's channel (:mod:`.channel`) and a disconnect the client
reads to the end (:mod:`.goodbye`).
:mod:`.pins` lists every private member used; tests/test_tuning.py pins each
one's source to asyncssh 2.24.1. ``patches/`` holds the throughput changes
as diffs against asyncssh's own source, ready to propose upstream.
"""
