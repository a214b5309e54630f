"""docs/auth.md, "Expiry and refresh" and "Revocation": the example runs, and the
numbers the page gives are the code's."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tests.support.common import SECRET
from wschat import ChatOptions, ConnectionManager, Principal, UserId
from wschat.deadlines import MAX_EXPIRY_LEEWAY, schedule

DOCS = Path(__file__).resolve().parents[2] / "docs"


def section(page: str, heading: str) -> str:
    text = (DOCS / page).read_text()
    start = text.index(heading + "\n")
    end = text.find("\n## ", start + len(heading))
    nxt = text.find("\n### ", start + len(heading))
    ends = [e for e in (end, nxt) if e != -1]
    return text[start : min(ends) if ends else None]


def test_the_revocation_example_runs() -> None:
    block = re.findall(
        r"```python\n(.*?)```", section("auth.md", "### Revocation"), re.S
    )[0]
    namespace: dict[str, Any] = {"SECRET": SECRET}
    exec(block, namespace)
    is_revoked = namespace["is_revoked"]
    token = Principal(UserId("alice"), claims={"jti": "j-1"})
    assert is_revoked(token) is False
    # No connection here: nothing to close, and the jti is refused from now on.
    assert namespace["log_out_everywhere"]("alice", "j-1") == 0
    assert is_revoked(token) is True
    assert isinstance(namespace["manager"], ConnectionManager)


def test_the_timeline_and_the_notice_rule_are_the_codes() -> None:
    text = section("auth.md", "### Expiry and refresh")
    assert "at most 5 s" in text
    assert MAX_EXPIRY_LEEWAY == 5.0
    assert "(default 60)" in text
    notice = ChatOptions().expiry_notice
    assert notice == 60.0
    hour = schedule(3600, now=0, leeway=5.0, notice=notice, issued_at=0)
    assert (hour.notice_at, hour.cutoff) == (3540, 3605)  # 10:59:00, 11:00:05
    # "a 2-minute token gets it 60 s before exp, a 30-second one 15 s before"
    assert schedule(120, now=0, leeway=5, notice=notice, issued_at=0).notice_at == 60
    assert schedule(30, now=0, leeway=5, notice=notice, issued_at=0).notice_at == 15
    assert "10:59:00  exp - 60 s" in text
    assert "11:00:05  exp + leeway" in text
