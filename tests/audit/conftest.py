from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from conduit.audit import Auditor
from conduit.config.model import AuditConfig


def audit_config(tmp_path: Path, **kw: Any) -> AuditConfig:
    kw.setdefault("journal", tmp_path / "audit")
    return AuditConfig(**kw)


@pytest.fixture
def make_auditor(tmp_path: Path):
    opened: list[Auditor] = []

    async def make(**kw: Any) -> Auditor:
        auditor = await Auditor.open(audit_config(tmp_path, **kw), node="gw-1", key_dir=tmp_path)
        opened.append(auditor)
        return auditor

    yield make
