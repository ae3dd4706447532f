"""The faked Keystone and Nova (``fakecloud.FakeCloud``) on a real socket, for agent processes and benches.

requests-mock only reaches the process it runs in, and serialises every request of that process
behind one lock: an agent started as a process (so that a test can kill it), or 8 workers against
a slow fake, need a socket. ``HTTPCloud`` serves the same FakeCloud handlers (Keystone tokens with a
catalog that points compute here, ``/servers/detail?name=``, creates...) from a threading HTTP
server, so concurrent requests overlap as they do against a real cloud. A section pointing
``keystone_base_url`` at ``<url>/v3`` uses it (``section()``); images by id and ``networks = auto``
need neither Glance nor Neutron.

``latency`` delays each VM look-up (a slow cloud, for benches). ``hold_creates()`` makes the
listener hold the answer to each create once the VM exists, until ``release()``: a test can kill
the agent after its create reached the cloud and before it heard back.
"""

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any, List, Optional, Tuple

from tests.support.fakecloud import KEYSTONE, NOVA, PASSWORD, FakeCloud


class Routes:
    """Records what FakeCloud registers (as requests-mock would) and finds the handler of a URL."""

    def __init__(self) -> None:
        self.routes: List[Tuple[str, Any, dict]] = []

    def register_uri(self, method: str, matcher: Any, **answer: Any) -> None:
        self.routes.append((method, matcher, answer))

    def get(self, matcher: Any, **answer: Any) -> None:
        self.register_uri("GET", matcher, **answer)

    def post(self, matcher: Any, **answer: Any) -> None:
        self.register_uri("POST", matcher, **answer)

    def put(self, matcher: Any, **answer: Any) -> None:
        self.register_uri("PUT", matcher, **answer)

    def delete(self, matcher: Any, **answer: Any) -> None:
        self.register_uri("DELETE", matcher, **answer)

    def find(self, method: str, url: str) -> dict:
        for registered, matcher, answer in reversed(self.routes):  # the last registration wins
            if registered != method:
                continue
            if isinstance(matcher, re.Pattern) and matcher.match(url) or matcher == url.split("?")[0]:
                return answer
        return {}


class HTTPCloud:
    """``cloud`` (a FakeCloud) served on ``url`` (127.0.0.1, ``port`` or one the system picks)."""

    def __init__(self, port: int = 0, latency: float = 0.0) -> None:
        self.routes = Routes()
        self.cloud = FakeCloud(self.routes)  # type: ignore[arg-type]
        self.latency = latency
        self.created = threading.Event()
        self._release: Optional[threading.Event] = None
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self.cloud.catalog_urls = {"compute": f"{self.url}/v2.1"}

    def start(self) -> "HTTPCloud":
        """Serve from a daemon thread."""
        threading.Thread(target=self.serve_forever, name="httpcloud", daemon=True).start()
        return self

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def section(self, name: str = "cm1") -> str:
        """A cloud managers file section that uses this cloud."""
        return (f"[{name}]\ncm_type = openstack\nkeystone_base_url = {self.url}/v3\n"
                f"project_name = demo\nusername = demo\npassword = {PASSWORD}\n")

    def hold_creates(self) -> None:
        self._release = threading.Event()

    def release(self) -> None:
        if self._release is not None:
            self._release.set()

    def close(self) -> None:
        self.release()
        self._server.shutdown()
        self._server.server_close()

    def _answer(self, handler: BaseHTTPRequestHandler) -> None:
        body = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        # the fake's handlers know Keystone and Nova by their usual URLs
        base = KEYSTONE if handler.path.startswith("/v3") else NOVA.rsplit("/v2.1", 1)[0]
        url = base + handler.path
        answer = self.routes.find(handler.command, url)
        if "/servers/detail" in handler.path:
            time.sleep(self.latency)
        context = SimpleNamespace(status_code=answer.get("status_code", 200) if answer else 404)
        request = SimpleNamespace(url=url, body=body.decode() or None, headers=dict(handler.headers))
        content = answer.get("json", {"error": "not in the fake"})
        content = content(request, context) if callable(content) else content
        payload = b"" if context.status_code == 204 else json.dumps(content).encode()
        if handler.command == "POST" and handler.path.rstrip("/") == "/v2.1/servers" and context.status_code == 202:
            self.created.set()
            if self._release is not None:
                self._release.wait(60)
        try:
            handler.send_response(context.status_code)
            for name, value in answer.get("headers", {}).items():
                handler.send_header(name, value)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(payload)))
            handler.end_headers()
            handler.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the agent was killed while its answer was held: that was the point

    def _handler(self) -> Any:
        answer = self._answer

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as keystoneauth's connection pool expects

            def do_GET(self) -> None:
                answer(self)

            do_POST = do_PUT = do_DELETE = do_GET

            def log_message(self, *_args: Any) -> None:
                """Quiet: tests and benches print what they check."""

        return Handler
