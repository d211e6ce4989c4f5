"""GBT (General Block Transfer) on the WAN: segmenting a GBCS message into `DD…E0` blocks and reassembling them.

Theory of operation
-------------------
A message longer than the WAN transfer limit travels as GBT blocks (brief §4.1). Each block is a
General-Ciphering APDU whose routing fields are filled from the message's grouping header
(`DD | 09 CRA counter | 08 originator | 08 recipient | 00 | 02 <message code> | 00 | len | security header |
E0 block-control block-number block-number-ack len data`); the block format itself is declared once in
`protocols.gbcs.envelope` (`GbtApdu`) and read/written through `protocols.gbcs.message`. The data fields of
blocks 1..N, concatenated, are the whole original message (`DD…` or `DF…`, with its own MAC or signature).

`segment(message, max_block=...)` cuts the message into data fields of at most `max_block` bytes, numbered from
1, the last one flagged `last_block`.

`Reassembler` is sans-IO (`feed(block, now)`, `expire(now)`), one partial message per (originator, recipient,
CRA, counter)::

    (none) ──first block──▶ collecting ──all of 1..last present──▶ complete: returned; its key is remembered
                              │                                       for `timeout` s so late duplicates are ignored
                              │  duplicate (same data): ignored; same number, other data: GbtError
                              └─ no block for `timeout` s, or evicted to stay within `max_messages` /
                                 `max_bytes` ──▶ dropped (listed in `dropped`)

Bad blocks raise `GbtError` (a `DecodeError`) naming the field and the byte offset in the block. The
reassembled message must decode and carry the blocks' routing fields, else GbtError. Its state is a JSON dict
(`Reassembler.state`), so a host may persist it.
"""
from __future__ import annotations

import collections
from dataclasses import dataclass

from protocols.errors import DecodeError, EncodeError
from protocols.gbcs import envelope as env
from protocols.gbcs.message import encode, split_payload

__all__ = ["GbtError", "segment", "is_gbt_block", "Reassembler", "DEFAULT_SECURITY_HEADER", "MAX_BLOCK_NUMBER"]

#: The security header in front of each GBT APDU. RTDS has no GBT sample; blocks carry the same constant header
#: as every MAC'd message (authenticated, suite 1, invocation counter 0): the whole message keeps its own MAC.
DEFAULT_SECURITY_HEADER = {"security_control": env.SC_AUTHENTICATED, "invocation_counter": 0}
MAX_BLOCK_NUMBER = 0xFFFF
#: How many of the latest dropped partial messages `Reassembler.dropped` remembers.
DROPPED_KEEP = 256
#: Offsets inside the GBT APDU (from its E0 tag) of the fields errors point at.
_OFF_CONTROL, _OFF_NUMBER, _OFF_ACK, _OFF_DATA = 1, 2, 4, 6


class GbtError(DecodeError):
    """A GBT block that cannot be part of a message: the field and the byte offset in the block."""


def _routing(message: bytes) -> dict:
    try:
        out, content, _ = split_payload(message)
    except DecodeError as e:
        raise EncodeError(f"not a GBCS message: {e}", "message") from None
    if content is None:
        raise EncodeError("a GBT block cannot be segmented again", "message")
    gh = out["grouping_header"]
    cra = env.CRA_FLAG[gh["cra_flag"]]
    code = int(gh["other_information"]["message_code"], 16)
    return {"transaction_id": f"{cra:02X}{gh['originator_counter']:016X}",
            "originator_system_title": gh["originator"], "recipient_system_title": gh["recipient"],
            "date_time": "", "other_information": f"{code:04X}"}


def segment(message: bytes, *, max_block: int, security_header: dict | None = None, window: int = 1,
            streaming: bool = False) -> list[bytes]:
    """The GBT blocks carrying `message`, each data field at most `max_block` bytes (module docstring)."""
    message = bytes(message)
    if max_block < 1:
        raise EncodeError("max_block must be at least 1", "max_block")
    if not 0 <= window < 64:
        raise EncodeError("window is 6 bits", "window")
    routing = _routing(message)
    chunks = [message[i:i + max_block] for i in range(0, len(message), max_block)]
    if len(chunks) > MAX_BLOCK_NUMBER:
        raise EncodeError(f"{len(chunks)} blocks exceed the 16-bit block number", "max_block")
    sh = dict(security_header or DEFAULT_SECURITY_HEADER)
    blocks = []
    for n, chunk in enumerate(chunks, 1):
        last = n == len(chunks)
        blk = dict(routing, security_header=sh,
                   block_control={"last_block": last, "streaming": streaming and not last, "window": window},
                   block_number=n, block_number_ack=0, block_data=chunk.hex().upper())
        blocks.append(encode({"gbt_block": blk}))
    return blocks


def is_gbt_block(frame: bytes) -> bool:
    """Whether `frame` is a GBT block (a `DD` with filled routing fields and an `E0` APDU)."""
    try:
        _, content, _ = split_payload(frame)
    except DecodeError:
        return False
    return content is None


@dataclass(frozen=True)
class _Block:
    key: str
    code: str
    number: int
    last: bool
    data: str
    offset: int          # of the E0 tag in the block


