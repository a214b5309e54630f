"""The app of :mod:`tests.redact_apps`, opted out of the logging filter the adapters
install (:func:`wschat.logfilter.remove_filter`): what the server logs without it.
"""

from __future__ import annotations

from wschat.logfilter import remove_filter

from .redact_apps import mixed_app

__all__ = ["mixed"]

remove_filter()

mixed = mixed_app
