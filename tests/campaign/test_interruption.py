"""A campaign run can be interrupted even when the campaign itself ignores SIGINT.

Started in the background from a script (``campaign ... &``: bash ignores SIGINT in background commands of a
non-interactive shell, and CI runs that way), the campaign's processes ignore SIGINT, and an ignored signal is
inherited through exec. The run's ``kedro run`` must still take the SIGINT with which the job passes on the
scheduler's preemption notice, or it trains to its end instead of saving its checkpoint and stopping.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

from isles_diffseg.campaign.runs import FoldRun, RunSpec

# Stands for the run's kedro run: says it is up, then waits to be interrupted (exit 0) or not (exit 3)
CHILD = """
import sys, time
open(sys.argv[1], "w").close()
try:
    time.sleep(30)
except KeyboardInterrupt:
    sys.exit(0)
sys.exit(3)
"""


def test_the_run_takes_sigint_although_the_campaign_ignores_it(tmp_path):
    run = FoldRun(RunSpec(str(tmp_path), "bg", {}, gpus=0))
    ready = tmp_path / "ready"

    def interrupt_when_ready() -> None:
        deadline = time.monotonic() + 60
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        run.interrupt()  # what the job does on the scheduler's SIGUSR2

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        interrupter = threading.Thread(target=interrupt_when_ready)
        interrupter.start()
        started = time.monotonic()
        run._run([sys.executable, "-c", CHILD, str(ready)], dict(os.environ))  # raises unless the child exits 0
        interrupter.join()
        assert time.monotonic() - started < 25  # stopped by the interruption, not by its own end
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # the campaign's own disposition is kept
    finally:
        signal.signal(signal.SIGINT, previous)


def test_training_takes_the_first_sigint_at_a_step_boundary_and_a_second_at_once():
    """The trainer's SIGINT handling: a KeyboardInterrupt raised wherever Python happens to be can be swallowed
    (copyreg's bare except while torch.save pickles a checkpoint), so the first SIGINT only asks the loop to stop
    after its step; a second one interrupts at once; the caller's handler is back afterwards."""
    from isles_diffseg.training.trainer import StopRequest

    # Python's own handler, as an interactive or foreground run has it (a shell's background job inherits SIGINT
    # ignored, and then the trainer rightly leaves it alone: the end of this test)
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    assert StopRequest.install(world_size=2) is None  # DDP ranks keep the immediate interruption
    stop = StopRequest.install(world_size=1)
    assert stop is not None
    try:
        signal.raise_signal(signal.SIGINT)
        assert stop.pending  # no KeyboardInterrupt here, in the middle of a "step"
        try:
            signal.raise_signal(signal.SIGINT)
        except KeyboardInterrupt:
            pass
        else:
            raise AssertionError("a second SIGINT must interrupt at once")
    finally:
        stop.uninstall()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        assert StopRequest.install(world_size=1) is None  # an ignored SIGINT stays ignored
    finally:
        signal.signal(signal.SIGINT, inherited)
