"""wschat's benchmark suite: wschat against a raw ASGI app and the FastAPI-docs manager.

Run ``python -m benchmarks.run --help``. Nothing here is imported by the library.
"""
