"""The app of :mod:`tests.support.redact_apps`, opted out of the logging filter
the adapters install (:func:`wschat.logfilter.remove_filter`): what the server logs
without it.
"""

from __future__ import annotations

from tests.support.redact_apps import mixed_app
from wschat.logfilter import remove_filter

__all__ = ["mixed"]

remove_filter()

mixed = mixed_app
