"""The one worker pool and the one transfer limit of an operation (registry_tools.workers)."""
from __future__ import annotations

import os
import sys
import threading
from concurrent.futures import CancelledError
import time

import pytest

from registry_tools.cancel import Cancel
from registry_tools.errors import Interrupted
from registry_tools.workers import Workers


class Peak:
    """How many callers are inside at once, at most."""

    def __init__(self) -> None:
        self.now = 0
        self.max = 0
        self._lock = threading.Lock()

    def __enter__(self) -> None:
        with self._lock:
            self.now += 1
            self.max = max(self.max, self.now)

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self.now -= 1


def test_a_group_runs_at_most_its_limit_at_once():
    workers, peak = Workers(8), Peak()

    def task(i: int) -> int:
        with peak:
            time.sleep(0.02)
        return i * i

    with workers.group(3) as group:
        futures = [group.submit(task, i) for i in range(12)]
    assert [f.result() for f in futures] == [i * i for i in range(12)] and peak.max == 3
    workers.close()


def test_transfers_of_every_group_share_the_one_limit():
    workers, peak = Workers(2), Peak()

    def transfer() -> None:
        with workers.transfer(), peak:
            time.sleep(0.02)

    downloads, uploads = workers.group(4), workers.group(4)
    for _ in range(6):
        downloads.submit(transfer)
        uploads.submit(transfer)
    downloads.join()
    uploads.join()
    assert peak.max == 2
    workers.close()


def test_a_spare_transfer_waits_while_any_other_transfer_wants_a_slot():
    """The lanes of a blob fetched in ranges take slots as spares: a blob of its own that waits
    for a slot gets the next one, whichever of them asked first."""
    workers, order = Workers(1), []
    held, go = threading.Event(), threading.Event()

    def holder() -> None:
        with workers.transfer():
            held.set()
            go.wait(5)

    def take(name: str, spare: bool) -> None:
        with workers.transfer(spare=spare):
            order.append(name)

    group = workers.group(4)
    group.submit(holder)
    assert held.wait(5)
    group.submit(take, "spare", True)
    time.sleep(0.1)  # the spare asks first
    group.submit(take, "blob", False)
    time.sleep(0.1)
    go.set()
    group.join()
    assert order == ["blob", "spare"]
    with workers.transfer(spare=True):  # a free slot no one else wants is the spare's at once
        pass
    workers.close()


def test_tasks_waiting_for_tasks_of_another_group_do_not_starve_them():
    """The images of a sync each wait for their own downloads, in the same pool."""
    workers = Workers(1)

    def image(i: int) -> int:
        with workers.group() as downloads:
            parts = [downloads.submit(lambda n=n: n, n) for n in range(3)]
        return sum(p.result() for p in parts) + i

    with workers.group(20) as images:
        futures = [images.submit(image, i) for i in range(40)]
    assert [f.result() for f in futures] == [3 + i for i in range(40)]
    workers.close()


def test_the_first_failure_is_raised_at_once_and_waiting_tasks_never_start():
    workers, started = Workers(4), []
    release = threading.Event()

    def slow(i: int) -> None:
        started.append(i)
        release.wait(5)

    def fail() -> None:
        raise ValueError("broken layer")

    group = workers.group(2)
    group.submit(slow, 0)
    group.submit(fail)
    for i in range(1, 6):
        group.submit(slow, i)
    t0 = time.monotonic()
    with pytest.raises(ValueError, match="broken layer"):
        group.join()
    assert time.monotonic() - t0 < 1  # not after the slow task
    release.set()
    group.drain()
    assert started[0] == 0 and len(started) <= 2  # at most the one that took the failed task's place
    assert sum(f.cancelled() for f in group.futures) >= 4
    workers.close()


def test_waiting_for_a_transfer_slot_ends_when_the_operation_is_cancelled():
    cancel = Cancel()
    workers = Workers(1, cancel)
    got: list[BaseException] = []

    def waiter() -> None:
        try:
            with workers.transfer():
                pass
        except Interrupted as e:
            got.append(e)

    with workers.transfer():
        t = threading.Thread(target=waiter)
        t.start()
        time.sleep(0.05)
        t0 = time.monotonic()
        cancel.set("stopped by the test")
        t.join(2)
        assert not t.is_alive() and time.monotonic() - t0 < 0.5
    assert got and "stopped by the test" in str(got[0])


def test_an_ended_operation_starts_nothing_new():
    cancel = Cancel()
    workers = Workers(2, cancel)
    cancel.set("interrupted by the test")
    workers.close()
    f = workers.group().submit(lambda: 1)
    with pytest.raises(Interrupted, match="interrupted by the test"):
        f.result(timeout=2)


def test_waiting_tasks_of_an_ended_operation_end_too():
    """A group's waiting tasks, some cancelled, when the pool closes under them: every one ends."""
    cancel = Cancel()
    workers = Workers(1, cancel)
    gate = threading.Event()
    group = workers.group(1)
    first = group.submit(gate.wait, 5)
    rest = [group.submit(lambda: 1) for _ in range(4)]
    rest[0].cancel()
    cancel.set("stopped by the test")
    workers.close()
    gate.set()
    first.result(timeout=2)
    for f in rest:
        with pytest.raises((Interrupted, CancelledError)):
            f.result(timeout=2)


def test_six_transfers_by_default_and_packing_within_the_cores(monkeypatch):
    """--jobs defaults to skopeo's six parallel downloads; a build packs half as many layers at
    once, at least two and no more than the machine has cores (packing is CPU work)."""
    import os
    from types import SimpleNamespace

    from registry_tools.builder.image import packers
    from registry_tools.cli.parser import build_parser

    args = build_parser("pull").parse_args(["pull", "example.com/a@sha256:" + "0" * 64, "-o", "out.tar"])
    assert args.jobs == 6
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert packers(SimpleNamespace(concurrency=6)) == 2
    assert packers(SimpleNamespace(concurrency=1)) == 2
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    assert packers(SimpleNamespace(concurrency=6)) == 3
    assert packers(SimpleNamespace(concurrency=12)) == 6


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread priorities are Linux's")
def test_work_that_gives_way_runs_lower_on_its_own_thread_and_hands_back_its_result():
    from registry_tools.cancel import current
    from registry_tools.workers import GIVE_WAY, giving_way

    me = threading.get_native_id()
    before = os.getpriority(os.PRIO_PROCESS, me)
    cancel = Cancel()
    seen = {}

    def work() -> int:
        tid = threading.get_native_id()
        seen.update(tid=tid, nice=os.getpriority(os.PRIO_PROCESS, tid), scope=current())
        return 42

    with cancel.scope():
        assert giving_way(work) == 42
    assert seen["tid"] != me and seen["nice"] == min(19, before + GIVE_WAY)
    assert seen["scope"] is cancel  # its registry requests stop with the caller's cancellation
    assert os.getpriority(os.PRIO_PROCESS, me) == before  # the caller's own priority is untouched

    def broken() -> None:
        raise Interrupted("stopped")

    with pytest.raises(Interrupted, match="stopped"):
        giving_way(broken)
