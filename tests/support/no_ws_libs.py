"""``python -m tests.support.no_ws_libs <uvicorn arguments>``: uvicorn as if neither
``websockets`` nor ``wsproto`` were installed (a bare ``pip install uvicorn``).
"""

from __future__ import annotations

import sys

for _name in ("websockets", "wsproto"):
    # An import of a name mapped to None raises ImportError, as if not installed.
    sys.modules[_name] = None  # type: ignore[assignment]

from uvicorn.main import main  # noqa: E402

if __name__ == "__main__":
    main()
