"""An HTTP fake OpenStack on a real socket, each Nova VM look-up answered after a latency.

The unit tests' FakeCloud answers through requests-mock, which serialises every request of a
process behind one lock: 8 workers against a 200 ms fake would run one request at a time. This
serves it from a threading HTTP server (``tests/support/httpcloud.py``), so concurrent requests
overlap as they do against a real cloud:
    python -m bench.http_cloud PORT LATENCY     Keystone at http://127.0.0.1:PORT/v3, Nova at .../v2.1,
                                                vm-0 ... vm-63; until SIGTERM
"""

import signal
import sys

from tests.support.fakecloud import PASSWORD
from tests.support.httpcloud import HTTPCloud

SERVERS = 64


def serve(port: int, latency: float) -> None:
    served = HTTPCloud(port, latency)
    for n in range(SERVERS):
        served.cloud.add_server(f"vm-{n}")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    served.serve_forever()


def config_section(port: int) -> str:
    """A cloud managers file section for this fake."""
    return (f"[test_os]\ncm_type = openstack\nkeystone_base_url = http://127.0.0.1:{port}/v3\n"
            f"project_name = demo\nusername = demo\npassword = {PASSWORD}\n")


if __name__ == "__main__":
    serve(int(sys.argv[1]), float(sys.argv[2]))
