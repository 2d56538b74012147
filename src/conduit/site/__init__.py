"""A whole site, checked and built: what ``conduit check`` and ``serve`` share.

:mod:`conduit.config` only reads a file into its model; this package judges
the site the model describes (names, zones, conduits, patterns, windows,
folder layout, keys, devices) and builds the parts the gateway runs on. It
sits above :mod:`conduit.policy` and :mod:`conduit.storage` and below the
gateway and the command line, so ``config`` stays a leaf.
"""
