"""Snakemake run costs: only Snakemake's rescheduling timers are cancelled; the collector is held off while
Snakemake is imported and the workflow read, and only then."""

import gc
import threading

from mirage_reffiles.adapters.runtime import cancel_rescheduling_timers, freeze, hold, settle, unsettle


class Scheduler:  # stands in for Snakemake's JobScheduler: the same method name
    def __init__(self):
        self.looked_again = threading.Event()

    def _schedule_reevalutation(self, delay):
        timer = threading.Timer(delay, lambda: self.looked_again.set())
        timer.start()
        return timer


def test_only_the_schedulers_timers_are_cancelled():
    scheduler = Scheduler()
    rescheduling = scheduler._schedule_reevalutation(30)
    other_fired = threading.Event()
    other = threading.Timer(0.2, other_fired.set)
    other.start()
    assert cancel_rescheduling_timers() == 1
    rescheduling.join(timeout=5)
    assert not rescheduling.is_alive()  # it ended at once instead of in 30 s
    assert not scheduler.looked_again.is_set()
    assert other_fired.wait(timeout=5)  # the unrelated timer still ran


def test_settle_freezes_and_unsettle_gives_back():
    try:
        settle()
        assert gc.get_freeze_count() > 0
    finally:
        unsettle()
    assert gc.get_freeze_count() == 0


def test_hold_keeps_the_collector_off_until_the_workflow_freezes():
    assert gc.isenabled()
    try:
        hold()
        assert not gc.isenabled()
        freeze()
        assert gc.isenabled()
    finally:
        unsettle()
    gc.disable()  # a host process that runs without it keeps it so
    try:
        hold()
        freeze()
        assert not gc.isenabled()
    finally:
        unsettle()
        gc.enable()
    assert gc.isenabled()
