"""Who may log in: keys and certificates, the second factor, the defender.

This layer reads the policy's ``users`` and ``[auth]`` (and the files they
name: authorized_keys files, CA keys, a revocation list, TOTP secrets) and
answers per login attempt: may this key, or this certificate, log in as this
user from this address now, and if not, why not. It knows nothing of SSH
connections: the gateway asks it (see ``conduit.gateway.server``).
"""
