"""The controller runtime's work queue: de-duplication, delayed adds and FIFO order."""

import time

from mlplane.control.runtime.workqueue import WorkQueue


def drain(q: WorkQueue, timeout: float) -> list[str]:
    """Every key the queue hands out within ``timeout`` seconds, each processed at once."""
    got = []
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        key = q.get(timeout=left)
        if key is None:
            break
        got.append(key)
        q.done(key)
    return got


def test_keys_come_out_in_the_order_they_were_added_once_each():
    q = WorkQueue()
    for key in ["a", "b", "a", "c", "b"]:
        q.add(key)
    assert len(q) == 3
    assert drain(q, 0.05) == ["a", "b", "c"]


def test_a_later_delayed_add_of_a_waiting_key_changes_nothing():
    q = WorkQueue()
    q.add_after("k", 0.05)
    q.add_after("k", 0.3)  # client-go keeps the earlier time and drops this one
    start = time.monotonic()
    assert q.get(timeout=1) == "k"
    assert time.monotonic() - start < 0.25
    q.done("k")
    assert drain(q, 0.5) == []  # no second run when the later time passes


def test_an_earlier_delayed_add_brings_a_waiting_key_forward_and_runs_it_once():
    q = WorkQueue()
    q.add_after("k", 0.3)
    q.add_after("k", 0.02)
    start = time.monotonic()
    assert q.get(timeout=1) == "k"
    assert time.monotonic() - start < 0.25
    q.done("k")
    assert drain(q, 0.5) == []


def test_many_delayed_adds_of_one_key_run_it_once():
    q = WorkQueue()
    for i in range(1000):
        q.add_after("k", 0.01 + i * 0.0001)
    assert drain(q, 0.3) == ["k"]


def test_a_delayed_key_can_wait_again_after_it_ran():
    q = WorkQueue()
    q.add_after("k", 0.01)
    assert drain(q, 0.1) == ["k"]
    q.add_after("k", 0.01)
    assert drain(q, 0.1) == ["k"]


def test_a_key_added_while_processing_runs_again_after_done():
    q = WorkQueue()
    q.add("k")
    assert q.get(timeout=0) == "k"
    q.add("k")
    assert q.get(timeout=0.02) is None  # one worker per key at a time
    q.done("k")
    assert q.get(timeout=0) == "k"
