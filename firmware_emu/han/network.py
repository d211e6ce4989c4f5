"""The virtual HAN: a sans-IO, time-driven, ZigBee-like network between the comms hub and the HAN devices.

API (bytes, EUIs and times in; events out; never reads the clock)
----------------------------------------------------------------
    net = HanNetwork(seed=1, latency=0.005, loss=0.0, duplicate=0.0)
    net.add_coordinator(chf_eui, join_policy=lambda eui: install_code_or_None)   # the CHF, trust center
    net.add_node(esme_eui, role="router", install_code=code)                     # always on
    net.add_node(gsme_eui, role="sleepy", install_code=code, poll_interval=7.5)  # GSME: sleepy end device
    net.add_node(ppmid_eui, role="end_device", install_code=code, parent=esme_eui)
    net.allow(eui, install_code)            # or the join_policy callback: the CHF device log
    net.join(eui, now)                      # -> Joined / JoinFailed out of poll()
    msg_id = net.send(src, dst, payload, now, cluster=0x0704)
    events = net.poll(now)                  # everything due up to `now`, in time order
    net.next_due()                          # when to poll next (None: idle)
    net.set_link(a, b, loss=0.05, latency=0.01, duplicate=0.01); net.drop_link(a, b); net.restore_link(a, b)
    net.state / HanNetwork.from_state(state, join_policy=...)   # JSON, so it persists with the premises

Events: `Delivered(src, dst, payload, time, msg_id, cluster)` at the receiving node once the whole APS payload
is reassembled (once per message, in order per (src, dst)); `Confirmed` to the sender when the last block is
acknowledged (APSDE-DATA.confirm); `DeliveryFailed(reason)` when the APS retries are exhausted, the node is not
joined or has no route; `Joined(eui, short_address)`, `JoinFailed(eui, reason)`. `on_join(eui, accepted,
reason)` is called by the coordinator on every join request it decides (the CHF logs it).

Theory of operation
-------------------
Topology is a tree: every node hangs off a parent (the coordinator by default); frames hop along the tree
path, each hop a real MAC frame (`protocols.zigbee.han`) around an NWK frame around an APS frame.

Per hop (MAC): up to 1 + `mac_retries` attempts `mac_gap` apart; an attempt is lost when the link is down or
with the link's `loss` probability; a received frame may be duplicated (`duplicate`); the MAC ack may be lost
too (the receiver then sees the retry: duplicates are dropped by the APS layer). A frame to a sleepy end
device waits at its parent until the device is awake: at its next poll (`poll_phase + k * poll_interval`) or
within `awake_window` after it last transmitted (it fast-polls for the answer to what it just sent).

Per message (APS), one flow per (src, dst), stop-and-wait, so delivery is in order per flow::

    IDLE --send--> SENDING(block 0, try 0) --ack of block i--> SENDING(block i+1, try 0) ... --last ack--> Confirmed, IDLE
    SENDING(block i, try k) --ack timeout, k < aps_retries--> SENDING(block i, try k+1)
                            --ack timeout, k = aps_retries--> DeliveryFailed, next message

Blocks are at most 61 bytes (`fragment`); the receiver's `Reassembler` acks every block (also duplicates)
and delivers once. Join (install code)::

    UNJOINED --join--> association request to the coordinator --policy: EUI unknown--> JoinFailed
      --policy gives the install code--> Transport-Key (network key under AES-CCM with the link key =
      AES-MMO(install code)) --device decrypts with its own install code: ok--> JOINED (short address)
                                                                         --tag mismatch--> JoinFailed

All randomness comes from one seeded `random.Random`, drawn in event order, so a run is reproducible from
its seed and inputs. The state (nodes, links, flows, the pending event heap, the RNG) is a JSON dict.
"""
from __future__ import annotations

import hashlib
import heapq
import json
import random
from dataclasses import asdict, dataclass
from typing import Callable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESCCM

from firmware_emu.core import jsonio
from firmware_emu.han.install_code import derive_link_key
from protocols.errors import DecodeError
from protocols.zigbee import han

__all__ = ["HanNetwork", "Delivered", "Confirmed", "DeliveryFailed", "Joined", "JoinFailed", "ROLES"]

