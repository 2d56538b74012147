"""Property: no edit of a valid policy file makes ``conduit check`` raise.

Whatever a person types, check answers with lines and an exit code (0 or 1),
never a traceback; a file it refuses has at least one error line.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conduit.cli.main import main
from conduit.site.build import inspect
from tests.config.site import make_site

NASTY = [
    '""',
    '"/"',
    '"relative/path"',
    "0",
    "-1",
    "1e999",
    "true",
    "[]",
    "{}",
    '["10.0.0.1/8"]',
    '["::1/129"]',
    '"600 MB?"',
    '"ssh-ed25519 garbage"',
    '"{nope}"',
    '"192.168.0.10"',
    '"[fe80::1]:99999"',
    '"\\u001b[31m"',
    '"data"',
    '"."',
]


@pytest.fixture(scope="module")
def site() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as folder:
        yield make_site(Path(folder))


@st.composite
def mutations(draw: st.DrawFn, lines: list[str]) -> str:
    out = list(lines)
    for _ in range(draw(st.integers(1, 3))):
        index = draw(st.integers(0, len(out) - 1))
        action = draw(st.sampled_from(["delete", "value", "insert", "duplicate", "chars"]))
        line = out[index]
        if action == "delete":
            del out[index]
        elif action == "value" and "=" in line:
            key = line.split("=", 1)[0]
            value = draw(st.sampled_from(NASTY) | st.text(max_size=12).map(repr))
            out[index] = f"{key}= {value}"
        elif action == "insert":
            out.insert(index, draw(st.sampled_from(["[zones.x]", "[[conduits]]", "x = 1", "]"])))
        elif action == "duplicate":
            out.insert(index, line)
        else:
            start = draw(st.integers(0, len(line)))
            out[index] = line[:start] + draw(st.text(max_size=4)) + line[start + 1 :]
        if not out:
            out = [""]
    return "\n".join(out) + "\n"


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_no_edit_makes_check_raise(site: Path, data: st.DataObject) -> None:
    text = data.draw(mutations(site.read_text().splitlines()))
    path = site.parent / "mutated.toml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    report = inspect(path)  # must not raise
    assert (report.site is None) == bool(report.errors)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["check", "--config", str(path)])
    assert code in (0, 1)
    assert ("policy is not usable" in out.getvalue()) == (code == 1)
    assert "lax-or-strict" not in out.getvalue()