def _parse_block(block: bytes) -> _Block:
    try:
        out, content, offset = split_payload(block)
    except DecodeError as e:
        raise GbtError(e.message, e.field or "gbt_block", e.offset) from None
    if content is not None:
        raise GbtError("not a GBT block (the ciphered content is not an E0 APDU)", "gbt_block", 0)
    b = out["gbt_block"]
    tid = b.get("transaction_id", "")
    if len(tid) != 18 or int(tid[:2], 16) not in env.CRA_FLAG.values():
        raise GbtError("GBT routing needs a transaction id of CRA flag + 8-byte counter", "gbt_block.transaction_id", 1)
    if len(b.get("originator_system_title", "")) != 16 or len(b.get("recipient_system_title", "")) != 16:
        raise GbtError("GBT routing needs 8-byte originator and recipient system titles", "gbt_block.system_title",
                       11)
    if b["block_number"] == 0:
        raise GbtError("block numbers start at 1", "gbt_block.block_number", offset + _OFF_NUMBER)
    key = f"{b['originator_system_title']}>{b['recipient_system_title']}/{tid}"
    return _Block(key, b.get("other_information", ""), b["block_number"], b["block_control"]["last_block"],
                  b["block_data"], offset)


class Reassembler:
    """Sans-IO GBT reassembly (module docstring)."""

    def __init__(self, *, timeout: float = 120.0, max_messages: int = 16, max_bytes: int = 256 * 1024,
                 state: dict | None = None):
        self.timeout = timeout
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.state = state if state is not None else {"partial": {}, "done": {}}
        self.state.setdefault("done", {})
        #: The latest keys of partial messages dropped (timed out or evicted), with why: for logs and metrics.
        #: Bounded (a flood of never-completed messages must not grow it); `dropped_total` counts them all.
        self.dropped: collections.deque[tuple[str, str]] = collections.deque(maxlen=DROPPED_KEEP)
        self.dropped_total = 0

    @property
    def pending(self) -> int:
        return len(self.state["partial"])

    def buffered_bytes(self) -> int:
        return sum(len(d) // 2 for p in self.state["partial"].values() for d in p["blocks"].values())

    def expire(self, now: float) -> list[str]:
        """Drop partial messages that saw no block for `timeout` seconds; their keys."""
        gone = [k for k, p in self.state["partial"].items() if now - p["seen"] > self.timeout]
        for k in gone:
            del self.state["partial"][k]
            self.dropped.append((k, "timeout"))
            self.dropped_total += 1
        done = self.state["done"]
        for k in [k for k, t in done.items() if now - t > self.timeout]:
            del done[k]
        return gone

    def feed(self, block: bytes, now: float) -> bytes | None:
        """Take one block; the whole message when this block completes it, else None. Raises GbtError."""
        self.expire(now)
        b = _parse_block(block)
        partial = self.state["partial"]
        if b.key in self.state["done"]:        # a late duplicate of a message already delivered
            return None
        p = partial.get(b.key)
        if p is None:
            p = partial[b.key] = {"first": now, "seen": now, "code": b.code, "last": None, "blocks": {}}
        elif p["code"] != b.code:
            raise GbtError(f"message code {b.code} differs from the earlier blocks' {p['code']}",
                           "gbt_block.other_information", 0)
        if b.last:
            if p["last"] is not None and p["last"] != b.number:
                raise GbtError(f"block {b.number} marked last, block {p['last']} already was",
                               "gbt_block.block_control", b.offset + _OFF_CONTROL)
            if any(int(n) > b.number for n in p["blocks"]):
                raise GbtError(f"block {b.number} marked last after a higher block",
                               "gbt_block.block_control", b.offset + _OFF_CONTROL)
            p["last"] = b.number
        elif p["last"] is not None and b.number >= p["last"]:
            raise GbtError(f"block {b.number} after the last block {p['last']}", "gbt_block.block_number",
                           b.offset + _OFF_NUMBER)
        have = p["blocks"].get(str(b.number))
        if have is not None and have != b.data:
            raise GbtError(f"block {b.number} received twice with different data", "gbt_block.block_data",
                           b.offset + _OFF_DATA)
        p["blocks"][str(b.number)] = b.data
        p["seen"] = now
        size = sum(len(d) // 2 for d in p["blocks"].values())
        if size > self.max_bytes:
            del partial[b.key]
            raise GbtError(f"message exceeds {self.max_bytes} bytes", "gbt_block.block_data", b.offset + _OFF_DATA)
        self._bound(b.key)
        if p["last"] is None or len(p["blocks"]) < p["last"]:
            return None
        del partial[b.key]
        done = self.state["done"]
        done[b.key] = now
        while len(done) > 4 * self.max_messages:
            del done[min(done, key=done.get)]
        message = b"".join(bytes.fromhex(p["blocks"][str(n)]) for n in range(1, p["last"] + 1))
        self._check(message, b)
        return message

    def _bound(self, keep: str) -> None:
        """Evict the oldest other partial messages until the bounds hold."""
        partial = self.state["partial"]
        while len(partial) > self.max_messages or (self.buffered_bytes() > self.max_bytes and len(partial) > 1):
            oldest = min((k for k in partial if k != keep), key=lambda k: partial[k]["first"], default=None)
            if oldest is None:
                return
            del partial[oldest]
            self.dropped.append((oldest, "evicted"))
            self.dropped_total += 1

    @staticmethod
    def _check(message: bytes, b: _Block) -> None:
        try:
            out, content, _ = split_payload(message)
        except DecodeError as e:
            raise GbtError(f"reassembled message does not decode: {e.message}", "gbt_message." + (e.field or ""),
                           e.offset) from None
        if content is None:
            raise GbtError("reassembled message is itself a GBT block", "gbt_message", 0)
        gh = out["grouping_header"]
        key = f"{gh['originator']}>{gh['recipient']}/{env.CRA_FLAG[gh['cra_flag']]:02X}{gh['originator_counter']:016X}"
        if key != b.key or gh["other_information"]["message_code"][2:].upper() != b.code.upper():
            raise GbtError("reassembled message's routing differs from its blocks'", "gbt_message.grouping_header", 0)
