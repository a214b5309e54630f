"""The FastAPI app of :mod:`tests.support.token_log_apps`, opted out of the filter on
the server's loggers (:func:`wschat.logfilter.remove_filter`): the control that shows
the token-in-logs test would see a token that reached the output.
"""

from __future__ import annotations

from tests.support.token_log_apps import fastapi_app
from wschat.logfilter import remove_filter

__all__ = ["fastapi_app"]

remove_filter()
