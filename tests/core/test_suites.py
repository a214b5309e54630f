"""wschat.suites: the conformance suites' runner shows the broken promise itself."""

from __future__ import annotations

import sys

import anyio
import pytest

from wschat.suites import first_assertion, run_checks

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup, ExceptionGroup

pytestmark = pytest.mark.anyio


async def passes() -> None:
    await anyio.lowlevel.checkpoint()


async def breaks_in_a_task_group() -> None:
    async def broken() -> None:
        raise AssertionError("offsets must go up by one")

    async with anyio.create_task_group() as tg:
        tg.start_soon(broken)


async def test_run_checks_names_the_checks_that_ran() -> None:
    assert await run_checks([("a", passes), ("b", passes)]) == ["a", "b"]


async def test_a_broken_promise_in_a_task_group_is_raised_alone() -> None:
    with pytest.raises(AssertionError, match=r"^offsets must go up by one$") as info:
        await run_checks([("a", passes), ("b", breaks_in_a_task_group), ("c", passes)])
    assert type(info.value) is AssertionError
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__


async def test_other_errors_pass_through_unchanged() -> None:
    async def fails() -> None:
        raise KeyError("x")

    with pytest.raises(KeyError):
        await run_checks([("a", fails)])


def test_first_assertion_looks_inside_nested_groups_only() -> None:
    found = AssertionError("inner")
    group = BaseExceptionGroup("outer", [ValueError(), ExceptionGroup("mid", [found])])
    assert first_assertion(group) is found
    assert first_assertion(ValueError()) is None
    assert first_assertion(ExceptionGroup("g", [ValueError()])) is None
