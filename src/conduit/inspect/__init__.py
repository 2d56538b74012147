"""Inspection: what must be proven about a file before it may commit.

A conduit's ``require`` names obligations (``signature``, ``scan``,
``approval``; ``types`` adds a true-file-type check). Files through such a
conduit stream into quarantine; the checks here say whether each one passed,
and only then is the file committed under its final name. See ``base`` for
the vocabulary every check and the pipeline share.
"""
