"""Reads of one VM run side by side, changes keep their place, identical reads share one run."""

import json
import re
import threading

from pika import BasicProperties

from cloudmanagers_plugin.agent.admission import Gate, HostFilter
from cloudmanagers_plugin.agent.execution import ADMISSION, AnswerCache, Dispatcher, OrderedPool, cached_weight
from cloudmanagers_plugin.agent.transport import Delivery
from tests.support.fakecloud import NOVA

WAIT = 10  # seconds an event may take before the test fails (never a measured duration)


def test_reads_between_changes_run_side_by_side_and_changes_keep_their_place():
    pool = OrderedPool(4)
    log, lock = [], threading.Lock()
    both_reads_running = threading.Barrier(2, timeout=WAIT)  # one read at a time would break it

    def job(label, meet=False):
        def run():
            with lock:
                log.append(("start", label))
            if meet:
                both_reads_running.wait()
            with lock:
                log.append(("end", label))
        return run

    pool.submit("vm", job("create"))
    pool.submit("vm", job("read1", meet=True), shared=True)
    pool.submit("vm", job("read2", meet=True), shared=True)
    pool.submit("vm", job("update"))
    pool.submit("vm", job("read3"), shared=True)
    pool.shutdown()
    position = {entry: index for index, entry in enumerate(log)}
    assert not both_reads_running.broken
    assert position[("end", "create")] < min(position[("start", "read1")], position[("start", "read2")])
    assert max(position[("end", "read1")], position[("end", "read2")]) < position[("start", "update")]
    assert position[("end", "update")] < position[("start", "read3")]


def test_a_read_sent_after_a_queued_change_waits_for_it():
    pool = OrderedPool(4)
    release, order = threading.Event(), []
    pool.submit("vm", lambda: (release.wait(WAIT), order.append("read1")), shared=True)
    pool.submit("vm", lambda: order.append("delete"))
    pool.submit("vm", lambda: order.append("read2"), shared=True)  # must not join read1 past the delete
    release.set()
    pool.shutdown()
    assert order == ["read1", "delete", "read2"]


def test_a_long_queue_of_changes_on_one_key_runs_through():
    pool = OrderedPool(2)
    done = []
    for n in range(3000):  # more than the interpreter's recursion limit
        pool.submit("vm", lambda n=n: done.append(n))
    pool.shutdown()
    assert done == list(range(3000))


class TrackingPool(OrderedPool):
    """Counts the executions (not admissions) that have returned."""

    def __init__(self, workers):
        super().__init__(workers)
        self.executed = threading.Semaphore(0)

    def submit(self, key, job, shared=False):
        if key == ADMISSION:
            return super().submit(key, job, shared)

        def tracked():
            job()
            self.executed.release()
        return super().submit(key, tracked, shared)


class Replies:
    def __init__(self):
        self.bodies, self.all_in = [], threading.Semaphore(0)

    def reply_and_ack(self, delivery, answer, duplicate):
        self.bodies.append(answer.body)
        self.all_in.release()


def test_identical_reads_in_flight_make_one_openstack_request(controller, cloud):
    cloud.add_server("web")
    body = json.dumps({"collection": "cloudmanagers", "action": "read", "id": "test_os",
                       "attributes": {"name": "web"}}).encode()
    assert "error" not in controller.process(json.loads(body))  # token and console URL cached
    entered, release = threading.Event(), threading.Event()

    def held_detail(request, context):
        entered.set()
        release.wait(WAIT)
        return cloud._detail(request, context)

    cloud.mocker.get(re.compile(rf"^{re.escape(NOVA)}/servers/detail(\?.*)?$"), json=held_detail)
    pool, replies = TrackingPool(4), Replies()
    subject = Dispatcher(Gate("agent", "cloudmanagers", HostFilter("agent"), None, 0), controller, pool,
                         AnswerCache(16, 1 << 20, cached_weight), lambda callback: callback(), 1 << 20, replies)
    before = cloud.count("nova")
    subject.handle(Delivery(None, 1, BasicProperties(correlation_id="first"), body))
    assert entered.wait(WAIT)
    subject.handle(Delivery(None, 2, BasicProperties(correlation_id="second"), body))
    joined = pool.executed.acquire(timeout=WAIT)  # the second read returned while the first was held
    release.set()
    assert all(replies.all_in.acquire(timeout=WAIT) for _ in range(2))
    pool.shutdown()
    assert joined and cloud.count("nova") - before == 1
    assert replies.bodies[0] == replies.bodies[1] and b'"web"' in replies.bodies[0]


def test_a_job_submitted_by_a_job_runs_next_in_its_thread_unless_its_key_has_more():
    pool = OrderedPool(4)
    threads = {}
    more_admissions = threading.Event()

    def admission(name, then_key):
        def run():
            threads[name] = threading.current_thread()
            pool.submit(then_key, lambda: threads.setdefault(f"{name} execution", threading.current_thread()))
        return run

    pool.submit(ADMISSION, admission("alone", "vm1"))
    pool.shutdown()
    assert threads["alone execution"] is threads["alone"]  # no second thread woken

    pool, threads = OrderedPool(4), {}
    pool.submit(ADMISSION, lambda: (more_admissions.wait(WAIT), admission("first", "vm2")()))
    pool.submit(ADMISSION, admission("second", "vm3"))
    more_admissions.set()
    pool.shutdown()
    assert threads["first execution"] is not threads["first"]  # the next admission does not wait for it
    assert threads["second execution"] is threads["second"]
