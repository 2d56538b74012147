"""Audit: the event schema, the hash-chained journal, SIEM sinks, ``verify``.

The gateway uses only :class:`Auditor` and :class:`AuditUnavailable`::

    auditor = await Auditor.open(config.audit, node=..., key_dir=config.gateway.data_dir)
    seq = await auditor.record("file.upload", "success", principal="alice", path="/fw/a.bin")
    await auditor.close()
"""

from conduit.audit.auditor import Auditor
from conduit.audit.verify import Break, Report, verify
from conduit.errors import AuditUnavailable

__all__ = ["AuditUnavailable", "Auditor", "Break", "Report", "verify"]
