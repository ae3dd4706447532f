"""What one agent of a group is doing now, for health checks and metrics.

The agent's I/O thread is the only writer; readers (a metrics endpoint, tests) may read the
attributes from any thread: each is a plain str or int, replaced whole.

The role under RabbitMQ's single active consumer: AMQP 0-9-1 has no "you are now active"
notification (the broker simply starts delivering to one consumer), so an agent is ``standby``
from its consume-ok until its first delivery, and ``active`` from then on, until its connection
or channel goes (then ``disconnected``, and ``standby`` again after the next consume-ok). An
active agent of an idle group therefore reports ``standby`` until a request arrives: the role
says who *worked*, never claims work it did not get. With ``competing`` consumers every
consuming agent gets deliveries, so it is ``active`` from consume-ok.
"""

from typing import Callable, List

ACTIVE, STANDBY, DISCONNECTED = "active", "standby", "disconnected"

RoleListener = Callable[[str], None]


class AgentStatus:
    """The role, the broker node in use, and counters since the agent started."""

    def __init__(self, single_active: bool) -> None:
        self.single_active = single_active
        self.role = DISCONNECTED
        self.broker_node = ""  # host:port of the node the agent is connected to, "" when none
        self.connections = 0  # successful connections (the first one included)
        self.reconnects = 0  # connections after the first: failovers and recoveries
        self.redeliveries = 0  # deliveries the broker flagged as redelivered
        self.abandoned = 0  # requests answered "abandoned" at the delivery limit
        self._listeners: List[RoleListener] = []

    def on_role_change(self, listener: RoleListener) -> None:
        """Call ``listener(role)`` on the I/O thread whenever the role changes."""
        self._listeners.append(listener)

    def connected(self, node: str) -> None:
        self.broker_node = node
        self.connections += 1
        self.reconnects = self.connections - 1

    def consuming(self) -> None:
        self._set_role(STANDBY if self.single_active else ACTIVE)

    def delivered(self, redelivered: bool) -> None:
        self.redeliveries += bool(redelivered)
        if self.role != ACTIVE:
            self._set_role(ACTIVE)

    def disconnected(self) -> None:
        self.broker_node = ""
        self._set_role(DISCONNECTED)

    def _set_role(self, role: str) -> None:
        if role == self.role:
            return
        self.role = role
        for listener in self._listeners:
            listener(role)
