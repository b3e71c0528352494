"""Stop signals and the status of a live run: what a scheduler's SIGTERM and a Ctrl-C do, and
how a running run is told from a dead one."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from procmem.run.heartbeat import Heartbeat
from procmem.run.run_dir import RunDir
from procmem.run.signals import RunStopped, StopSignals
from procmem.run.status import FINISHED, RUNNING, STALE_SECONDS, RunStatus


def test_inside_the_training_loop_the_first_signal_asks_and_the_second_stops_at_once():
    before = signal.getsignal(signal.SIGTERM)
    with StopSignals() as stop:
        with stop.deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            assert stop.requested == signal.SIGTERM  # the loop finishes its iteration
            with pytest.raises(RunStopped) as raised:
                os.kill(os.getpid(), signal.SIGINT)
        assert raised.value.exit_code == 130
    assert signal.getsignal(signal.SIGTERM) is before  # the old handler is back


def test_outside_the_training_loop_a_signal_stops_at_once():
    with StopSignals(), pytest.raises(RunStopped) as raised:
        os.kill(os.getpid(), signal.SIGTERM)
    assert (raised.value.signal_name, raised.value.exit_code) == ("SIGTERM", 143)


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


STATUSES = {  # made when the test runs: a heartbeat is fresh for a minute
    "this process": (RunStatus.of_this_process, True),
    "dead pid": (lambda: RunStatus(RUNNING, pid=dead_pid(), host=socket.gethostname(),
                                   heartbeat=time.time()), False),
    "stale heartbeat": (lambda: RunStatus(RUNNING, pid=os.getpid(), host=socket.gethostname(),
                                          heartbeat=time.time() - STALE_SECONDS - 1), False),
    "other host, fresh": (lambda: RunStatus(RUNNING, pid=1, host="another-node",
                                            heartbeat=time.time()), True),
    "other host, stale": (lambda: RunStatus(RUNNING, pid=1, host="another-node",
                                            heartbeat=time.time() - STALE_SECONDS - 1), False),
    "no heartbeat": (lambda: RunStatus(RUNNING), False),  # written before there was one
    "finished": (lambda: RunStatus.of_this_process().ended(FINISHED), False),
}


@pytest.mark.parametrize("case", STATUSES)
def test_a_running_status_is_alive_only_with_its_process(case: str):
    make, alive = STATUSES[case]
    assert make().alive() is alive


def test_the_heartbeat_is_renewed_until_the_run_ends(tmp_path):
    run = RunDir(tmp_path)
    heartbeat = Heartbeat(run, interval=0.02)
    first = run.status()
    assert (first.status, first.pid, first.host) == (RUNNING, os.getpid(), socket.gethostname())
    time.sleep(0.2)
    assert run.status().heartbeat > first.heartbeat
    assert run.status().started == first.started
    heartbeat.end(FINISHED)
    ended = run.status()
    time.sleep(0.1)
    assert run.status() == ended and ended.status == FINISHED and not ended.alive()
