"""The three servers the suite compares; each builds an ASGI app for one process.

``raw``: the practical limit, a hand-written ASGI app. ``naive``: the FastAPI docs'
ConnectionManager with rooms. ``wschat``: the library, as a user would mount it.
All three read the JWT from the query, fan out to the whole room (sender included)
and set ``id``, ``chat_id``, ``user`` and ``ts`` on the server.
"""
