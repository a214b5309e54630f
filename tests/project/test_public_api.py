"""``wschat``'s top level: what an application writes against, by a stated rule.

The rule (``wschat/__init__.py``'s docstring): the top level exports the errors an
application raises into wschat (a verifier's, ``authorize``'s, a hook's), passes to
``close_user``/``close_room``/``close_all``, or catches from wschat; the errors only
wschat decides stay in :mod:`wschat.errors`.
"""

from __future__ import annotations

import subprocess
import sys

import wschat
from tests.support.common import source_env
from wschat import errors


def _subclasses(cls: type[errors.WSChatError]) -> set[type[errors.WSChatError]]:
    found = {cls}
    for sub in cls.__subclasses__():
        found |= _subclasses(sub)
    return found


#: Raised into wschat by application code: a verifier, authorize, a hook.
RAISED = {
    *(
        c
        for c in _subclasses(errors.AuthenticationError)
        if c.__module__ == "wschat.errors"
    ),
    errors.Forbidden,
    errors.Veto,
}
#: Passed to close_user / close_room / close_all to end connections on purpose.
PASSED = {
    errors.NormalClosure,
    errors.GoingAway,
    errors.ServiceRestart,
    errors.TryAgainLater,
    errors.Forbidden,
}
#: Caught from wschat: a constructor's refusal, and the root.
CAUGHT = {errors.ConfigurationError, errors.WSChatError}


def exported_errors() -> set[type[BaseException]]:
    return {
        value
        for value in (getattr(wschat, name) for name in wschat.__all__)
        if isinstance(value, type) and issubclass(value, BaseException)
    }


def test_the_exported_errors_are_exactly_those_of_the_rule() -> None:
    assert exported_errors() == RAISED | PASSED | CAUGHT


def test_the_rule_names_every_token_error_a_verifier_may_raise() -> None:
    assert {c.__name__ for c in RAISED} == {
        "AuthenticationError",
        "TokenAmbiguous",
        "TokenMissing",
        "TokenMalformed",
        "TokenInvalid",
        "TokenExpired",
        "TokenNotYetValid",
        "TokenTooLarge",
        "TokenRevoked",
        "Forbidden",
        "Veto",
    }


def test_the_top_level_names_are_pinned() -> None:
    assert sorted(wschat.__all__) == wschat.__all__
    assert set(wschat.__all__) - {e.__name__ for e in exported_errors()} == {
        "ChatHooks",
        "ChatId",
        "ChatOptions",
        "CloseCode",
        "Connection",
        "ConnectionId",
        "ConnectionManager",
        "ErrorCode",
        "JwksVerifier",
        "Principal",
        "RoomRegistry",
        "TokenVerifier",
        "UserId",
        "Verifier",
        "__version__",
        "token_fingerprint",
    }
    for name in wschat.__all__:
        assert getattr(wschat, name) is not None, name


def test_internals_left_the_top_level_but_stay_importable() -> None:
    for name in ("OutboxLimits", "ManagerStats"):
        assert not hasattr(wschat, name)
        assert name not in wschat.__all__
    from wschat.connection import OutboxLimits
    from wschat.manager import ManagerStats

    assert OutboxLimits().max_messages == 1024
    assert ManagerStats.__name__ == "ManagerStats"


def test_the_errors_only_wschat_decides_stay_in_wschat_errors() -> None:
    for name in ("SlowConsumer", "RateLimited", "BadRequest", "TextOnly", "FrameError"):
        assert not hasattr(wschat, name)
        assert isinstance(getattr(errors, name), type)


def test_import_star_gives_all_and_loads_no_framework() -> None:
    code = (
        "import sys\n"
        "namespace = {}\n"
        "exec('from wschat import *', namespace)\n"
        "import wschat\n"
        "names = sorted(k for k in namespace if k != '__builtins__')\n"
        "assert names == sorted(wschat.__all__), names\n"
        "bad = {'fastapi', 'starlette', 'redis', 'uvicorn', 'asyncio'}\n"
        "assert not bad & set(sys.modules), bad & set(sys.modules)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=source_env()
    )
    assert run.returncode == 0, run.stderr
