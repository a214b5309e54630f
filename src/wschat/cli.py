"""The ``wschat`` command line: ``token``, ``demo``, ``doctor`` and ``connect``.

Imports: the standard library, PyJWT (through :mod:`wschat.testing`), and, for
``wschat demo`` only, Starlette and uvicorn (the ``wschat[demo]`` extra), imported
when that command runs so ``wschat token`` works without them.

Every mistake in the input is answered with one line on stderr and exit code 2, never
a traceback::

    $ wschat token --secret short --sub alice
    wschat token: error: HMAC secret is 5 bytes; HS256 needs at least 32 (RFC 7518). ...
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import socket
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from . import __version__
from .auth import TokenVerifier
from .errors import ConfigurationError

__all__ = ["DEMO_SERVER_SETTINGS", "main"]

#: Exit status for bad input (the same one argparse uses for usage errors).
EXIT_USAGE = 2
#: Exit status when something outside the input fails (a missing extra).
EXIT_FAILURE = 1

#: The demo's uvicorn settings: the production checklist of docs/deployment.md
#: (``--host``, ``--port`` and ``--log-level`` come from the command line).
DEMO_SERVER_SETTINGS: dict[str, Any] = {
    # The server refuses what wschat would (max_message_bytes' default) before it
    # holds it in memory.
    "ws_max_size": 64 * 1024,
    # Compression multiplies the cost of every delivery of a broadcast.
    "ws_per_message_deflate": False,
    "ws_ping_interval": 20.0,
    "ws_ping_timeout": 20.0,
    "timeout_keep_alive": 5,
    "h11_max_incomplete_event_size": 16 * 1024,
    "limit_concurrency": 1000,
    # No proxy in front of a demo: nobody picks the address its log shows.
    "proxy_headers": False,
}

_HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
_RESERVED_CLAIMS = {"sub": "--sub", "exp": "--ttl", "iat": "--ttl"}
_MAX_SUB_CHARS = 256
_DAY = 24 * 3600


class CliError(Exception):
    """Bad input, explained in one line; ``main`` prints it and exits with 2."""


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line, not usage plus a line."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} -h)\n")


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0-65535, got {port}")
    return port


def _ttl(text: str) -> int:
    try:
        ttl = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected whole seconds, got {text!r}"
        ) from None
    if ttl <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {ttl}")
    return ttl


def _claim(text: str) -> tuple[str, Any]:
    """Parse ``key=value``; the value is JSON if it parses as JSON, else a string."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    if key in _RESERVED_CLAIMS:
        raise argparse.ArgumentTypeError(
            f"set {key!r} with {_RESERVED_CLAIMS[key]}, not --claim"
        )
    try:
        value: Any = json.loads(raw, parse_constant=_no_constant)
    except ValueError:
        value = raw
    return key, value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON a token can carry")


def build_parser() -> argparse.ArgumentParser:
    """The ``wschat`` argument parser, with its ``token`` and ``demo`` commands."""
    parser = _Parser(
        prog="wschat",
        description="Authenticated WebSocket chat: development tools.",
    )
    parser.add_argument("--version", action="version", version=f"wschat {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    token = commands.add_parser(
        "token",
        help="print a signed JWT for development and tests",
        description=(
            "Print a signed JWT (HMAC) on stdout, for development and tests. "
            "The secret comes from --secret or the WSCHAT_SECRET environment "
            "variable (preferred: it stays out of shell history)."
        ),
    )
    token.add_argument(
        "--secret",
        help="HMAC secret (default: $WSCHAT_SECRET); 32+ bytes for HS256",
    )
    token.add_argument(
        "--sub", required=True, help="the user id (the token's sub claim)"
    )
    token.add_argument(
        "--ttl",
        type=_ttl,
        default=3600,
        help="seconds until the token expires (default: 3600)",
    )
    token.add_argument(
        "--alg",
        choices=_HMAC_ALGORITHMS,
        default="HS256",
        help="signing algorithm (default: HS256)",
    )
    token.add_argument(
        "--claim",
        type=_claim,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an extra claim such as aud=chat or admin=true (JSON if the value "
        "parses as JSON, else a string); repeatable",
    )
    token.set_defaults(run=_run_token, parser=token)

    demo = commands.add_parser(
        "demo",
        help="serve a demo chat page with its endpoint (in memory)",
        description=(
            "Serve a chat page at / with /ws/chat/{room} and /ws/status, signed with "
            "a key generated for this run. Open the printed URL in two tabs."
        ),
    )
    demo.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)"
    )
    demo.add_argument(
        "--port",
        type=_port,
        default=8000,
        help="port to bind; 0 picks a free one (default: 8000)",
    )
    demo.add_argument(
        "--log-level",
        choices=("critical", "error", "warning", "info", "debug"),
        default="info",
        help="uvicorn's log level (default: info)",
    )
    demo.set_defaults(run=_run_demo, parser=demo)

    doctor = commands.add_parser(
        "doctor",
        help="diagnose a chat socket: network, upgrade, token, handshake, ready",
        description=(
            "Check a chat socket step by step and print one line per check, with "
            "the fix for the first failure: DNS and TCP, GET {prefix}/status, the "
            "WebSocket upgrade, the token (decoded without verification; only its "
            "fingerprint is printed), the handshake and its close code, ready. "
            "Exit status 0 only when ready was reached."
        ),
    )
    _socket_arguments(doctor, token_required=False)
    doctor.set_defaults(run=_run_doctor, parser=doctor)

    connect = commands.add_parser(
        "connect",
        help="chat in the terminal: lines in, events out",
        description=(
            "Connect to a chat socket; each line of standard input is sent as a "
            'message {"text": LINE}, and every event is printed. At the end of '
            "the input, waits for the echo of the messages sent, then closes."
        ),
    )
    _socket_arguments(connect, token_required=True)
    connect.set_defaults(run=_run_connect, parser=connect)
    return parser


