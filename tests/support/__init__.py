"""Helpers the tests import (``tests.support.x``); no tests here, no fixtures.

Fixtures live in the ``conftest.py`` of the directory whose tests use them.
"""
