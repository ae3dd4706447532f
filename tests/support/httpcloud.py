"""The faked Keystone and Nova (``fakecloud``) behind a real HTTP listener, for agent processes.

requests-mock only reaches the process it runs in; an agent started as a process (so that a test
can kill it) needs a socket. Each request that reaches the listener is sent on, in the test's
process, to the ``FakeCloud`` URLs that requests-mock answers, and the answer goes back as is.
A section pointing ``keystone_base_url`` at ``<url>/v3`` and ``nova_base_url`` at ``<url>/v2.1``
uses it (images by id and ``networks = auto`` need neither Glance nor Neutron).

``hold_creates()`` makes the listener hold the answer to each create once the VM exists, until
``release()``: a test can kill the agent after its create reached the cloud and before it heard back.
"""

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional

import requests
import requests_mock

from tests.support.fakecloud import KEYSTONE, NOVA, PASSWORD, FakeCloud

_PASSED_HEADERS = ("Content-Type", "X-Subject-Token", "X-OpenStack-Nova-API-Version", "OpenStack-API-Version")


class HTTPCloud:
    """``cloud`` (a FakeCloud) served on ``url`` (127.0.0.1, a port the system picks) until ``close()``."""

    def __init__(self) -> None:
        self._mocker = requests_mock.Mocker()
        self._mocker.start()
        self.cloud = FakeCloud(self._mocker)
        self.created = threading.Event()
        self._release: Optional[threading.Event] = None
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, name="httpcloud", daemon=True).start()

    def section(self, name: str = "cm1") -> str:
        """A cloud managers file section that uses this cloud."""
        return (f"[{name}]\ncm_type = openstack\nkeystone_base_url = {self.url}/v3\nnova_base_url = {self.url}/v2.1\n"
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
        self._mocker.stop()

    def _forward(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else None
        base = NOVA.rsplit("/v2.1", 1)[0] if handler.path.startswith("/v2.1") else KEYSTONE
        headers = {key: value for key, value in handler.headers.items() if key.lower() not in ("host", "content-length")}
        answer = requests.request(handler.command, base + handler.path, data=body, headers=headers)
        if handler.command == "POST" and handler.path.rstrip("/") == "/v2.1/servers" and answer.status_code == 202:
            self.created.set()
            if self._release is not None:
                self._release.wait(60)
        try:
            handler.send_response(answer.status_code)
            for key in _PASSED_HEADERS:
                if key in answer.headers:
                    handler.send_header(key, answer.headers[key])
            handler.send_header("Content-Length", str(len(answer.content)))
            handler.end_headers()
            handler.wfile.write(answer.content)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the agent was killed while its answer was held: that was the point

    def _handler(self) -> Any:
        forward = self._forward

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
                pass

            def do_GET(self) -> None:
                forward(self)

            do_POST = do_PUT = do_DELETE = do_GET

        return Handler