ROLES = ("coordinator", "router", "end_device", "sleepy")
COORDINATOR_SHORT = 0x0000
NWK_RADIUS = 30
KEY_TYPE_NETWORK = 0x01          # APS Transport-Key key type: standard network key
APS_CMD_TRANSPORT_KEY = 0x05
SEC_CONTROL = 0x05               # ZigBee security control: ENC-MIC-32


# ============================================================================================ events

@dataclass(frozen=True)
class _Event:
    def as_dict(self) -> dict:
        d = asdict(self)
        d["event"] = type(self).__name__
        if isinstance(d.get("payload"), bytes):
            d["payload"] = d["payload"].hex().upper()
        return d


@dataclass(frozen=True)
class Delivered(_Event):
    src: str
    dst: str
    payload: bytes
    time: float
    msg_id: int
    cluster: int = han.TUNNELING_CLUSTER


@dataclass(frozen=True)
class Confirmed(_Event):
    src: str
    dst: str
    msg_id: int
    time: float


@dataclass(frozen=True)
class DeliveryFailed(_Event):
    src: str
    dst: str
    msg_id: int
    time: float
    reason: str


@dataclass(frozen=True)
class Joined(_Event):
    eui: str
    short_address: int
    time: float


@dataclass(frozen=True)
class JoinFailed(_Event):
    eui: str
    time: float
    reason: str


def _eui(e) -> str:
    s = (e.hex() if isinstance(e, (bytes, bytearray)) else str(e)).replace("-", "").replace(":", "").upper()
    if len(s) != 16 or any(c not in "0123456789ABCDEF" for c in s):
        raise ValueError(f"not an EUI-64: {e!r}")
    return s


def _hexcode(code) -> str | None:
    if code is None:
        return None
    return code.hex().upper() if isinstance(code, (bytes, bytearray)) else str(code).replace(" ", "").upper()


@dataclass
class LinkParams:
    loss: float = 0.0
    latency: float = 0.005
    duplicate: float = 0.0
    up: bool = True


# ============================================================================================ the draws

_M64 = (1 << 64) - 1


class CompactRandom(random.Random):
    """`random.Random` on SplitMix64 (Steele, Lea, Flood 2014): the whole generator state is one 64-bit integer.

    Why: the HAN's draws (loss, duplicates, short addresses) persist with every premises. The Mersenne Twister's
    state is 625 words, two thirds of a premises' JSON, decoded, encoded and compressed at every load and commit
    of a million-device fleet; this one is a number. Statistical quality is ample for loss simulation; it is
    not for cryptography (keys come from `os.urandom`/the PKI, never from here)."""

    def __init__(self, seed: int = 0):
        self._s = 0
        super().__init__(seed)

    def seed(self, a=None, version: int = 2) -> None:
        if not isinstance(a, int):
            a = int.from_bytes(hashlib.sha256(repr(a).encode()).digest()[:8], "big")
        self._s = a & _M64
        self.gauss_next = None

    def _next64(self) -> int:
        self._s = z = (self._s + 0x9E3779B97F4A7C15) & _M64
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
        return z ^ (z >> 31)

    def random(self) -> float:
        return (self._next64() >> 11) * (1.0 / 9007199254740992.0)

    def getrandbits(self, k: int) -> int:
        if k < 0:
            raise ValueError("number of bits must be non-negative")
        out, have = 0, 0
        while have < k:
            out = (out << 64) | self._next64()
            have += 64
        return out >> (have - k)

    def getstate(self) -> int:
        return self._s

    def setstate(self, state) -> None:
        """An integer (this generator's state) or a Mersenne Twister state `[version, internal, gauss]` saved by
        an older version: the latter seeds this generator from its hash (draws differ, determinism stays)."""
        if isinstance(state, int) and not isinstance(state, bool):
            self._s = state & _M64
        else:
            self.seed(json.dumps(state, separators=(",", ":")))
        self.gauss_next = None


# ============================================================================================ the network

