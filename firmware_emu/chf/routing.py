"""The comms hub's routing role between the WAN and the HAN, sans-IO.

Theory of operation
-------------------
A premises object (the hub, its meters and displays, built elsewhere) owns the devices and the transports; it
asks a `HanRouter` where each frame goes and carries it there. The router only decides and queues:

* `route_wan(frame, now) -> list[Delivery]`: a frame from the WAN (a whole GBCS message, or a GBT block, which
  is reassembled first: nothing is delivered until the message is complete). By recipient:

  - the CHF itself ............................ `Delivery(to=CHF, how="chf")`: give it to `Chf.receive`;
  - the GPF ................................... `how="gpf"`: the GPF answers for the gas meter (its mirror);
  - an always-on device in the CHF Device Log, joined (ESME, PPMID, HCALCS…) ... `how="now"`;
  - a sleepy device in the log (the GSME, device type 1) ... queued, `how="queued"`; the queue of each device
    holds at most `queue_limit` frames, older than `queue_ttl` seconds they expire; a frame that does not fit
    is `how="dropped"` (reason "queue full");
  - anyone else (not logged, not joined) ...... `how="undeliverable"`.

* `poll(device_eui, now) -> list[bytes]`: a sleepy device woke up and asks for its mail (ZSE tunnel GET, brief
  §7): the queued frames, oldest first (at most `max_frames`); each poll counts as HAN communication in the
  CHF Device Log (last communication time, CCS06).

* `route_han(frame, from_eui, now) -> list[bytes]`: a frame a HAN device sent. Only a device in the log, joined
  (or the GPF), whose frame names it as the originator, is routed; anything else is dropped and logged in the
  CHF security log. A frame addressed to another HAN device (PPMID → GSME, PCS01/02) is queued for it; the
  rest goes to the WAN: returned as is, or as GBT blocks when longer than `wan_max_message`.

Queue state (JSON, in the CHF's persisted state `state["chf"]["queues"][EUI]`)::

    empty ──route_wan / route_han (sleepy recipient)──▶ holding ≤ queue_limit frames ──poll──▶ empty
                                                          └── frames older than queue_ttl expire on any call

GBT reassembly state is transient (a lost partial message is re-sent by the head end after its timeout).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from protocols.errors import DecodeError
from protocols.gbcs import gbt
from protocols.gbcs.message import split_payload
from protocols.security.eui import as_eui, eui_hex

from firmware_emu.chf import network
from firmware_emu.core.clock import to_gbcs_seconds

log = logging.getLogger(__name__)

__all__ = ["Delivery", "HanRouter", "SLEEPY_DEVICE_TYPES", "CHF", "WAN"]

CHF, WAN = "CHF", "WAN"
#: register_device types of devices that sleep and poll for their traffic (the battery-powered GSME).
SLEEPY_DEVICE_TYPES = frozenset({1})
#: Security-log code for HAN traffic refused by the hub: unauthorised communication access.
_REFUSED = 0x8F3E


@dataclass
class Delivery:
    """Where one WAN frame goes: `to` is an EUI (hex) or CHF; `how` says how (module docstring)."""

    to: str
    frame: bytes
    how: str
    reason: str = ""


class HanRouter:
    """The routing role of one comms hub (module docstring). `chf` is its `Chf` device."""

    def __init__(self, chf, *, gpf=None, queue_limit: int = 8, queue_ttl: float = 24 * 3600.0,
                 wan_max_message: int | None = None, gbt_block: int = 1024, reassembler: gbt.Reassembler | None = None):
        self.chf = chf
        self.gpf = eui_hex(as_eui(gpf)) if gpf is not None else None
        self.queue_limit = queue_limit
        self.queue_ttl = queue_ttl
        self.wan_max_message = wan_max_message
        self.gbt_block = gbt_block
        self.reassembler = reassembler or gbt.Reassembler()

    # -- state ---------------------------------------------------------------------------------------------------

    @property
    def queues(self) -> dict[str, list[dict]]:
        return network.chf_state(self.chf).setdefault("queues", {})

    def queued(self, eui) -> int:
        return len(self.queues.get(eui_hex(as_eui(eui)), []))

    def _expire(self, now: float) -> None:
        for eui, q in list(self.queues.items()):
            keep = [m for m in q if now - m["at"] <= self.queue_ttl]
            if len(keep) != len(q):
                self.chf.event("han_queue_expired", eui=eui, frames=len(q) - len(keep))
            if keep:
                self.queues[eui] = keep
            else:
                del self.queues[eui]

    def _enqueue(self, eui: str, frame: bytes, now: float) -> Delivery:
        q = self.queues.setdefault(eui, [])
        if len(q) >= self.queue_limit:
            self.chf.event("han_queue_full", eui=eui)
            return Delivery(eui, frame, "dropped", "queue full")
        q.append({"at": now, "frame": frame.hex().upper()})
        return Delivery(eui, frame, "queued")

    # -- WAN → HAN -------------------------------------------------------------------------------------------------

    def route_wan(self, frame: bytes, now: float) -> list[Delivery]:
        self._expire(now)
        frame = bytes(frame)
        try:
            env, content, _ = split_payload(frame)
        except DecodeError as e:
            self.chf.event("wan_frame_dropped", reason=str(e))
            return []
        if content is None:                     # a GBT block
            try:
                whole = self.reassembler.feed(frame, now)
            except gbt.GbtError as e:
                self.chf.event("gbt_block_refused", reason=str(e))
                return []
            return self.route_wan(whole, now) if whole is not None else []
        recipient = env["grouping_header"]["recipient"].upper()
        if recipient == self.chf.state["eui"]:
            return [Delivery(CHF, frame, "chf")]
        if recipient == self.gpf:
            return [Delivery(recipient, frame, "gpf")]
        entry = network.logged(self.chf, recipient)
        if entry is None:
            return [Delivery(recipient, frame, "undeliverable", "not in the CHF Device Log")]
        if entry.get("device_type") in SLEEPY_DEVICE_TYPES:
            return [self._enqueue(recipient, frame, now)]
        if not entry.get("joined"):
            return [Delivery(recipient, frame, "undeliverable", "not joined")]
        network.han_activity(self.chf, recipient, now)
        return [Delivery(recipient, frame, "now")]

    def poll(self, device_eui, now: float, *, max_frames: int | None = None) -> list[bytes]:
        self._expire(now)
        eui = eui_hex(as_eui(device_eui))
        entry = network.logged(self.chf, eui)
        if entry is None or not entry.get("joined"):
            self._refuse(eui, now, "poll from a device not joined")
            return []
        q = self.queues.get(eui, [])
        n = len(q) if max_frames is None else max(0, max_frames)
        out, rest = q[:n], q[n:]
        if rest:
            self.queues[eui] = rest
        else:
            self.queues.pop(eui, None)
        network.han_activity(self.chf, eui, now)
        return [bytes.fromhex(m["frame"]) for m in out]

    # -- HAN → WAN -------------------------------------------------------------------------------------------------

    def route_han(self, frame: bytes, from_eui, now: float) -> list[bytes]:
        self._expire(now)
        frame = bytes(frame)
        sender = eui_hex(as_eui(from_eui))
        entry = network.logged(self.chf, sender)
        if sender != self.gpf and (entry is None or not entry.get("joined")):
            self._refuse(sender, now, "sender not joined")
            return []
        try:
            env, _, _ = split_payload(frame)
        except DecodeError as e:
            self.chf.event("han_frame_dropped", eui=sender, reason=str(e))
            return []
        gh = env.get("grouping_header")
        if gh is None or gh["originator"].upper() != sender:
            self._refuse(sender, now, "originator is not the sender")
            return []
        if entry is not None:
            network.han_activity(self.chf, sender, now)
        recipient = gh["recipient"].upper()
        if network.logged(self.chf, recipient) is not None:      # HAN-only traffic (PPMID → GSME)
            self._enqueue(recipient, frame, now)
            return []
        if self.wan_max_message is not None and len(frame) > self.wan_max_message:
            return gbt.segment(frame, max_block=self.gbt_block)
        return [frame]

    def _refuse(self, eui: str, now: float, why: str) -> None:
        network.chf_state(self.chf)["logs"]["security"].append([to_gbcs_seconds(now), _REFUSED])
        del network.chf_state(self.chf)["logs"]["security"][:-network.LOG_DEPTH["security"]]
        self.chf.event("han_frame_refused", eui=eui, reason=why)
