"""A socat pty pair for serial-line tests: two linked pseudo-terminals, as two ends of a null-modem cable.

`PtyPair(tmp_path)` starts `socat -d -d pty,raw,echo=0,link=<dir>/a pty,raw,echo=0,link=<dir>/b`; `a` and `b`
are stable paths (symlinks socat makes), so `stop()` + `start()` is "the cable pulled and plugged back": the
ptys behind the links change, the names do not. The `pty_pair` fixture skips when socat is not installed
(`.ci/run` / `scripts/test` install it) and always kills the process after the test.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

__all__ = ["SOCAT", "PtyPair", "pty_pair"]

SOCAT = shutil.which("socat") or next((p for p in ("/usr/bin/socat", "/usr/local/bin/socat")
                                       if os.access(p, os.X_OK)), None)
_PTY_RE = re.compile(rb"PTY is (\S+)")


class PtyPair:
    """Two linked ptys with stable link names `a` and `b` under `directory`."""

    def __init__(self, directory, name: str = "tty"):
        if SOCAT is None:
            raise RuntimeError("socat is not installed")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.a = str(self.directory / f"{name}-a")
        self.b = str(self.directory / f"{name}-b")
        self.proc: subprocess.Popen | None = None
        self.devices: list[str] = []

    def start(self, timeout: float = 5.0) -> "PtyPair":
        assert self.proc is None, "socat already running"
        self.proc = subprocess.Popen(
            [SOCAT, "-d", "-d", f"pty,raw,echo=0,link={self.a}", f"pty,raw,echo=0,link={self.b}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        err = b""
        os.set_blocking(self.proc.stderr.fileno(), False)
        while time.monotonic() < deadline:
            chunk = self.proc.stderr.read() or b""
            err += chunk
            if b"starting data transfer loop" in err and os.path.exists(self.a) and os.path.exists(self.b):
                self.devices = [m.decode() for m in _PTY_RE.findall(err)]
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.01)
        self.stop()
        raise RuntimeError(f"socat did not start: {err.decode(errors='replace')[-500:]}")

    def stop(self) -> None:
        """Kill socat (both ptys vanish, like a pulled cable) and wait for it."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(3)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(3)
        if proc.stderr is not None:
            proc.stderr.close()
        for link in (self.a, self.b):      # socat removes its links on SIGTERM; be sure
            try:
                os.unlink(link)
            except FileNotFoundError:
                pass

    def restart(self) -> "PtyPair":
        self.stop()
        return self.start()

    def __enter__(self) -> "PtyPair":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


@pytest.fixture
def pty_pair(tmp_path):
    """A started PtyPair under tmp_path; skipped without socat."""
    if SOCAT is None:
        pytest.skip("socat not installed (.ci/run installs it)")
    pair = PtyPair(tmp_path / "pty").start()
    try:
        yield pair
    finally:
        pair.stop()