class HanNetwork:
    """See the module docstring. Not thread-safe; one owner drives it with `send`/`join` and `poll`."""

    def __init__(self, *, seed: int = 0, pan_id: int | None = None, latency: float = 0.005, loss: float = 0.0,
                 duplicate: float = 0.0, mac_retries: int = 3, aps_retries: int = 3, processing: float = 0.001,
                 join_policy: Callable[[str], object] | None = None,
                 on_join: Callable[[str, bool, str], None] | None = None, trace: bool = False):
        self.rng = CompactRandom(seed)
        self.st: dict = {
            "seed": seed, "pan_id": pan_id if pan_id is not None else self.rng.randrange(1, 0x3FFF),
            "defaults": asdict(LinkParams(loss=loss, latency=latency, duplicate=duplicate)),
            "mac_retries": mac_retries, "aps_retries": aps_retries, "processing": processing,
            "network_key": self.rng.randbytes(16).hex().upper(), "frame_counter": 0,
            "nodes": {}, "links": {}, "allowed": {}, "flows": {}, "heap": [], "seq": 0, "next_msg": 1,
            "now": 0.0,
        }
        self.join_policy = join_policy
        self.on_join = on_join
        self.trace: list[dict] | None = [] if trace else None
        self._reassemblers: dict[str, han.Reassembler] = {}

    # ---------------------------------------------------------------------------------------- persistence
    @property
    def state(self) -> dict:
        """A snapshot of everything needed to resume (JSON types only; a copy, not the live dict)."""
        st = dict(self.st, rng=self.rng.getstate(),
                  reassembly={eui: r.state for eui, r in self._reassemblers.items()})
        return jsonio.copy(st)

    @classmethod
    def from_state(cls, state: dict, *, join_policy=None, on_join=None, trace: bool = False) -> "HanNetwork":
        """The network `state` describes (no fresh draws: a fleet restores one per premises it loads)."""
        net = cls.__new__(cls)
        net.join_policy, net.on_join = join_policy, on_join
        net.trace = [] if trace else None
        net.st = {k: v for k, v in state.items() if k not in ("rng", "reassembly")}
        net.rng = CompactRandom()
        net.rng.setstate(state["rng"])
        net._reassemblers = {eui: han.Reassembler.from_state(r) for eui, r in state.get("reassembly", {}).items()}
        return net

    # ---------------------------------------------------------------------------------------- topology
    def add_coordinator(self, eui, *, join_policy=None, on_join=None) -> None:
        """The CHF: trust center, short address 0x0000, always joined."""
        eui = _eui(eui)
        if any(n["role"] == "coordinator" for n in self.st["nodes"].values()):
            raise ValueError("the HAN already has a coordinator")
        self.st["nodes"][eui] = self._node("coordinator", None, None, 0.0, 0.0, 0.0)
        self.st["nodes"][eui].update(joined=True, short=COORDINATOR_SHORT, network_key=self.st["network_key"])
        self.join_policy = join_policy or self.join_policy
        self.on_join = on_join or self.on_join

    def add_node(self, eui, *, role: str = "router", install_code=None, parent=None, poll_interval: float = 7.5,
                 poll_phase: float = 0.0, awake_window: float = 1.0) -> None:
        """A HAN device (not yet joined). `parent` defaults to the coordinator; a sleepy node must be a leaf."""
        eui = _eui(eui)
        if role not in ROLES[1:]:
            raise ValueError(f"role must be one of {ROLES[1:]}, got {role!r}")
        if eui in self.st["nodes"]:
            raise ValueError(f"{eui} is already on the HAN")
        parent = _eui(parent) if parent is not None else self._coordinator()
        if parent not in self.st["nodes"] or self.st["nodes"][parent]["role"] in ("end_device", "sleepy"):
            raise ValueError(f"parent {parent} must be the coordinator or a router on the HAN")
        self.st["nodes"][eui] = self._node(role, parent, _hexcode(install_code), poll_interval, poll_phase,
                                           awake_window)

    @staticmethod
    def _node(role, parent, code, poll_interval, poll_phase, awake_window) -> dict:
        return {"role": role, "parent": parent, "install_code": code, "joined": False, "short": None,
                "network_key": None, "poll_interval": poll_interval, "poll_phase": poll_phase,
                "awake_window": awake_window, "awake_until": -1.0, "mac_seq": 0, "nwk_seq": 0, "aps_counter": 0}

    def _coordinator(self) -> str:
        for eui, n in self.st["nodes"].items():
            if n["role"] == "coordinator":
                return eui
        raise ValueError("add the coordinator first")

    def allow(self, eui, install_code) -> None:
        """Put a device in the coordinator's allowed list (used when no `join_policy` callback is set)."""
        self.st["allowed"][_eui(eui)] = _hexcode(install_code)

    def disallow(self, eui) -> None:
        self.st["allowed"].pop(_eui(eui), None)

    def is_joined(self, eui) -> bool:
        return bool(self.st["nodes"].get(_eui(eui), {}).get("joined"))

    def short_address(self, eui) -> int | None:
        return self.st["nodes"][_eui(eui)]["short"]

    # ---------------------------------------------------------------------------------------- links
    @staticmethod
    def _link_key(a: str, b: str) -> str:
        return "|".join(sorted((a, b)))

    def link(self, a, b) -> LinkParams:
        over = self.st["links"].get(self._link_key(_eui(a), _eui(b)), {})
        return LinkParams(**{**self.st["defaults"], **over})

    def set_link(self, a, b, **params) -> None:
        """Override loss / latency / duplicate / up for the hop between `a` and `b` (both directions)."""
        bad = set(params) - set(LinkParams.__dataclass_fields__)
        if bad:
            raise ValueError(f"unknown link parameter(s) {sorted(bad)}")
        self.st["links"].setdefault(self._link_key(_eui(a), _eui(b)), {}).update(params)

    def drop_link(self, a, b) -> None:
        self.set_link(a, b, up=False)

    def restore_link(self, a, b) -> None:
        self.set_link(a, b, up=True)

    def _ancestors(self, eui: str) -> list[str]:
        out = [eui]
        while self.st["nodes"][out[-1]]["parent"] is not None:
            out.append(self.st["nodes"][out[-1]]["parent"])
        return out

    def _path(self, a: str, b: str) -> list[str]:
        up, down = self._ancestors(a), self._ancestors(b)
        common = next(x for x in up if x in down)
        return up[:up.index(common) + 1] + list(reversed(down[:down.index(common)]))

    def _by_short(self, short: int) -> str | None:
        for eui, n in self.st["nodes"].items():
            if n["joined"] and n["short"] == short:
                return eui
        return None

    # ---------------------------------------------------------------------------------------- scheduling
    def _at(self, t: float, kind: str, data: dict) -> None:
        self.st["seq"] += 1
        heapq.heappush(self.st["heap"], [t, self.st["seq"], kind, data])

    def next_due(self) -> float | None:
        return self.st["heap"][0][0] if self.st["heap"] else None

    def poll(self, now: float) -> list[_Event]:
        """Run everything due up to `now`; the application events, in time order."""
        out: list[_Event] = []
        heap = self.st["heap"]
        while heap and heap[0][0] <= now:
            t, _, kind, data = heapq.heappop(heap)
            self.st["now"] = max(self.st["now"], t)
            getattr(self, f"_on_{kind}")(t, data, out)
        self.st["now"] = max(self.st["now"], now)
        return out

    def run_until_idle(self, now: float, limit: float = 3600.0) -> list[_Event]:
        """Poll event by event until nothing is pending (or `limit` seconds of simulated time): for tests and
        batch drivers that do not care about wall-clock pacing."""
        out, end = [], now + limit
        while self.next_due() is not None and self.next_due() <= end:
            out += self.poll(self.next_due())
        return out

    # ---------------------------------------------------------------------------------------- join
    def join(self, eui, now: float) -> None:
        """Start the join of `eui` through its parent; the outcome comes out of `poll`."""
        eui = _eui(eui)
        node = self.st["nodes"][eui]
        if node["role"] == "coordinator" or node["joined"]:
            return
        if not self.st["nodes"][node["parent"]]["joined"]:
            self._at(now, "join_failed", {"eui": eui, "reason": "parent not joined"})
            return
        if node["role"] == "sleepy":
            node["awake_until"] = max(node["awake_until"], now + node["awake_window"])
        path = self._path(eui, self._coordinator())
        ok, t = self._carry(path, now)
        if not ok:
            self._at(t, "join_failed", {"eui": eui, "reason": "no answer to the association request"})
            return
        self._at(t, "join_request", {"eui": eui})

    def _policy(self, eui: str) -> str | None:
        if self.join_policy is not None:
            return _hexcode(self.join_policy(eui))
        return self.st["allowed"].get(eui)

    def _on_join_request(self, t, data, out) -> None:
        eui = data["eui"]
        code = self._policy(eui)
        if code is None:
            self._decided(eui, False, "not in the device log")
            out.append(JoinFailed(eui, t, "not in the device log"))
            return
        try:
            key = derive_link_key(code)
        except ValueError as e:
            self._decided(eui, False, f"bad install code in the device log: {e}")
            out.append(JoinFailed(eui, t, "bad install code in the device log"))
            return
        self._decided(eui, True, "transport key sent")
        taken = {n["short"] for n in self.st["nodes"].values() if n["short"] is not None}
        short = self.rng.randrange(1, 0xFFF8)
        while short in taken:
            short = self.rng.randrange(1, 0xFFF8)
        coord = self._coordinator()
        self.st["frame_counter"] += 1
        fc = self.st["frame_counter"]
        header = bytes((SEC_CONTROL,)) + fc.to_bytes(4, "little") + bytes.fromhex(coord)[::-1]
        nonce = bytes.fromhex(coord)[::-1] + fc.to_bytes(4, "little") + bytes((SEC_CONTROL,))
        body = (bytes((APS_CMD_TRANSPORT_KEY, KEY_TYPE_NETWORK)) + bytes.fromhex(self.st["network_key"])
                + b"\x00" + bytes.fromhex(eui)[::-1] + bytes.fromhex(coord)[::-1])
        sealed = AESCCM(key, tag_length=4).encrypt(nonce, body, header)
        ok, t2 = self._carry(self._path(coord, eui), t)
        if not ok:
            self._at(t2, "join_failed", {"eui": eui, "reason": "transport key lost"})
            return
        self._at(t2, "transport_key", {"eui": eui, "short": short, "header": header.hex(), "nonce": nonce.hex(),
                                       "sealed": sealed.hex()})

    def _decided(self, eui: str, accepted: bool, reason: str) -> None:
        if self.on_join is not None:
            self.on_join(eui, accepted, reason)

    def _on_transport_key(self, t, data, out) -> None:
        eui = data["eui"]
        node = self.st["nodes"][eui]
        try:
            key = derive_link_key(node["install_code"] or "")
            body = AESCCM(key, tag_length=4).decrypt(bytes.fromhex(data["nonce"]), bytes.fromhex(data["sealed"]),
                                                     bytes.fromhex(data["header"]))
        except (ValueError, InvalidTag):
            out.append(JoinFailed(eui, t, "transport key not authenticated (install code mismatch)"))
            return
        node.update(joined=True, short=data["short"], network_key=body[2:18].hex().upper())
        out.append(Joined(eui, data["short"], t))

    def _on_join_failed(self, t, data, out) -> None:
        out.append(JoinFailed(data["eui"], t, data["reason"]))

    def leave(self, eui, now: float) -> None:
        """The device leaves (or is removed from the device log): it must join again to talk."""
        node = self.st["nodes"][_eui(eui)]
        if node["role"] != "coordinator":
            node.update(joined=False, short=None, network_key=None)

    def _carry(self, path: list[str], t: float) -> tuple[bool, float]:
        """A non-APS exchange (join traffic) along `path` with MAC retries per hop: (arrived, time)."""
        for a, b in zip(path, path[1:]):
            t = self._indirect_start(a, b, t)
            ok = False
            for attempt in range(self.st["mac_retries"] + 1):
                lp = self.link(a, b)
                if lp.up and self.rng.random() >= lp.loss:
                    t += attempt * self._mac_gap(lp) + lp.latency
                    ok = True
                    break
            if not ok:
                return False, t + (self.st["mac_retries"] + 1) * self._mac_gap(self.link(a, b))
        return True, t

    # ---------------------------------------------------------------------------------------- sending
    def send(self, src, dst, payload: bytes, now: float, *, cluster: int = han.TUNNELING_CLUSTER) -> int:
        """Queue `payload` from `src` to `dst`; returns the message id its events carry."""
        src, dst = _eui(src), _eui(dst)
        for e in (src, dst):
            if e not in self.st["nodes"]:
                raise ValueError(f"{e} is not on the HAN")
        msg_id = self.st["next_msg"]
        self.st["next_msg"] += 1
        flow = self.st["flows"].setdefault(f"{src}>{dst}", {"queue": [], "active": None})
        flow["queue"].append({"id": msg_id, "payload": bytes(payload).hex(), "cluster": cluster})
        if flow["active"] is None:
            self._at(now, "start", {"flow": f"{src}>{dst}"})
        return msg_id

    def _on_start(self, t, data, out) -> None:
        flow = self.st["flows"][data["flow"]]
        if flow["active"] is not None or not flow["queue"]:
            return
        src, dst = data["flow"].split(">")
        msg = flow["queue"].pop(0)
        if not (self.st["nodes"][src]["joined"] and self.st["nodes"][dst]["joined"]):
            out.append(DeliveryFailed(src, dst, msg["id"], t, "not joined"))
            self._at(t, "start", {"flow": data["flow"]})
            return
        node = self.st["nodes"][src]
        counter = node["aps_counter"]
        node["aps_counter"] = (counter + 1) & 0xFF
        frames = han.fragment(bytes.fromhex(msg["payload"]), counter=counter, cluster_id=msg["cluster"])
        flow["active"] = {"id": msg["id"], "counter": counter, "frames": [f.hex() for f in frames], "block": 0,
                          "try": 0}
        self._send_block(data["flow"], t)

    def _ack_wait(self, src: str, dst: str) -> float:
        path = self._path(src, dst)
        hops = list(zip(path, path[1:]))
        total = self.st["processing"]
        for a, b in hops:
            lp = self.link(a, b)
            total += 2 * ((self.st["mac_retries"] + 1) * self._mac_gap(lp) + lp.latency + self.st["processing"])
            if self.st["nodes"][b]["role"] == "sleepy":
                total += self.st["nodes"][b]["poll_interval"]
        return total

    def _send_block(self, flow_key: str, t: float) -> None:
        src, dst = flow_key.split(">")
        act = self.st["flows"][flow_key]["active"]
        self._route(src, dst, bytes.fromhex(act["frames"][act["block"]]), t)
        self._at(t + self._ack_wait(src, dst), "timeout",
                 {"flow": flow_key, "id": act["id"], "block": act["block"], "try": act["try"]})

    def _on_timeout(self, t, data, out) -> None:
        flow = self.st["flows"][data["flow"]]
        act = flow["active"]
        if act is None or (act["id"], act["block"], act["try"]) != (data["id"], data["block"], data["try"]):
            return  # acknowledged meanwhile
        if act["try"] >= self.st["aps_retries"]:
            src, dst = data["flow"].split(">")
            out.append(DeliveryFailed(src, dst, act["id"], t,
                                      f"no APS acknowledgement of block {act['block']} after {act['try'] + 1} tries"))
            flow["active"] = None
            self._at(t, "start", {"flow": data["flow"]})
            return
        act["try"] += 1
        self._send_block(data["flow"], t)

    def _route(self, src: str, dst: str, aps: bytes, t: float) -> None:
        """Wrap an APS frame in NWK and send it to the first hop toward `dst`."""
        node = self.st["nodes"][src]
        nwk = han.encode_nwk({
            "frame_control": {"frame_type": "data", "protocol_version": 2, "src_ieee_present": True,
                              "dest_ieee_present": True},
            "dest_address": self.st["nodes"][dst]["short"], "src_address": node["short"], "radius": NWK_RADIUS,
            "sequence": node["nwk_seq"], "dest_ieee": dst, "src_ieee": src, "payload": aps.hex()})
        node["nwk_seq"] = (node["nwk_seq"] + 1) & 0xFF
        self._hop(src, self._path(src, dst)[1], nwk, t)

    # ---------------------------------------------------------------------------------------- MAC hops
    @staticmethod
    def _mac_gap(lp: LinkParams) -> float:
        return 2 * lp.latency + 0.001

    def _indirect_start(self, a: str, b: str, t: float) -> float:
        """When a frame from `a` can reach `b`: a sleepy `b` only hears its parent while awake."""
        nb = self.st["nodes"][b]
        if nb["role"] != "sleepy" or t <= nb["awake_until"]:
            return t
        period, phase = nb["poll_interval"], nb["poll_phase"]
        k = -(-(t - phase) // period)
        return max(t, phase + k * period)

    def _hop(self, a: str, b: str, nwk: bytes, t: float) -> None:
        start = self._indirect_start(a, b, t)
        if start > t:
            self._at(start, "hop", {"a": a, "b": b, "nwk": nwk.hex()})
            return
        self._on_hop(t, {"a": a, "b": b, "nwk": nwk.hex()}, None)

    def _on_hop(self, t, data, out) -> None:
        a, b = data["a"], data["b"]
        na, nb = self.st["nodes"][a], self.st["nodes"][b]
        if na["role"] == "sleepy":
            na["awake_until"] = max(na["awake_until"], t + na["awake_window"])
        mac = han.encode_mac({
            "frame_control": {"frame_type": "data", "ack_request": True, "pan_id_compression": True,
                              "dest_addr_mode": "short", "src_addr_mode": "short"},
            "sequence": na["mac_seq"], "dest_pan_id": self.st["pan_id"], "dest_address": nb["short"],
            "src_address": na["short"], "payload": data["nwk"]})
        na["mac_seq"] = (na["mac_seq"] + 1) & 0xFF
        for attempt in range(self.st["mac_retries"] + 1):
            lp = self.link(a, b)
            at = t + attempt * self._mac_gap(lp)
            if not lp.up or self.rng.random() < lp.loss:
                self._log(at, a, b, mac, "lost")
                continue
            self._at(at + lp.latency, "rx", {"a": a, "b": b, "mac": mac.hex()})
            self._log(at, a, b, mac, "sent")
            if self.rng.random() < lp.duplicate:
                self._at(at + lp.latency + 0.0005, "rx", {"a": a, "b": b, "mac": mac.hex()})
                self._log(at, a, b, mac, "duplicated")
            if self.rng.random() >= lp.loss:
                return  # MAC ack heard
            self._log(at + lp.latency, b, a, b"", "ack lost")
        # every attempt failed: the NWK layer drops the frame; the APS ack timer retries end to end

    def _log(self, t, a, b, frame: bytes, outcome: str) -> None:
        if self.trace is not None:
            self.trace.append({"time": t, "from": a, "to": b, "frame": frame.hex().upper(), "outcome": outcome})
            del self.trace[:-10000]

    def _on_rx(self, t, data, out) -> None:
        b = data["b"]
        node = self.st["nodes"][b]
        try:
            frame = han.decode_mac(bytes.fromhex(data["mac"]))
            nwk = han.decode_nwk(bytes.fromhex(frame["payload"]))
        except DecodeError:
            return  # a corrupted frame is dropped, like a bad FCS on air
        if not node["joined"] or frame["dest_address"] != node["short"]:
            return
        dst = nwk["dest_ieee"] or self._by_short(nwk["dest_address"])
        if dst != b:
            if dst is None or dst not in self.st["nodes"] or nwk["radius"] <= 1:
                return
            nwk["radius"] -= 1
            self._hop(b, self._path(b, dst)[1], han.encode_nwk(nwk), t + self.st["processing"])
            return
        src = nwk["src_ieee"] or self._by_short(nwk["src_address"])
        try:
            aps = han.decode_aps(bytes.fromhex(nwk["payload"]))
        except DecodeError:
            return
        if aps["frame_control"]["frame_type"] == "ack":
            self._on_aps_ack(t, src, b, aps, out)
        elif aps["frame_control"]["frame_type"] == "data":
            self._on_aps_data(t, src, b, aps, out)

    def _on_aps_data(self, t, src: str, dst: str, aps: dict, out) -> None:
        r = self._reassemblers.setdefault(dst, han.Reassembler())
        ev = r.feed(src, aps, t)
        if aps["frame_control"]["ack_request"]:
            self._route(dst, src, han.aps_ack(aps), t + self.st["processing"])
        if ev.payload is not None:
            act = self.st["flows"].get(f"{src}>{dst}", {}).get("active")
            msg_id = act["id"] if act and act["counter"] == aps["counter"] else 0
            out.append(Delivered(src, dst, ev.payload, t, msg_id, aps["cluster_id"]))

    def _on_aps_ack(self, t, src: str, dst: str, aps: dict, out) -> None:
        key = f"{dst}>{src}"   # the ack comes back from the data's destination
        flow = self.st["flows"].get(key)
        act = flow and flow["active"]
        if not act or act["counter"] != aps["counter"]:
            return
        block = aps["extended"]["block_number"] if aps["extended"] is not None else 0
        if block != act["block"]:
            return
        if act["block"] + 1 < len(act["frames"]):
            act["block"] += 1
            act["try"] = 0
            self._send_block(key, t)
            return
        out.append(Confirmed(dst, src, act["id"], t))
        flow["active"] = None
        self._at(t, "start", {"flow": key})
