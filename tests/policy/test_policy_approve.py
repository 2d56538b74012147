"""``approve``: a grant like any other, decided on the host (no zone, no conduit)."""

from __future__ import annotations

from ipaddress import ip_address

from conduit.config import Config, Op
from conduit.policy import Policy, Request
from tests.policy.conftest import EVERY_OBLIGATION

HOST = ip_address("127.0.0.1")  # in no zone of the example: approvals do not need one


def approver_config(example: Config) -> Config:
    data = example.model_dump(by_alias=True)
    data["roles"]["release"] = {
        "grants": [
            {"target": "firmware", "ops": ["approve"], "paths": ["*.bin"]},
            {"target": "devices/plc-*", "ops": ["approve"]},
        ]
    }
    data["users"]["carol"]["roles"] = [*data["users"]["carol"]["roles"], "release"]
    return Config.model_validate(data)


def decide(policy: Policy, user: str, path: str) -> tuple[bool, str]:
    decision = policy.decide(Request(user, HOST, Op.APPROVE, path))
    return decision.allowed, decision.rule


def test_only_a_grant_of_approve_matching_the_file_allows(example_config: Config) -> None:
    policy = Policy(approver_config(example_config), enforceable=EVERY_OBLIGATION)
    assert decide(policy, "carol", "/firmware/rtu.bin") == (True, "roles.release.grants[0]")
    assert decide(policy, "carol", "/devices/plc-01/fw/rtu.bin")[0]
    # paths narrow it; other areas and devices are not covered; alice may write, not approve
    assert decide(policy, "carol", "/firmware/rtu.img") == (False, "deny:no-grant")
    assert decide(policy, "carol", "/logs/a.bin") == (False, "deny:no-grant")
    assert decide(policy, "carol", "/devices/hmi-01/a.bin") == (False, "deny:no-grant")
    assert decide(policy, "alice", "/firmware/rtu.bin") == (False, "deny:no-grant")


def test_hostile_approve_requests_are_refused(example_config: Config) -> None:
    policy = Policy(approver_config(example_config), enforceable=EVERY_OBLIGATION)
    assert decide(policy, "mallory", "/firmware/rtu.bin") == (False, "deny:unknown-user")
    assert decide(policy, "carol", "/firmware/a\x00.bin") == (False, "deny:bad-path")
    for folder in ("/", "/firmware", "/devices", "/devices/plc-01", "/nowhere/x.bin"):
        assert decide(policy, "carol", folder) == (False, "deny:unknown-target"), folder
    # .. cannot climb into another area's grant
    assert decide(policy, "carol", "/logs/../firmware/x.bin")[0]
    assert not decide(policy, "carol", "/firmware/../logs/x.bin")[0]


def test_explain_shows_the_approval_steps(example_config: Config) -> None:
    policy = Policy(approver_config(example_config), enforceable=EVERY_OBLIGATION)
    explanation = policy.explain(Request("carol", HOST, Op.APPROVE, "/firmware/rtu.bin"))
    assert [s.question for s in explanation.steps] == ["user", "target", "grant", "flow"]
    assert explanation.decision.obligations == frozenset()


def test_check_warns_when_nobody_could_approve(example_config: Config) -> None:
    from conduit.site.check import check

    data = example_config.model_dump(by_alias=True)
    data["conduits"][0]["require"] = ["approval"]
    lonely = [
        p for p in check(Config.model_validate(data)) if "no role grants approve" in p.message
    ]
    assert len(lonely) == 1 and lonely[0].severity == "warning"
    served = [
        p
        for p in check(approver_config(Config.model_validate(data)))
        if "no role grants approve" in p.message
    ]
    assert served == []
