"""An HTTP fake OpenStack on a real socket, each Nova VM look-up answered after a latency.

The unit tests' FakeCloud answers through requests-mock, which serialises every request of a
process behind one lock: 8 workers against a 200 ms fake would run one request at a time. This
serves the same FakeCloud handlers (Keystone tokens with a catalog, Nova's version document,
``/servers/detail?name=``...) from a threading HTTP server, so concurrent requests overlap as
they do against a real cloud:
    python -m bench.http_cloud PORT LATENCY     Keystone at http://127.0.0.1:PORT/v3, Nova at .../v2.1,
                                                vm-0 ... vm-63; until SIGTERM
"""

import json
import re
import signal
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any, List, Tuple

from tests.support.fakecloud import KEYSTONE, NOVA, PASSWORD, FakeCloud

SERVERS = 64


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


def serve(port: int, latency: float) -> None:
    routes = Routes()
    cloud = FakeCloud(routes)  # type: ignore[arg-type]
    cloud.catalog_urls = {"compute": f"http://127.0.0.1:{port}/v2.1"}
    for n in range(SERVERS):
        cloud.add_server(f"vm-{n}")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as keystoneauth's connection pool expects

        def _answer(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            # the fake's handlers know Keystone and Nova by their usual URLs
            base = KEYSTONE if self.path.startswith("/v3") else NOVA.rsplit("/v2.1", 1)[0]
            url = base + self.path
            answer = routes.find(self.command, url)
            if "/servers/detail" in self.path:
                time.sleep(latency)
            context = SimpleNamespace(status_code=answer.get("status_code", 200) if answer else 404)
            request = SimpleNamespace(url=url, body=body.decode() or None, headers=dict(self.headers))
            content = answer.get("json", {"error": "not in the fake"})
            content = content(request, context) if callable(content) else content
            payload = json.dumps(content).encode()
            self.send_response(context.status_code)
            for name, value in answer.get("headers", {}).items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_DELETE = _answer

        def log_message(self, *_args: Any) -> None:
            """Quiet: a bench prints its figures only."""

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server.serve_forever()


def config_section(port: int) -> str:
    """A cloud managers file section for this fake."""
    return (f"[test_os]\ncm_type = openstack\nkeystone_base_url = http://127.0.0.1:{port}/v3\n"
            f"project_name = demo\nusername = demo\npassword = {PASSWORD}\n")


if __name__ == "__main__":
    serve(int(sys.argv[1]), float(sys.argv[2]))
