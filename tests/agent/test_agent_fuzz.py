"""1,000+ random and malformed messages: the agent survives and answers every addressable one."""

import json
import random

import pytest

from tests.support.agent import request, unique

pytestmark = pytest.mark.rabbitmq

SCALARS = [None, True, False, 0, -1, 2.5, "", "x", "cloudmanagers", "read", [], {}, [1, "a"], {"k": None}]


def random_value(rng, depth=0):
    if depth < 2 and rng.random() < 0.3:
        return {rng.choice(["name", "id", "n", "sleep", "wait", "x"]): random_value(rng, depth + 1)
                for _ in range(rng.randint(0, 3))}
    return rng.choice(SCALARS)


def random_message(rng, self_uuid):
    """(body, filtered_out): a body and whether its filters exclude this agent."""
    kind = rng.random()
    if kind < 0.15:
        return bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 64))), False
    if kind < 0.2:
        return rng.choice([b"", b"null", b"[]", b"1e999", b"[" * 5000, b'{"a":' * 3000, "é".encode("latin-1")]), False
    message = {key: random_value(rng) for key in rng.sample(
        ["collection", "action", "id", "attributes", "monitor", "timestamp", "extra"], rng.randint(0, 7))}
    if rng.random() < 0.5:
        message.update(request(rng.choice(["read", "create", "ping", "bogus"]), cm=rng.choice(["cm1", "", "c" * 300])))
        message["attributes"] = {"n": "fuzz", "sleep": 0, "name": rng.choice(["vm1", "vm2", None, 5])}
    filtered = False
    if rng.random() < 0.3:
        choice = rng.randrange(4)
        message["filters"] = [{}, {"uuids": [self_uuid]}, {"uuids": ["other"]}, {"zones": ["z"]}][choice]
        filtered = choice >= 2
    return json.dumps(message).encode(), filtered


def test_fuzz_thousand_messages(start_agent, requester):
    rng = random.Random(20130604)
    agent = start_agent()
    uuid = agent.settings.uuid
    expected = set()
    for index in range(1200):
        body, filtered = random_message(rng, uuid)
        roll = rng.random()
        if roll < 0.1:  # a reply exchange that does not exist: the reply is dropped, the agent goes on
            requester.send(body, uuid, headers={"reply_exchange": unique("nowhere")})
        elif roll < 0.15:  # no reply address at all
            requester.send(body, uuid, headers=None, reply=False)
        else:  # a reply_exchange header of the wrong type falls back to publish_exchange ("")
            headers = rng.choice([{"reply_exchange": ""}, {"reply_exchange": b""}, {"reply_exchange": 5}])
            corr = requester.send(body, uuid, headers=headers)
            if not filtered:
                expected.add(corr)
        if index % 100 == 0:
            requester.connection.process_data_events(time_limit=0)
    got = requester.replies(len(expected), timeout=60)
    assert set(got) == expected
    assert all(set(reply) >= {"uuid", "status", "msg_type", "version", "collection", "resource_id"}
               for reply in got.values())
    assert agent.thread.is_alive()
    alive = requester.send(request("ping", n="alive"), uuid)
    assert alive in requester.replies(len(expected) + 1)
