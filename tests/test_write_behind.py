"""WriteBehind: items applied in order by a thread of their own, a bounded backlog, failures
stopping both sides. Threads meet on events and on the backlog's own condition: no test waits
for time."""

from __future__ import annotations

import threading

import pytest

from nurture_mail.write_behind import WriteBehind


class Gate:
    """An `apply` that records each item and, for the items named, waits until opened."""

    def __init__(self, hold=(), fail=None):
        self.applied: list = []
        self.hold = set(hold)
        self.fail = fail
        self.started = {item: threading.Event() for item in self.hold}
        self.opened = threading.Event()

    def __call__(self, item) -> None:
        if item in self.hold:
            self.started[item].set()
            assert self.opened.wait(30), "the test never opened the gate"
        if item == self.fail:
            raise RuntimeError(f"cannot apply {item}")
        self.applied.append(item)


def blocked_put(behind: WriteBehind, gate: Gate, item, size: int = 0) -> bool:
    """Put `item`; True if put had to wait for the backlog (it opens the gate when it does)."""
    waited = []
    real_wait = behind._changed.wait

    def wait(*args):
        if not waited:
            waited.append(True)
            gate.opened.set()
        return real_wait(*args)

    behind._changed.wait = wait
    try:
        behind.put(item, size)
    finally:
        behind._changed.wait = real_wait
    return bool(waited)


def test_items_are_applied_in_order_and_all_of_them_by_close():
    gate = Gate()
    with WriteBehind(gate, depth=2, max_bytes=1 << 20) as behind:
        for n in range(50):
            behind.put(n)
    assert gate.applied == list(range(50))


def test_put_waits_while_depth_items_are_in_hand():
    gate = Gate(hold=[0])
    with WriteBehind(gate, depth=2, max_bytes=1 << 20) as behind:
        behind.put(0)
        assert gate.started[0].wait(30)
        assert not blocked_put(behind, gate, 1)  # 0 being applied, 1 waiting: depth 2
        assert blocked_put(behind, gate, 2)  # a third waits until 0 is done
    assert gate.applied == [0, 1, 2]


def test_put_waits_while_the_backlog_holds_too_many_bytes():
    gate = Gate(hold=["a"])
    with WriteBehind(gate, depth=10, max_bytes=100) as behind:
        behind.put("a", 60)
        assert gate.started["a"].wait(30)
        assert blocked_put(behind, gate, "b", 60)  # 120 bytes > 100
    assert gate.applied == ["a", "b"]
    gate = Gate()
    with WriteBehind(gate, depth=10, max_bytes=100) as behind:
        behind.put("big", 500)  # one item alone is never refused, whatever its size
    assert gate.applied == ["big"]


def test_a_failure_is_raised_by_the_next_put_and_nothing_after_it_is_applied():
    gate = Gate(hold=[1], fail=1)
    behind = WriteBehind(gate, depth=1, max_bytes=1 << 20)
    behind.put(0)
    behind.put(1)
    assert gate.started[1].wait(30)
    with pytest.raises(RuntimeError, match="cannot apply 1"):
        blocked_put(behind, gate, 2)  # waits for 1, which fails
    behind.close()
    assert gate.applied == [0]


def test_a_failure_is_raised_by_close():
    gate = Gate(fail=3)
    behind = WriteBehind(gate, depth=10, max_bytes=1 << 20)
    for n in range(3 + 1):
        behind.put(n)
    with pytest.raises(RuntimeError, match="cannot apply 3"):
        behind.close()
    assert gate.applied == [0, 1, 2]


def test_leaving_on_an_exception_drops_the_waiting_items_after_the_one_being_applied():
    gate = Gate(hold=[0])
    with pytest.raises(KeyError), WriteBehind(gate, depth=5, max_bytes=1 << 20) as behind:
        behind.put(0)
        assert gate.started[0].wait(30)
        behind.put(1)
        behind.put(2)
        thread, real_join = behind._thread, behind._thread.join

        def join():  # the exit has dropped 1 and 2 by now: let 0 finish
            gate.opened.set()
            real_join()

        thread.join = join
        raise KeyError("the reader failed")
    assert gate.applied == [0]
    assert not thread.is_alive()  # nothing runs after the block


def test_nothing_put_starts_no_thread():
    behind = WriteBehind(Gate(), depth=2, max_bytes=100)
    behind.close()
    assert behind._thread is None


def test_interrupted_while_closing_only_the_item_in_flight_finishes():
    """Ctrl-C while the end of a sync waits for the store: the waiting items are dropped, the
    one being applied finishes, and nothing is applied after close has raised."""
    gate = Gate(hold=[0])
    behind = WriteBehind(gate, depth=5, max_bytes=1 << 20)
    behind.put(0)
    assert gate.started[0].wait(30)
    behind.put(1)
    behind.put(2)
    thread, real_join, joins = behind._thread, behind._thread.join, []

    def join():
        joins.append(True)
        if len(joins) == 1:
            raise KeyboardInterrupt  # as if Ctrl-C came while close waited
        gate.opened.set()
        real_join()

    thread.join = join
    with pytest.raises(KeyboardInterrupt):
        behind.close()
    assert gate.applied == [0]
    assert not thread.is_alive()


def test_after_a_failure_every_put_fails():
    gate = Gate(fail=0)
    behind = WriteBehind(gate, depth=1, max_bytes=1 << 20)
    behind.put(0)
    with pytest.raises(RuntimeError, match="cannot apply 0"):
        behind.close()
    with pytest.raises(RuntimeError, match="an earlier item failed"):
        behind.put(1)
    assert gate.applied == []


def test_when_both_sides_fail_the_store_failure_is_kept_as_a_note():
    gate = Gate(fail=0)
    with pytest.raises(KeyError) as raised, WriteBehind(gate, depth=5, max_bytes=1 << 20) as behind:
        behind.put(0)
        behind._thread.join()  # 0 has failed; nobody has asked yet
        raise KeyError("the reader failed")
    assert any("cannot apply 0" in note for note in raised.value.__notes__)


def test_unthreaded_applies_each_item_at_once_in_the_callers_thread():
    threads = []
    gate = Gate(fail=2)

    def apply(item):
        threads.append(threading.current_thread())
        gate(item)

    behind = WriteBehind(apply, depth=1, max_bytes=1, threaded=False)
    behind.put(0, 10)
    behind.put(1, 10)
    assert gate.applied == [0, 1]  # at once: no backlog, whatever the sizes
    with pytest.raises(RuntimeError, match="cannot apply 2"):
        behind.put(2)
    with pytest.raises(RuntimeError, match="an earlier item failed"):
        behind.put(3)
    behind.close()
    assert threads == [threading.current_thread()] * 3 and behind._thread is None
