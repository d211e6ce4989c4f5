"""Frame captures for `hil serve` / `hil bridge --capture FILE`: every GBCS message that crossed a link, with
its time and direction, as pcapng (Wireshark) or JSON lines, chosen by the file's extension.

pcapng is written by hand (no dependency), little-endian, one section:

    Section Header Block (shb_userappl "gbcs-emu")
    Interface Description Block per interface: LINKTYPE_USER0 (147), snaplen 0, if_name, if_description,
        if_tsresol 6 (microseconds)
    Enhanced Packet Block per message: the GBCS message bytes (deframed: the link's framing is not kept),
        epb_flags with the direction (bits 0-1: 01 inbound, 10 outbound), opt_comment naming the interface side

Wireshark shows USER0 packets as raw data; map DLT 147 to a dissector (Preferences > Protocols > DLT_USER) to
decode them. Each record is written and flushed at once, so a killed process keeps what it captured.

JSON lines: one object per message, `{"ts": <UTC epoch s>, "time": <ISO-8601 Z>, "dir": "in"|"out",
"iface": <name>, "len": <bytes>, "hex": <upper-case hex>}`. `read_capture(path)` reads either format back.
"""
from __future__ import annotations

import json
import struct
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from protocols.errors import GbcsEmuError

__all__ = ["Capture", "CaptureError", "CaptureRecord", "open_capture", "read_capture", "read_pcapng",
           "LINKTYPE_USER0", "DIRECTIONS", "tap"]

LINKTYPE_USER0 = 147
SHB, IDB, EPB = 0x0A0D0D0A, 0x00000001, 0x00000006
BYTE_ORDER_MAGIC = 0x1A2B3C4D
OPT_END, OPT_COMMENT = 0, 1
SHB_USERAPPL = 4
IF_NAME, IF_DESCRIPTION, IF_TSRESOL = 2, 3, 9
EPB_FLAGS = 2
#: direction → epb_flags value (inbound 01, outbound 10 in bits 0-1).
DIRECTIONS = {"in": 1, "out": 2}


class CaptureError(GbcsEmuError):
    """A capture file that cannot be written or read back."""


@dataclass(frozen=True)
class CaptureRecord:
    ts: float            #: UTC seconds since the epoch
    direction: str       #: "in" | "out" ("" when the file says neither)
    data: bytes
    iface: str = ""


def _opt(code: int, value: bytes) -> bytes:
    pad = (-len(value)) % 4
    return struct.pack("<HH", code, len(value)) + value + b"\0" * pad


def _block(kind: int, body: bytes) -> bytes:
    total = 12 + len(body)
    return struct.pack("<II", kind, total) + body + struct.pack("<I", total)


