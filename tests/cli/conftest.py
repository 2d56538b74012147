"""Every command's tests live here; they borrow the fixtures of the package they drive."""

from tests.audit.conftest import make_auditor

__all__ = ["make_auditor"]
