"""taskqueue.client against a real broker process (and the fake one only for NOTLEADER)."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from taskqueue.client import (AsyncClient, Backoff, Client, build_task, parse_address,
                              parse_addresses)
from taskqueue.errors import BrokerError, ConnectionLost
from taskqueue.resp import encode_error
from tests.brokerproc import free_port
from tests.fake_broker import FakeBroker


@pytest.fixture
def client(broker):
    with Client(broker.addr) as c:
        yield c


def run(coro):
    return asyncio.run(coro)


# ----------------------------------------------------------------------------- pure helpers

def test_addresses():
    assert parse_address("10.0.1.10:6379") == ("10.0.1.10", 6379)
    assert parse_address("broker") == ("broker", 6379)
    assert parse_address("[::1]:7000") == ("::1", 7000)
    assert parse_addresses("a:1, b:2") == [("a", 1), ("b", 2)]
    with pytest.raises(ValueError):
        parse_address("host:port")
    with pytest.raises(ValueError):
        parse_addresses("")


def test_build_task_always_has_an_id_and_rejects_typos():
    task = build_task("echo", 1, queue="q", priority=None)
    assert task["id"] and task["queue"] == "q" and "priority" not in task
    assert build_task("echo")["id"] != build_task("echo")["id"]
    with pytest.raises(TypeError, match="prio"):
        build_task("echo", prio=3)


def test_backoff_grows_with_jitter_and_resets():
    b = Backoff(initial=1, maximum=8)
    delays = [b.next() for _ in range(6)]
    assert 0.5 <= delays[0] <= 1 and 4 <= delays[-1] <= 8
    b.reset()
    assert b.next() <= 1


# ----------------------------------------------------------------------------- sync client

def test_hello_reply_and_ping(client):
    assert client.hello_reply["v"] == 1
    assert client.hello_reply["lease_timeout_secs"] == 2
    assert client.ping() == "PONG"


def test_submit_is_idempotent_by_client_id(client):
    first = client.submit("echo", {"n": 1}, queue="idem", priority=5)
    assert first["status"] == "pending" and first["priority"] == 5
    again = client.submit("echo", {"n": 2}, id=first["id"])
    assert again["duplicate"] is True and again["payload"] == {"n": 1}
    assert client.queues()["idem"]["pending"] == 1


def test_submit_task_object_as_exported(client):
    exported = client.submit("echo", "x")
    exported = {**client.get(exported["id"]), "id": None}
    copy = client.submit_task(exported)
    assert copy["id"] and copy["id"] != exported["id"] and copy["payload"] == "x"


def test_bulk_submit_returns_one_entry_per_task(client):
    results = client.submit_bulk([{"type": "echo", "payload": i} for i in range(50)])
    assert all(r["status"] == "pending" and r["duplicate"] is False for r in results)
    assert len({r["id"] for r in results}) == 50
    # in order: the n-th entry is the n-th task
    assert [client.get(r["id"])["payload"] for r in results] == list(range(50))


def test_fetch_ack_fail_and_fencing(client, broker):
    with Client(broker.addr, identity={"worker_id": "test-worker"}) as worker:
        assert worker.fetch(["empty-queue"], 1, timeout_ms=50) == []
        a = client.submit("echo", "a", queue="work")
        b = client.submit("echo", "b", queue="work", max_retries=0)
        jobs = worker.fetch(["work"], 10, timeout_ms=500)
        assert {j["id"] for j in jobs} == {a["id"], b["id"]}
        by_id = {j["id"]: j for j in jobs}
        assert worker.ack(a["id"], by_id[a["id"]]["token"], {"ok": True}) == "OK"
        assert client.get(a["id"])["result"] == {"ok": True}
        assert worker.fail(b["id"], by_id[b["id"]]["token"], "ValueError: x", "tb",
                           retry=True) == "OK"
        assert client.get(b["id"])["status"] == "dead"  # max_retries 0
        # Re-sending an ACK (after a lost connection) is harmless: nothing changes.
        try:
            worker.ack(a["id"], by_id[a["id"]]["token"], "again")
        except BrokerError as exc:
            assert exc.code in ("LEASELOST", "NOTFOUND")
        assert client.get(a["id"])["result"] == {"ok": True}


def test_fencing_rejects_the_token_of_an_expired_lease(client, broker):
    with Client(broker.addr, identity={"worker_id": "slowpoke"}) as worker:
        task = client.submit("echo", "fenced", queue="fence")
        [first] = worker.fetch(["fence"], 1, timeout_ms=500)
        time.sleep(2.6)  # lease 2 s, no heartbeat: the broker requeues it
        [second] = worker.fetch(["fence"], 1, timeout_ms=3000)
        assert second["id"] == task["id"] and second["token"] != first["token"]
        assert second["attempts"] == 2
        with pytest.raises(BrokerError) as info:
            worker.ack(task["id"], first["token"], "late")
        assert info.value.code == "LEASELOST"
        assert worker.ack(task["id"], second["token"], "on time") == "OK"
        assert client.get(task["id"])["result"] == "on time"


def test_ack_many_and_heartbeat(client, broker):
    with Client(broker.addr, identity={"worker_id": "batcher"}) as worker:
        ids = [client.submit("echo", i, queue="batch")["id"] for i in range(5)]
        jobs = worker.fetch(["batch"], 5, timeout_ms=500)
        assert len(jobs) == 5
        beat = worker.heartbeat([(j["id"], j["token"]) for j in jobs] + [("ghost", 1)])
        assert beat["state"] == "active" and beat["lost"] == ["ghost"]
        replies = worker.ack_many([(j["id"], j["token"], j["payload"]) for j in jobs])
        assert replies == ["OK"] * 5
        assert all(client.get(i)["status"] == "completed" for i in ids)
        assert worker.bye() == "OK"


def test_errors_raise_broker_error_with_code(client):
    with pytest.raises(BrokerError) as info:
        client.get("does-not-exist")
    assert info.value.code == "NOTFOUND" and not info.value.retryable
    with pytest.raises(BrokerError) as info:
        client.fetch(["default"])  # not a worker connection
    assert info.value.code in ("BADREQ", "NOPERM", "NOAUTH")
    assert client.ping() == "PONG"  # the connection is still usable


def test_cancel_requeue_pause_resume(client):
    task = client.submit("echo", None, queue="ops")
    assert client.cancel(task["id"])["status"] == "cancelled"
    assert client.requeue(task["id"])["status"] == "pending"
    assert client.pause("ops") == "OK"
    assert client.queues()["ops"]["paused"] is True
    assert client.resume("ops") == "OK"


def test_iter_tasks_follows_cursors_up_to_the_limit(client):
    client.submit_bulk([{"type": "echo", "payload": i, "queue": "paging"} for i in range(25)])
    tasks = list(client.iter_tasks(queue="paging", limit=20, page_size=7))
    assert len(tasks) == 20
    everything = list(client.iter_tasks(queue="paging", page_size=7))
    assert len(everything) == 25 and len({t["id"] for t in everything}) == 25


def test_cannot_connect_raises_connection_lost():
    with pytest.raises(ConnectionLost):
        Client(f"127.0.0.1:{free_port()}", connect_timeout=1).connect()


def test_address_list_skips_a_dead_node(broker):
    with Client(f"127.0.0.1:{free_port()},{broker.addr}") as c:
        assert c.ping() == "PONG"
        assert c.address == ("127.0.0.1", broker.port)


def test_sync_client_reconnects_after_broker_restart(broker, client):
    task = client.submit("echo", "durable")
    broker.terminate()
    with pytest.raises(ConnectionLost):
        client.get(task["id"])
    broker.start()
    assert client.get(task["id"])["payload"] == "durable"  # the next call reconnects


def test_connect_with_backoff_gives_up_at_the_deadline():
    c = Client(f"127.0.0.1:{free_port()}", connect_timeout=0.2)
    started = time.monotonic()
    with pytest.raises(ConnectionLost):
        c.connect_with_backoff(deadline_secs=1.0, backoff=Backoff(0.1, 0.2))
    assert 0.5 < time.monotonic() - started < 3


def test_notleader_is_followed_to_the_leader(broker):
    follower = FakeBroker().start()
    try:
        follower.override["SUBMIT"] = encode_error("NOTLEADER", f"leader={broker.addr}")
        with Client(follower.address) as c:
            task = c.submit("echo", "redirected")
            assert c.address == ("127.0.0.1", broker.port)
        with Client(broker.addr) as direct:
            assert direct.get(task["id"])["payload"] == "redirected"
    finally:
        follower.stop()


def test_notleader_without_a_leader_raises(broker):
    follower = FakeBroker().start()
    try:
        follower.override["SUBMIT"] = encode_error("NOTLEADER", "leader=")
        with Client(follower.address) as c, pytest.raises(BrokerError) as info:
            c.submit("echo")
        assert info.value.code == "NOTLEADER" and info.value.retryable
    finally:
        follower.stop()


def test_api_key_from_environment(monkeypatch, broker):
    monkeypatch.setenv("TQ_API_KEY", "from-env")
    follower = FakeBroker().start()
    try:
        Client(follower.address).connect()
        assert follower.hellos[-1]["api_key"] == "from-env"
    finally:
        follower.stop()


# ----------------------------------------------------------------------------- async client

def test_async_pipelining_keeps_replies_in_order(broker):
    async def main():
        async with AsyncClient(broker.addr) as c:
            tasks = await asyncio.gather(*(c.submit("echo", i, queue="pipe")
                                           for i in range(500)))
            assert [t["payload"] for t in tasks] == list(range(500))
            got = await asyncio.gather(*(c.get(t["id"]) for t in tasks[::-1]))
            assert [t["payload"] for t in got] == list(range(500))[::-1]
    run(main())


def test_async_errors_do_not_desynchronise_the_pipeline(broker):
    async def main():
        async with AsyncClient(broker.addr) as c:
            ok = await c.submit("echo", "x")
            results = await asyncio.gather(
                c.get(ok["id"]), c.get("missing-1"), c.ping(), c.get("missing-2"),
                c.get(ok["id"]), return_exceptions=True)
            assert results[0]["id"] == ok["id"] and results[4]["id"] == ok["id"]
            assert isinstance(results[1], BrokerError) and results[1].code == "NOTFOUND"
            assert results[2] == "PONG"
    run(main())


def test_async_cancelled_caller_does_not_shift_replies(broker):
    async def main():
        async with AsyncClient(broker.addr, identity={"worker_id": "canceller"}) as c:
            blocked = asyncio.create_task(c.fetch(["nothing-here"], 1, timeout_ms=500))
            await asyncio.sleep(0.05)
            blocked.cancel()
            # The FETCH reply still arrives first and must be discarded, not given to PING.
            assert await c.ping() == "PONG"
    run(main())


def test_async_in_flight_calls_fail_on_connection_loss_then_reconnect(broker):
    async def main():
        async with AsyncClient(broker.addr, identity={"worker_id": "aborted"}) as c:
            pending = asyncio.create_task(c.fetch(["nothing-here"], 1, timeout_ms=5000))
            await asyncio.sleep(0.1)
            c.abort()
            with pytest.raises(ConnectionLost):
                await pending
            assert await c.ping() == "PONG"  # reconnected, HELLO again
    run(main())


def test_async_reply_timeout_aborts_the_connection(broker):
    follower = FakeBroker().start()

    async def main():
        async with AsyncClient(follower.address, reply_timeout=0.3) as c:
            follower.override["GET"] = b""  # never answers
            with pytest.raises(ConnectionLost, match="no reply"):
                await c.get("x")
            del follower.override["GET"]
            assert await c.ping() == "PONG"
    try:
        run(main())
    finally:
        follower.stop()


def test_async_cannot_connect():
    async def main():
        with pytest.raises(ConnectionLost):
            await AsyncClient(f"127.0.0.1:{free_port()}").connect()
    run(main())


def test_hello_refused_with_notleader_connects_to_the_leader(broker):
    follower = FakeBroker().start()
    try:
        follower.override["HELLO"] = encode_error("NOTLEADER", f"leader={broker.addr}")
        with Client(follower.address) as c:
            assert c.address == ("127.0.0.1", broker.port) and c.ping() == "PONG"

        async def main():
            async with AsyncClient(follower.address) as a:
                assert a.address == ("127.0.0.1", broker.port)
                return await a.ping()
        assert run(main()) == "PONG"
    finally:
        follower.stop()


def test_hello_refusals_other_than_notleader_are_final(broker):
    follower = FakeBroker().start()
    try:
        follower.override["HELLO"] = encode_error("BADVERSION", "speak 2")
        with pytest.raises(BrokerError) as info:
            Client(f"{follower.address},{broker.addr}").connect()
        assert info.value.code == "BADVERSION"
    finally:
        follower.stop()


def wait_listening(port: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert time.monotonic() < deadline, f"nothing listens on {port}"
            time.sleep(0.1)


def test_async_client_names_a_wrong_port_at_once(broker_factory):
    """Issue 11, as tq-admin does (tests/test_admin_cli.py): the asyncio client reaching the
    REST, gRPC or metrics port says so at once instead of waiting for HELLO's reply timeout."""
    rest, grpc, metrics = free_port(), free_port(), free_port()
    node = broker_factory({"api": {"rest_port": rest, "grpc_port": grpc},
                           "monitoring": {"prometheus_port": metrics}}, name="ports")

    async def hello(addr: str) -> dict:
        client = AsyncClient(addr, reply_timeout=30)
        try:
            return await client.connect()
        finally:
            await client.close()

    for port, what in ((rest, "answers HTTP,"), (grpc, "answers HTTP/2 (gRPC)"),
                       (metrics, "answers HTTP,")):
        wait_listening(port)  # the broker is ready once its protocol port is
        started = time.monotonic()
        with pytest.raises(ConnectionLost) as caught:
            run(hello(f"127.0.0.1:{port}"))
        assert time.monotonic() - started < 10, "waited for the reply timeout"
        assert what in str(caught.value), str(caught.value)
        assert "the protocol port is broker.port, 6379 by default" in str(caught.value)
    assert run(hello(node.addr))["role"] == "single"  # the protocol port still works