def _socket_arguments(parser: argparse.ArgumentParser, *, token_required: bool) -> None:
    parser.add_argument(
        "url",
        metavar="WS_URL",
        help="the chat socket, e.g. ws://127.0.0.1:8000/ws/chat/lobby",
    )
    parser.add_argument(
        "--token",
        required=token_required,
        help="the token (a JWT) to connect with; never printed, only its fingerprint",
    )
    parser.add_argument(
        "--origin",
        help="the Origin header a browser page would send, e.g. https://app.example.com",
    )


def _run_doctor(args: argparse.Namespace) -> int:
    from .doctor import DoctorError, diagnose

    try:
        return diagnose(args.url, token=args.token, origin=args.origin)
    except DoctorError as exc:
        raise CliError(str(exc)) from None


def _run_connect(args: argparse.Namespace) -> int:
    from .doctor import DoctorError, chat

    try:
        return chat(args.url, token=args.token, origin=args.origin)
    except DoctorError as exc:
        raise CliError(str(exc)) from None


def _run_token(args: argparse.Namespace) -> int:
    from .testing import mint_token

    secret: str | None = args.secret
    if secret is None:
        secret = os.environ.get("WSCHAT_SECRET")
    if not secret:
        raise CliError(
            "no secret: pass --secret or set WSCHAT_SECRET "
            "(make one with: python -c 'import secrets; "
            "print(secrets.token_urlsafe(64))')"
        )
    sub: str = args.sub
    if not sub or len(sub) > _MAX_SUB_CHARS:
        raise CliError(f"--sub must be 1 to {_MAX_SUB_CHARS} characters")
    try:
        # The verifier's own checks explain a short secret in one line.
        TokenVerifier(secret, algorithms=[args.alg])
    except ConfigurationError as exc:
        raise CliError(exc.detail) from None
    if args.ttl > _DAY:
        print(
            f"wschat token: note: --ttl {args.ttl} is over 24 h; TokenVerifier "
            "refuses it unless its max_lifetime allows it",
            file=sys.stderr,
        )
    claims = dict(args.claim)
    try:
        token = mint_token(secret, sub, ttl=args.ttl, algorithm=args.alg, claims=claims)
    except (TypeError, ValueError) as exc:
        raise CliError(f"cannot sign these claims: {type(exc).__name__}") from None
    print(token)
    return 0


def _display_host(host: str) -> str:
    """The host to put in a URL a person can open."""
    if host in ("", "0.0.0.0", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _listen(host: str, port: int) -> socket.socket:
    """Bind and listen before printing the URL, so the URL works as soon as shown."""
    try:
        infos = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise CliError(f"cannot resolve --host {host!r}: {exc.strerror}") from None
    family, kind, proto, _name, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        hint = f"; try --port {port + 1}" if port and port < 65535 else ""
        raise CliError(
            f"cannot listen on {host}:{port}: {exc.strerror}{hint}"
        ) from None
    return sock


def _run_demo(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from .demo import LOOPBACK_HOSTS, create_app
    except ImportError as exc:
        print(
            f"wschat demo: error: needs {exc.name or 'the demo extra'}; "
            "install it with: pip install 'wschat[demo]'",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    host: str = args.host
    sock = _listen(host, args.port)
    port = sock.getsockname()[1]
    loopback = _is_loopback(host)
    # Bound to loopback, answer only loopback Host headers: a DNS-rebinding page
    # could otherwise fetch demo tokens as if it were same-origin.
    app = create_app(trusted_hosts=LOOPBACK_HOSTS if loopback else None)
    config = uvicorn.Config(
        app, log_level=args.log_level, lifespan="on", **DEMO_SERVER_SETTINGS
    )
    url = f"http://{_display_host(host)}:{port}/"
    print(f"wschat demo: open {url} in two tabs (Ctrl+C to stop)", flush=True)
    if not loopback:
        print(
            "wschat demo: warning: the demo hands a token to anyone who can reach "
            f"{host}:{port}; never expose it beyond your machine",
            file=sys.stderr,
            flush=True,
        )
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``wschat`` command line.

    Args:
        argv: The arguments after the program name (default: ``sys.argv[1:]``).

    Returns:
        The exit status: 0 on success, 2 for bad input, 1 for other failures.
    """
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        # Name the command in the error, as its own options are what was mistyped.
        getattr(args, "parser", parser).error(
            f"unrecognized arguments: {' '.join(extra)}"
        )
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        status: int = args.run(args)
    except CliError as exc:
        print(f"wschat {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    return status
