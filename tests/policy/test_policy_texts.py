"""A decision's texts name the address it was asked about, whatever came before.

The engine keeps the text of the addresses it formatted (``compile.shown``):
an IPv4 address and the IPv6 address with the same number (``10.10.0.1``
and ``::a0a:1``) are different clients and must never share a text.
"""

from __future__ import annotations

from conduit.policy import Policy
from tests.policy.conftest import ask


def test_v4_and_v6_with_the_same_number_keep_their_own_text(policy: Policy) -> None:
    v4 = ask(policy, "alice", "10.10.0.1", "read", "/firmware/a.bin")
    v6 = ask(policy, "alice", "::a0a:1", "read", "/firmware/a.bin")
    again = ask(policy, "alice", "10.10.0.1", "read", "/firmware/a.bin")
    assert "from 10.10.0.1" in v4.detail and "::" not in v4.detail
    assert "from ::a0a:1" in v6.detail and "10.10.0.1" not in v6.detail
    assert "::a0a:1 is in no zone" in v6.detail
    assert again.detail == v4.detail


def test_a_mapped_v4_address_is_named_as_v4(policy: Policy) -> None:
    mapped = ask(policy, "alice", "::ffff:10.10.0.1", "read", "/firmware/a.bin")
    assert "from 10.10.0.1" in mapped.detail and "ffff" not in mapped.detail
