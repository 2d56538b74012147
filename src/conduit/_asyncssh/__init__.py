"""asyncssh's private API, used in one place."""
