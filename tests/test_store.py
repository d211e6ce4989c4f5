"""StateStore: round trip, WAL, counters never go back, and durability across kill -9."""
from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from firmware_emu.core.store import StateRegression, StateStore
from protocols.errors import GbcsEmuError

ROOT = Path(__file__).resolve().parents[1]


def _state(alert=0, remote=None, **extra):
    return {"counters": {"alert": alert, "remote": remote or {}}, **extra}


def test_round_trip(tmp_path):
    path = tmp_path / "s.db"
    with StateStore(path) as st:
        assert st.load("00-00-00-00-00-00-00-01") is None
        state = _state(3, {"90-B3-D5-1F-30-01-00-00": 7}, tariff={"price": [1, 2]}, name="é")
        assert st.save("00-00-00-00-00-00-00-01", "ESME", state) == 1
        assert st.save("00-00-00-00-00-00-00-01", "ESME", state) == 2
        st.save_many([("00-00-00-00-00-00-00-02", "GSME", _state()), ("00-00-00-00-00-00-00-03", "ESME", _state())])
        assert st.load("00-00-00-00-00-00-00-01") == state
        assert st.version("00-00-00-00-00-00-00-01") == 2
        assert st.count() == 3
        assert st.euis() == ["00-00-00-00-00-00-00-01", "00-00-00-00-00-00-00-02", "00-00-00-00-00-00-00-03"]
        assert st.euis("ESME") == ["00-00-00-00-00-00-00-01", "00-00-00-00-00-00-00-03"]
        assert st.delete("00-00-00-00-00-00-00-02") and not st.delete("00-00-00-00-00-00-00-02")
    with StateStore(path) as st:  # reopened: still there
        assert st.load("00-00-00-00-00-00-00-01") == state and st.count() == 2


def test_wal_on(tmp_path):
    with StateStore(tmp_path / "s.db") as st:
        assert st.journal_mode() == "wal"
    with StateStore(tmp_path / "n.db", synchronous="normal") as st:
        assert st.journal_mode() == "wal"
    with pytest.raises(ValueError):
        StateStore(tmp_path / "x.db", synchronous="fast")


def test_counters_never_go_back(tmp_path):
    with StateStore(tmp_path / "s.db") as st:
        st.save("A", "ESME", _state(5, {"P1": 10, "P2": 3}))
        with pytest.raises(StateRegression):
            st.save("A", "ESME", _state(4, {"P1": 10, "P2": 3}))
        with pytest.raises(StateRegression) as exc:
            st.save("A", "ESME", _state(5, {"P1": 9, "P2": 3}))
        assert isinstance(exc.value, GbcsEmuError)
        # a refused save_many leaves nothing behind, not even its good items
        with pytest.raises(StateRegression):
            st.save_many([("B", "ESME", _state(1)), ("A", "ESME", _state(0))])
        assert st.load("B") is None and st.version("A") == 1
        st.save("A", "ESME", _state(5, {"P1": 11, "P3": 0}))  # equal, higher, new party, removed party: fine
        assert st.version("A") == 2


def test_threads_share_a_store(tmp_path):
    with StateStore(tmp_path / "s.db", synchronous="NORMAL") as st:
        def work(k):
            for i in range(50):
                st.save(f"E{k}", "ESME", _state(i))
        threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert [st.version(f"E{k}") for k in range(4)] == [50] * 4


CHILD = r"""
import sys
from firmware_emu.core.store import StateStore
st = StateStore(sys.argv[1])
i = 0
while True:
    eui = f"E{i % 5}"
    v = st.save(eui, "ESME", {"counters": {"alert": i, "remote": {"P": i}}, "pad": "x" * (i % 300)})
    print(eui, v, flush=True)
    i += 1
"""


def test_kill_9_keeps_every_reported_save(tmp_path):
    rnd = random.Random()
    seed = rnd.randrange(1 << 30)
    rnd.seed(seed)
    path = tmp_path / "s.db"
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE, env=env, cwd=ROOT)
    reported: dict[str, int] = {}
    try:
        want = rnd.randrange(5, 400)
        for _ in range(want):
            line = child.stdout.readline()
            assert line, f"child died early (seed {seed})"
            eui, v = line.split()
            reported[eui.decode()] = int(v)
        time.sleep(rnd.random() * 0.02)
        child.send_signal(signal.SIGKILL)
        for line in child.stdout:  # saves reported before the kill are still in the pipe
            if line.endswith(b"\n"):
                eui, v = line.split()
                reported[eui.decode()] = int(v)
    finally:
        child.kill()
        child.wait()
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()
    with StateStore(path) as st:
        for eui, v in reported.items():
            assert st.version(eui) >= v, f"seed {seed}: {eui} lost saves"
            state = st.load(eui)
            assert state["counters"]["alert"] == state["counters"]["remote"]["P"]
