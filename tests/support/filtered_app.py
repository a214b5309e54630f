"""A chat app that installs :func:`wschat.logfilter.install_filter` when imported,
the way a deployment that cannot pass ``--log-config`` to its server would.
"""

from __future__ import annotations

from tests.support.common import SECRET
from tests.support.redact_apps import mixed_app
from wschat import ConnectionManager, TokenVerifier
from wschat.asgi import chat_app
from wschat.logfilter import install_filter

__all__ = ["app", "mixed"]

install_filter()

app = chat_app(ConnectionManager(), TokenVerifier(SECRET, algorithms=["HS256"]))
#: The same FastAPI app as ``tests.support.redact_apps.mixed_app``, with the filter.
mixed = mixed_app
