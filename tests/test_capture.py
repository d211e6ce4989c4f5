"""Captures: pcapng written by hand is parsed back block by block (and by capinfos/tshark when installed);
JSON lines carry the same records."""
from __future__ import annotations

import json
import shutil
import struct
import subprocess

import pytest

from hil.capture import (LINKTYPE_USER0, CaptureError, open_capture, read_capture, read_pcapng, tap)

RECORDS = [("in", b"\xdd\x00\x01", 1420070400.000001), ("out", b"\xdf" + bytes(range(61)), 1420070400.5),
           ("in", b"", 1420070401.25)]


def write(path):
    with open_capture(path, [("serial", "/dev/ttyUSB0"), ("net", "tcp://127.0.0.1:1")]) as cap:
        for direction, data, ts in RECORDS:
            cap.write(direction, data, ts)
        tap(cap, 1).write("out", b"\x01", 1420070402.0)
        assert cap.frames == 4
    return path


def test_pcapng_reads_back(tmp_path):
    ifaces, recs = read_pcapng(write(tmp_path / "c.pcapng"))
    assert [i["linktype"] for i in ifaces] == [LINKTYPE_USER0, LINKTYPE_USER0]
    assert ifaces[0]["name"] == "serial" and ifaces[0]["description"] == "/dev/ttyUSB0" and ifaces[0]["tsresol"] == 6
    assert [(r.direction, r.data) for r in recs[:3]] == [(d, b) for d, b, _ in RECORDS]
    assert [r.ts for r in recs[:3]] == pytest.approx([t for _, _, t in RECORDS], abs=1e-6)
    assert recs[3].iface == "net" and recs[3].direction == "out"


def test_pcapng_layout(tmp_path):
    data = write(tmp_path / "c.pcapng").read_bytes()
    kind, total, magic, major, minor = struct.unpack_from("<IIIHH", data)
    assert (kind, magic, major, minor) == (0x0A0D0D0A, 0x1A2B3C4D, 1, 0)
    pos, kinds = 0, []
    while pos < len(data):
        kind, total = struct.unpack_from("<II", data, pos)
        assert total % 4 == 0 and struct.unpack_from("<I", data, pos + total - 4)[0] == total
        kinds.append(kind)
        pos += total
    assert kinds == [0x0A0D0D0A, 1, 1, 6, 6, 6, 6]


@pytest.mark.skipif(not (shutil.which("capinfos") or shutil.which("tshark")), reason="no Wireshark tools")
def test_wireshark_tools_read_it(tmp_path):  # pragma: no cover - depends on the installation
    path = write(tmp_path / "c.pcapng")
    tool = shutil.which("capinfos")
    if tool:
        out = subprocess.run([tool, "-c", str(path)], capture_output=True, text=True, timeout=20)
        assert out.returncode == 0 and "4" in out.stdout
    else:
        out = subprocess.run([shutil.which("tshark"), "-r", str(path)], capture_output=True, text=True, timeout=20)
        assert out.returncode == 0 and len(out.stdout.strip().splitlines()) == 4


def test_jsonl(tmp_path):
    path = write(tmp_path / "c.jsonl")
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert lines[0] == {"ts": 1420070400.000001, "time": "2015-01-01T00:00:00.000001Z", "dir": "in",
                        "iface": "serial", "len": 3, "hex": "DD0001"}
    assert [(r.direction, r.data) for r in read_capture(path)][:3] == [(d, b) for d, b, _ in RECORDS]


def test_bad_extension_and_truncated_file(tmp_path):
    with pytest.raises(CaptureError):
        open_capture(tmp_path / "c.pcap")
    path = write(tmp_path / "c.pcapng")
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(CaptureError):
        read_pcapng(path)
