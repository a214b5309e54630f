"""What the public conformance suites share: run named checks, show the broken promise.

Imports: the standard library only (core layer).

:func:`wschat.testing.check_backplane` and :func:`wschat.testing.check_history_store`
run their checks through :func:`run_checks`, so a failure inside a task group reaches
the caller as the one ``AssertionError`` that names the promise, not an exception
group around it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

__all__ = ["Check", "first_assertion", "run_checks"]

Check = tuple[str, Callable[[], Awaitable[None]]]
"""A check's name and a function that runs it."""


async def run_checks(checks: Sequence[Check]) -> list[str]:
    """Run checks in order; return the names of those that ran.

    Raises:
        AssertionError: The first broken promise, unwrapped from any exception
            group; anything else is raised as it came.
    """
    ran: list[str] = []
    try:
        for name, check in checks:
            await check()
            ran.append(name)
    except BaseException as exc:
        failure = first_assertion(exc)
        if failure is None or failure is exc:
            raise
        raise failure from None
    return ran


def first_assertion(exc: BaseException) -> AssertionError | None:
    """Unwrap the task groups' exception groups to show the broken promise."""
    if isinstance(exc, AssertionError):
        return exc
    # BaseExceptionGroup is not a builtin on Python 3.10.
    inner_errors: Sequence[BaseException] = getattr(exc, "exceptions", ())
    for inner in inner_errors:
        found = first_assertion(inner)
        if found is not None:
            return found
    return None
