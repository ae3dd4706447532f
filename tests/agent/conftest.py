"""Fixtures for the agent tests (the ``rabbitmq`` marker is registered in pytest.ini)."""

import pika
import pytest

from tests.support.agent import AgentThread, FakeController, Requester, agent_settings, delete_queue, unique


@pytest.fixture(scope="session")
def broker():
    """Fail (not skip) when RabbitMQ is down: these tests are the agent's only AMQP coverage."""
    try:
        pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", connection_attempts=3)).close()
    except pika.exceptions.AMQPError as err:
        pytest.fail(f"RabbitMQ is not reachable on 127.0.0.1:5672 ({err!r}); start it with rabbitmq-server -detached")


@pytest.fixture
def exchange(broker):
    """A private fanout exchange standing in for amq.fanout, so other agents stay out of the test."""
    name = unique("agent-test-fanout")
    with pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1")) as connection:
        connection.channel().exchange_declare(name, "fanout", auto_delete=False)
    yield name
    with pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1")) as connection:
        connection.channel().exchange_delete(name)


@pytest.fixture
def start_agent(exchange):
    """``start_agent(controller=None, **settings)`` -> a running AgentThread; all stopped at teardown."""
    agents = []

    def start(controller=None, **overrides):
        overrides.setdefault("exchange", exchange)
        settings = agent_settings(**overrides)
        agent = AgentThread(settings, controller or FakeController(agent_uuid=settings.uuid))
        agents.append(agent)
        return agent

    yield start
    for agent in agents:
        if agent.thread.is_alive():
            agent.stop()
        delete_queue(agent.settings.uuid)


@pytest.fixture
def requester(broker):
    client = Requester()
    yield client
    client.close()

