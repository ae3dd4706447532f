"""An HTTP proxy in front of an OpenStack service: it counts what an agent sends, and can hold
back the answer to one request.

The events bench counts an agent's Nova requests through it. An end-to-end test holds back one
answer (the request itself goes on, so the cloud acts) to kill the agent at a moment it chooses:
after the cloud did what was asked, before the agent learned it, however fast the cloud is.
"""

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, List, Optional

import requests

# (method, path, body) -> True for the request whose answer is held back
Match = Callable[[str, str, bytes], bool]


class Proxy:
    """Forwards every request to ``upstream`` and records it; port 0 picks a free port."""

    def __init__(self, upstream: str, port: int = 0) -> None:
        self.upstream = upstream.rstrip("/")
        self.requests: List[str] = []
        self.held = threading.Event()  # set once an answer is held back
        self._hold: Optional[Match] = None
        self._released = threading.Event()
        self._lock = threading.Lock()
        self._session = requests.Session()
        self._session.trust_env = False
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def count(self) -> int:
        with self._lock:
            return len(self.requests)

    def hold_next(self, match: Match) -> None:
        """Hold back the answer to the next request that ``match``es, until ``close``; once."""
        with self._lock:
            self._hold = match

    def close(self) -> None:
        self._released.set()
        self._server.shutdown()
        self._server.server_close()

    def _forward(self, handler: BaseHTTPRequestHandler) -> None:
        body = handler.rfile.read(int(handler.headers.get("Content-Length") or 0)) or b""
        with self._lock:
            self.requests.append(f"{handler.command} {handler.path}")
            hold = self._hold is not None and self._hold(handler.command, handler.path, body)
            if hold:
                self._hold = None
        headers = {key: value for key, value in handler.headers.items() if key.lower() not in ("host", "connection")}
        answer = self._session.request(handler.command, self.upstream + handler.path, data=body or None,
                                       headers=headers)
        if hold:
            self.held.set()
            self._released.wait()
        try:
            handler.send_response(answer.status_code)
            for key, value in answer.headers.items():
                if key.lower() not in ("content-length", "connection", "transfer-encoding", "content-encoding"):
                    handler.send_header(key, value)
            handler.send_header("Content-Length", str(len(answer.content)))
            handler.end_headers()
            handler.wfile.write(answer.content)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client died while its answer was held back

    def _handler(self) -> Any:
        forward = self._forward

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                forward(self)

            do_POST = do_PUT = do_DELETE = do_GET

            def log_message(self, *_args: Any) -> None:
                """Quiet."""

        return Handler
