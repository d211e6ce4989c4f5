"""A real mosquitto for the MQTT tests, on 127.0.0.1 and a free port, started and stopped by the test itself.

Import the fixtures into a test module (`from mqtt_broker import mqtt_broker, own_mqtt_broker`): `mqtt_broker`
is one broker for the session, `own_mqtt_broker` a broker of the test's own (for tests that stop and restart it).
Both skip with the reason when the mosquitto binary is absent (`.ci/run` / `scripts/test` install it).

The broker persists sessions (`persistence true`, saved when it is stopped with SIGTERM), so clients with a
persistent session keep their subscriptions and queued QoS 1 messages across a restart, as a production broker
configured for it would.
"""
from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

__all__ = ["MOSQUITTO", "MosquittoBroker", "free_port", "mqtt_broker", "own_mqtt_broker"]


def _find_mosquitto() -> str | None:
    found = shutil.which("mosquitto")
    if found:
        return found
    for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"):
        if os.access(p, os.X_OK):
            return p
    return None


MOSQUITTO = _find_mosquitto()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MosquittoBroker:
    """One mosquitto process on 127.0.0.1: `start()`, `stop()`, `restart()` (same port, same persistence)."""

    host = "127.0.0.1"

    def __init__(self, workdir: Path, port: int | None = None):
        if MOSQUITTO is None:
            raise RuntimeError("mosquitto is not installed")
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None
        self.config = self.workdir / "mosquitto.conf"
        self.config.write_text("\n".join([
            f"listener {self.port} {self.host}",
            "allow_anonymous true",
            "persistence true",
            f"persistence_location {self.workdir}/",
            "autosave_interval 60",
            "max_queued_messages 100000",
            f"log_dest file {self.workdir / 'mosquitto.log'}",
            f"user {getpass.getuser()}",
            "",
        ]))

    def _accepting(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def start(self, timeout: float = 10.0) -> None:
        assert self.proc is None, "broker already running"
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.config)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while not self._accepting():
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                self.proc = None
                raise RuntimeError(f"mosquitto exited at start: {err.strip()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"mosquitto did not accept on port {self.port} within {timeout} s")
            time.sleep(0.02)

    def stop(self) -> None:
        """SIGTERM (mosquitto saves its persistence file), SIGKILL after 5 s."""
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        if self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def _skip_without_mosquitto() -> None:
    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto; scripts/test does it as root)")


@pytest.fixture(scope="session")
def mqtt_broker(tmp_path_factory):
    """A mosquitto shared by the session (do not stop it: use own_mqtt_broker for that)."""
    _skip_without_mosquitto()
    broker = MosquittoBroker(tmp_path_factory.mktemp("mosquitto"))
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def own_mqtt_broker(tmp_path):
    """A mosquitto for this test alone, which it may stop and restart."""
    _skip_without_mosquitto()
    broker = MosquittoBroker(tmp_path / "mosquitto")
    broker.start()
    yield broker
    broker.stop()
