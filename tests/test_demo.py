"""Helpers of `mlplane demo` that the benchmarks share: stopping a child server process."""

import signal
import subprocess
import sys
import time

from mlplane.cli.demo import stop_process


def _child(code: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", f"import signal, sys, time\n{code}\nprint('ready', flush=True)\n"
                                                   "time.sleep(30)"], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "ready\n"  # its signal handlers are in place
    proc.stdout.close()
    return proc


def test_a_server_that_shuts_down_on_sigterm_is_waited_for():
    proc = _child("signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))")
    assert stop_process(proc, timeout=10) == 0
    assert proc.returncode == 0


def test_a_server_that_ignores_sigterm_is_killed_after_the_timeout_and_reaped():
    proc = _child("signal.signal(signal.SIGTERM, signal.SIG_IGN)")
    began = time.monotonic()
    assert stop_process(proc, timeout=0.3) == -signal.SIGKILL
    assert 0.3 <= time.monotonic() - began < 5
    assert proc.returncode == -signal.SIGKILL  # reaped: no zombie left behind


def test_a_server_that_already_exited_keeps_its_status():
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    proc.wait()
    assert stop_process(proc, timeout=1) == 3