class Capture:
    """Base: `write(direction, payload, ts=None)`, `close()`; `frames` counts records written."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.frames = 0

    def write(self, direction: str, payload: bytes, ts: float | None = None, iface: int = 0) -> None:
        raise NotImplementedError  # pragma: no cover

    def close(self) -> None:
        f = getattr(self, "_f", None)
        if f is not None and not f.closed:
            f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class PcapngCapture(Capture):
    def __init__(self, path: Path, interfaces: list[tuple[str, str]]):
        super().__init__(path)
        self.interfaces = interfaces
        try:
            self._f = open(self.path, "wb")
        except OSError as e:
            raise CaptureError(f"cannot write capture {path}: {e.strerror}") from None
        shb = struct.pack("<IHHq", BYTE_ORDER_MAGIC, 1, 0, -1) + _opt(SHB_USERAPPL, b"gbcs-emu") + _opt(OPT_END, b"")
        out = _block(SHB, shb)
        for name, description in interfaces:
            idb = struct.pack("<HHI", LINKTYPE_USER0, 0, 0)
            idb += _opt(IF_NAME, name.encode()) + _opt(IF_DESCRIPTION, description.encode())
            idb += _opt(IF_TSRESOL, bytes((6,))) + _opt(OPT_END, b"")
            out += _block(IDB, idb)
        self._f.write(out)
        self._f.flush()

    def write(self, direction: str, payload: bytes, ts: float | None = None, iface: int = 0) -> None:
        if self._f.closed:
            return
        us = int(round((time.time() if ts is None else ts) * 1_000_000))
        payload = bytes(payload)
        body = struct.pack("<IIIII", iface, us >> 32, us & 0xFFFFFFFF, len(payload), len(payload))
        body += payload + b"\0" * ((-len(payload)) % 4)
        body += _opt(EPB_FLAGS, struct.pack("<I", DIRECTIONS.get(direction, 0)))
        body += _opt(OPT_COMMENT, f"{direction} {self.interfaces[iface][0]}".encode()) + _opt(OPT_END, b"")
        self._f.write(_block(EPB, body))
        self._f.flush()
        self.frames += 1


class JsonlCapture(Capture):
    def __init__(self, path: Path, interfaces: list[tuple[str, str]]):
        super().__init__(path)
        self.interfaces = interfaces
        try:
            self._f = open(self.path, "w", encoding="utf-8")
        except OSError as e:
            raise CaptureError(f"cannot write capture {path}: {e.strerror}") from None

    def write(self, direction: str, payload: bytes, ts: float | None = None, iface: int = 0) -> None:
        if self._f.closed:
            return
        ts = time.time() if ts is None else ts
        iso = datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")
        rec = {"ts": round(ts, 6), "time": iso, "dir": direction, "iface": self.interfaces[iface][0],
               "len": len(payload), "hex": bytes(payload).hex().upper()}
        self._f.write(json.dumps(rec, separators=(",", ":")) + "\n")
        self._f.flush()
        self.frames += 1


class _Tap:
    """One interface of a capture, with the `write(direction, payload)` a SerialLink calls."""

    def __init__(self, capture: Capture, iface: int):
        self.capture, self.iface = capture, iface

    def write(self, direction: str, payload: bytes, ts: float | None = None) -> None:
        self.capture.write(direction, payload, ts, self.iface)


def open_capture(path, interfaces: list[tuple[str, str]] | None = None) -> Capture:
    """A capture by extension: `.pcapng` or `.jsonl` (CaptureError otherwise). `interfaces`: (name,
    description) per link captured (default one, "serial")."""
    path = Path(path)
    interfaces = interfaces or [("serial", "")]
    suffix = path.suffix.lower()
    if suffix == ".pcapng":
        return PcapngCapture(path, interfaces)
    if suffix in (".jsonl", ".ndjson"):
        return JsonlCapture(path, interfaces)
    raise CaptureError(f"capture file {path.name}: extension must be .pcapng or .jsonl")


def tap(capture: Capture | None, iface: int = 0) -> _Tap | None:
    """What to hand a SerialLink as `capture=` for interface `iface` of `capture` (None passes through)."""
    return None if capture is None else _Tap(capture, iface)


# ------------------------------------------------------------------------------------------------- reading back


def read_pcapng(path) -> tuple[list[dict], list[CaptureRecord]]:
    """(interfaces [{linktype, name, description, tsresol}], records) of a pcapng file of one or more sections;
    CaptureError on a malformed file."""
    data = Path(path).read_bytes()
    pos, e = 0, "<"
    ifaces: list[dict] = []
    records: list[CaptureRecord] = []
    while pos < len(data):
        if len(data) - pos < 12:
            raise CaptureError(f"truncated block at {pos}")
        kind = struct.unpack_from("<I", data, pos)[0]
        if kind == SHB:
            magic = data[pos + 8:pos + 12]
            e = "<" if magic == struct.pack("<I", BYTE_ORDER_MAGIC) else ">"
            if struct.unpack(e + "I", magic)[0] != BYTE_ORDER_MAGIC:
                raise CaptureError("bad byte-order magic")
            ifaces = []
        kind, total = struct.unpack_from(e + "II", data, pos)
        if total < 12 or total % 4 or pos + total > len(data):
            raise CaptureError(f"bad block length {total} at {pos}")
        if struct.unpack_from(e + "I", data, pos + total - 4)[0] != total:
            raise CaptureError(f"trailing block length differs at {pos}")
        body = data[pos + 8:pos + total - 4]
        if kind == IDB:
            linktype, _, snaplen = struct.unpack_from(e + "HHI", body, 0)
            opts = _options(body, 8, e)
            tsresol = opts.get(IF_TSRESOL, [bytes((6,))])[0][0]
            ifaces.append({"linktype": linktype, "snaplen": snaplen,
                           "name": opts.get(IF_NAME, [b""])[0].decode(errors="replace"),
                           "description": opts.get(IF_DESCRIPTION, [b""])[0].decode(errors="replace"),
                           "tsresol": tsresol})
        elif kind == EPB:
            iface, hi, lo, caplen, _orig = struct.unpack_from(e + "IIIII", body, 0)
            if iface >= len(ifaces):
                raise CaptureError(f"packet on undeclared interface {iface}")
            res = ifaces[iface]["tsresol"]
            div = 2 ** (res & 0x7F) if res & 0x80 else 10 ** res
            payload = body[20:20 + caplen]
            opts = _options(body, 20 + caplen + (-caplen) % 4, e)
            flags = struct.unpack(e + "I", opts[EPB_FLAGS][0])[0] if EPB_FLAGS in opts else 0
            direction = {1: "in", 2: "out"}.get(flags & 3, "")
            records.append(CaptureRecord(((hi << 32) | lo) / div, direction, bytes(payload), ifaces[iface]["name"]))
        pos += total
    return ifaces, records


def _options(body: bytes, pos: int, e: str) -> dict[int, list[bytes]]:
    out: dict[int, list[bytes]] = {}
    while pos + 4 <= len(body):
        code, length = struct.unpack_from(e + "HH", body, pos)
        if code == OPT_END:
            break
        out.setdefault(code, []).append(body[pos + 4:pos + 4 + length])
        pos += 4 + length + (-length) % 4
    return out


def read_capture(path) -> list[CaptureRecord]:
    """The records of a `.pcapng` or `.jsonl` capture."""
    path = Path(path)
    if path.suffix.lower() == ".pcapng":
        return read_pcapng(path)[1]
    out = []
    for line in path.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            out.append(CaptureRecord(r["ts"], r["dir"], bytes.fromhex(r["hex"]), r.get("iface", "")))
    return out
