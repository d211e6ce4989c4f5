"""One premises: a comms hub (CHF, and the GPF when it is emulated) with its HAN devices (ESME, GSME, PPMID,
HCALCS), wired end to end over the virtual HAN, sans-IO and deterministic from a seed.

Theory of operation
-------------------
The premises owns the devices and the transports between them; it never reads a clock and does no I/O:
WAN frames and times go in, WAN frames come out.

* `wan_in(frame, now)`: a frame from the WAN (a whole GBCS message or a GBT block). The hub's `HanRouter`
  reassembles GBT and decides: the CHF (or GPF) answers at once (its frames are returned); an always-on HAN
  device (ESME, PPMID, HCALCS) gets the message through the GBCS tunnel at once (its answer comes out of a
  `tick` a few HAN round trips later); a sleepy GSME's message waits in the CHF's queue for its next wake.
* `tick(now)`: everything time causes up to `now`, in time order: HAN frames arriving (losses, MAC and APS
  retries, fragmentation are the `HanNetwork`'s), the GSME's wake cycle, device schedules and alerts.
* `next_wakeup()`: when `tick` next has something to do.
* `state()` / `Premises.restore(state, keystore)`: the whole premises as one JSON dict (device states, HAN,
  tunnels, the hub's queues and GBT reassembly, the wake schedule, the built-in head end's counters).

Every HAN device reaches the hub through the GBCS tunnel (Tunneling cluster 0x0704, `han.tunnel`): the hub
is the tunnel server, each device a client. The hub never pushes: an always-on device is told there is mail
and GETs at once (modelled as an immediate GET); the GSME GETs when it wakes. One message's path::

    WAN ─wan_in─▶ HanRouter.route_wan ─┬─ "chf"/"gpf" ─▶ hub device.receive ─────────────────────────▶ WAN
                                       ├─ "now" ───▶ TunnelServer.queue ─▶ device GET ─┐
                                       └─ "queued" ▶ CHF queue ─(GSME wakes: GET)──────┴▶ GET-RESPONSE (HAN)
         ─▶ device.receive ─▶ PUT (HAN) ─▶ HanRouter.route_han ─▶ WAN (GBT blocks when too long)
                                                                 └▶ another HAN device's queue (PPMID ↔ meter)

The GSME's wake cycle (the device's own `next_wake(now)` when the GSME class provides one, else every
`wake_interval` seconds from a seeded phase; the HAN's sleepy-node poll grid is the same)::

    ASLEEP ──wake time──▶ tunnel closed? ──yes──▶ Request Tunnel ──Response──▶ OPEN ─┐
                                   └──no──────────────────────────────────────────┴▶ PUT its outbox (alerts
       ▲                                                                              raised while asleep), GET
       └──────── GET-RESPONSE remaining 0 ◀── GET-RESPONSE remaining n ─▶ GET ... ◀──┘ each message ─▶ GSME
                                                                                      ─▶ its answers PUT

A HAN device's life: `add` (factory) ─CCS01─▶ in the CHF Device Log ─HAN join (install code, while joining
is open)─▶ joined (the CHF's `han_join`) ─▶ tunnel opened ─▶ talking. `commission(now)` does all of it from
scratch with the built-in head end (`party(role)`: `hil.remote_party.RemoteParty` for the supplier and the
ACB, counters persisted in the premises state), then the CS03 joins GBCS needs (GSME ↔ GPF by CS03B,
PPMID/HCALCS ↔ meters by CS03A1/CS03C).
"""
from __future__ import annotations

import hashlib
import logging
import random
import weakref
from dataclasses import dataclass, field

from protocols.dlms.apdu import access_request
from protocols.errors import DecodeError
from protocols.gbcs import gbt
from protocols.gbcs.message import decode, split_payload
from protocols.security.eui import as_eui, eui_hex
from protocols.security.keystore import Keystore, Role, Usage

from firmware_emu import devices as device_types
from firmware_emu.chf import network as chf_network
from firmware_emu.chf.routing import HanRouter
from firmware_emu.core.device import Device, Emitted
from firmware_emu.core import jsonio
from firmware_emu.core.provisioning import default_anchors, device_keys
from firmware_emu.han.install_code import with_crc
from firmware_emu.han.network import Delivered, DeliveryFailed, HanNetwork, Joined, JoinFailed
from firmware_emu.han.tunnel import Got, Put, TunnelClient, TunnelClosed, TunnelError, TunnelOpened, TunnelServer

log = logging.getLogger(__name__)

__all__ = ["Premises", "PremisesError", "Snapshot", "REGISTER_TYPE", "HAN_ROLE", "DEFAULT_WAKE_INTERVAL", "STATE_VERSION"]

STATE_VERSION = 1
#: The GSME wakes this often (seconds of simulated time) unless its class says otherwise.
DEFAULT_WAKE_INTERVAL = 30 * 60.0
#: CHF register_device device-type enum per GBCS device type (CCS01).
REGISTER_TYPE = {"ESME": 0, "GSME": 1, "HCALCS": 13, "IHD": 128, "CAD": 130, "PPMID": 132}
#: Role of each device type on the HAN (the GSME is a battery-powered sleepy end device).
HAN_ROLE = {"ESME": "router", "GSME": "sleepy", "PPMID": "end_device", "HCALCS": "end_device"}
#: Device types inside the hub itself (no HAN between them and the WAN).
HUB_TYPES = ("CHF", "GPF")
NETWORK_CONTROL = "0-0:30.3.0.255"


class PremisesError(ValueError):
    pass


def _no_join(eui: str):
    """The join policy of a premises that is gone (its HAN may outlive it briefly)."""
    return None


@dataclass
class Snapshot:
    """A premises' state for a commit (`Premises.snapshot`): `raw` is its JSON (UTF-8 bytes); `counters` is
    {device EUI: a copy of its counters}."""

    raw: bytes
    counters: dict

    @property
    def text(self) -> str:
        return self.raw.decode()


@dataclass
class _Out:
    """Frames for the WAN collected while processing, in order."""

    frames: list[bytes] = field(default_factory=list)


_HEAD_END_COUNTERS = None


def _copy_plain(obj):
    """A deep copy of dicts and lists of scalars (device counters), without a JSON round trip."""
    if type(obj) is dict:
        return {k: _copy_plain(v) for k, v in obj.items()}
    if type(obj) is list:
        return [_copy_plain(v) for v in obj]
    return obj


def _head_end_counters(base, start: int):
    """An in-memory `CounterStore` that counts its writes (every counter handed out or taken is one), so the
    premises copies the head end's counters into its state only after they moved."""
    global _HEAD_END_COUNTERS
    if _HEAD_END_COUNTERS is None:
        class HeadEndCounters(base):
            writes = 0

            def _write(self, counters):
                super()._write(counters)
                self.writes += 1
        _HEAD_END_COUNTERS = HeadEndCounters
    return _HEAD_END_COUNTERS(None, initial_counter=start)


def _install_code(seed: int, eui: str) -> str:
    """A deterministic 16-byte install code per (seed, EUI), without its CRC (the CCS01 form)."""
    return hashlib.sha256(f"premises:{seed}:{eui}".encode()).digest()[:16].hex().upper()


class Premises:
    """A comms hub and its HAN devices (module docstring).

    `devices`: (device type, EUI) pairs, or a {device type: EUI} mapping; exactly one CHF. A type whose class
    is not emulated (the GPF before it exists) is kept by EUI only: frames for it are undeliverable.
    `keystore`: where the devices' keys come from (an own test PKI has their private keys); `anchors`: their
    trust anchors (default: one organisation per role from the keystore). `han_loss`/`han_latency`: every HAN
    link's frame loss probability and one-way latency; `seed` makes the HAN, install codes and the wake phase
    reproducible. `wan_max_message`: longer HAN → WAN messages leave as GBT blocks of `gbt_block` bytes.
    `issuer`: a `PkiIssuer` for keystores without the devices' private keys (RTDS): the devices then sign with
    self-issued DS keys (`core.provisioning`), which a restore cannot reissue: restore with an own PKI.
    """

    def __init__(self, devices, keystore: Keystore, *, anchors: dict | None = None, now: float = 0.0,
                 han_loss: float = 0.0, han_latency: float = 0.005, seed: int = 0,
                 wake_interval: float = DEFAULT_WAKE_INTERVAL, wan_max_message: int | None = None,
                 gbt_block: int = 1024, install_codes: dict | None = None, profiles: dict | None = None,
                 head_end_counter: int = 1000, trace: bool = False, issuer=None, _state: dict | None = None):
        self.keystore = keystore
        self.events: list[dict] = []
        if _state is not None:
            self.st = _state
        else:
            pairs = list(devices.items()) if isinstance(devices, dict) else list(devices)
            types = {eui_hex(as_eui(e)): t.upper() for t, e in pairs}
            if list(types.values()).count("CHF") != 1:
                raise PremisesError("a premises has exactly one CHF")
            unknown = sorted({t for t in types.values() if t not in HUB_TYPES and t not in HAN_ROLE})
            if unknown:
                raise PremisesError(f"no HAN role known for device type(s) {unknown}")
            anchors = anchors if anchors is not None else default_anchors(keystore)
            rng = random.Random(seed)
            codes = {eui_hex(as_eui(k)): str(v).upper() for k, v in (install_codes or {}).items()}
            self.st = {
                "version": STATE_VERSION, "now": now, "seed": seed, "types": types,
                "anchors": {r.name.lower(): eui_hex(e) for r, e in anchors.items()},
                "install_codes": {e: codes.get(e) or _install_code(seed, e) for e, t in types.items()
                                  if t not in HUB_TYPES},
                "wake": {"interval": wake_interval, "phase": now + rng.random() * wake_interval, "next": {}},
                "outbox": {}, "devices": {}, "han": None, "tunnel_server": None, "clients": {},
                "gbt": None, "head_end": {"start": head_end_counter, "last": {}},
                "wan": {"max_message": wan_max_message, "gbt_block": gbt_block},
            }
        st = self.st
        self._anchor_roles = {Role[k.upper()]: as_eui(v) for k, v in st["anchors"].items()}
        self.devices: dict[str, Device] = {}
        for eui, dtype in st["types"].items():
            cls = device_types.device_class(dtype)
            if cls is None:
                log.info("premises: %s %s is not emulated; frames for it are undeliverable", dtype, eui)
                continue
            lazy = getattr(keystore, "device_keys", None) if issuer is None else None
            keys = (lazy(eui) if lazy is not None else None) or device_keys(keystore, eui, issuer=issuer)
            saved = st["devices"].get(eui)
            dev = cls(keys, saved, anchors=self._anchor_roles, now=st["now"],
                      profile=(profiles or {}).get(eui) or (profiles or {}).get(dtype))
            st["devices"][eui] = dev.state
            self.devices[eui] = dev
        self.chf_eui = next(e for e, t in st["types"].items() if t == "CHF")
        self.chf = self.devices[self.chf_eui]
        self.gpf_eui = next((e for e, t in st["types"].items() if t == "GPF"), None)
        if st["gbt"] is None:
            st["gbt"] = {"partial": {}, "done": {}}
        self.router = HanRouter(self.chf, gpf=self.gpf_eui, wan_max_message=st["wan"]["max_message"],
                                gbt_block=st["wan"]["gbt_block"], reassembler=gbt.Reassembler(state=st["gbt"]))
        if st["tunnel_server"] is None:
            st["tunnel_server"] = {"tunnels": {}, "next_id": 1, "queues": {}, "seq": 0}
        self.server = TunnelServer(st["tunnel_server"])
        self.clients = {e: TunnelClient(e, st["clients"].setdefault(e, {"phase": "CLOSED", "tunnel_id": None,
                                                                         "seq": 0, "max_transfer": None}))
                        for e in self.han_devices()}
        if st["han"] is None:
            self.net = HanNetwork(seed=seed, latency=han_latency, loss=han_loss, trace=trace)
            self.net.add_coordinator(self.chf_eui)
            for e in self.han_devices():
                role = HAN_ROLE.get(st["types"][e], "end_device")
                kw = {"poll_interval": st["wake"]["interval"], "poll_phase": st["wake"]["phase"]} \
                    if role == "sleepy" else {}
                self.net.add_node(e, role=role, install_code=with_crc(bytes.fromhex(st["install_codes"][e])), **kw)
        else:
            self.net = HanNetwork.from_state(st["han"], trace=trace)
        policy = weakref.WeakMethod(self._join_policy)   # weak: no reference cycle, so a premises a fleet
        self.net.join_policy = lambda eui: (policy() or _no_join)(eui)     # evicts is freed at once (refcount)
        self._head_end: dict[Role, object] = {}
        self._counters = None
        self._counters_synced: int | None = None

    # ---------------------------------------------------------------------------------------- persistence

    def state(self) -> dict:
        """The whole premises as a JSON dict (a deep copy)."""
        self.st["han"] = self.net.state
        self.st["devices"] = {e: d.state for e, d in self.devices.items()}
        self._sync_head_end()
        return jsonio.copy(self.st)

    def snapshot(self) -> "Snapshot":
        """The state for a commit, without `state()`'s deep copies: its JSON (`json.loads` of it equals
        `self.state()`) and a copy of every device's counters (what `core.store.check_counters` compares). One
        encoder pass over the live dicts (`core.jsonio`): a premises is about 4 KB of JSON, a few µs."""
        self.st["devices"] = {e: d.state for e, d in self.devices.items()}
        self._sync_head_end()
        net = self.net
        reassemblers = getattr(net, "_reassemblers", None)
        live = getattr(net, "st", None)
        if reassemblers is None or type(live) is not dict or "rng" in live or "reassembly" in live:
            return Snapshot(jsonio.dumps(self.state()), self._device_counters())
        st = dict(self.st)
        st["han"] = dict(live, rng=net.rng.getstate(), reassembly={e: r.state for e, r in reassemblers.items()})
        return Snapshot(jsonio.dumps(st), self._device_counters())

    def _device_counters(self) -> dict:
        return {e: _copy_plain(d.get("counters") or {}) for e, d in self.st["devices"].items()}

    def _sync_head_end(self) -> None:
        """Copy the built-in head end's counters into the state (only when one was handed out since)."""
        store = self._counters
        if store is not None and getattr(store, "writes", None) != self._counters_synced:
            self._counters_synced = getattr(store, "writes", None)
            for e in set(self.st["anchors"].values()):
                last = self._counters.last(e)
                if last is not None:
                    self.st["head_end"]["last"][e] = last

    @classmethod
    def restore(cls, state: dict, keystore: Keystore, *, trace: bool = False, issuer=None,
                copy: bool = True) -> "Premises":
        """A premises from `state()` (keys come from the keystore again; nothing secret is in the state).
        `copy=False` adopts `state` itself (a dict nobody else holds, e.g. just decoded from storage)."""
        if state.get("version") != STATE_VERSION:
            raise PremisesError(f"premises state version {state.get('version')!r}, expected {STATE_VERSION}")
        return cls(None, keystore, trace=trace, issuer=issuer,
                   _state=jsonio.copy(state) if copy else state)

    # ---------------------------------------------------------------------------------------- who is who

    @property
    def now(self) -> float:
        return self.st["now"]

    def device_type(self, eui) -> str | None:
        return self.st["types"].get(eui_hex(as_eui(eui)))

    def device(self, kind_or_eui) -> Device | None:
        """A device by EUI, or the first one of a device type ("ESME", "GSME"...)."""
        s = str(kind_or_eui).upper()
        if s in self.st["types"].values():
            return next((d for e, d in self.devices.items() if self.st["types"][e] == s), None)
        return self.devices.get(eui_hex(as_eui(kind_or_eui)))

    def han_devices(self) -> list[str]:
        """EUIs of the devices on the HAN (everything but the hub's own functions), in configuration order."""
        return [e for e, t in self.st["types"].items() if t not in HUB_TYPES]

    def is_sleepy(self, eui: str) -> bool:
        return HAN_ROLE.get(self.st["types"].get(eui, ""), "") == "sleepy"

    def party(self, role: Role):
        """The built-in head end for `role` (a `RemoteParty` on the keystore; counters kept in the state)."""
        from hil.remote_party import CounterStore, RemoteParty
        party = self._head_end.get(role)
        if party is None:
            eui = self._anchor_roles.get(role)
            if eui is None:
                raise PremisesError(f"no {role.name.lower()} in the premises' trust anchors")
            if self._counters is None:      # one store for every role: supplementary counters included
                self._counters = _head_end_counters(CounterStore, self.st["head_end"]["start"])
                for e, n in self.st["head_end"]["last"].items():
                    self._counters.take(e, n)
            party = RemoteParty(self.keystore, eui, role, counter_store=self._counters)
            self._head_end[role] = party
        return party

    # ---------------------------------------------------------------------------------------- time

    def next_wakeup(self) -> float | None:
        """The earliest time `tick` has work: a HAN frame, a device's schedule, the GSME's next wake."""
        times = [self.net.next_due()]
        times += [d.next_wakeup() for d in self.devices.values()]
        times += [self._next_wake(e) for e in self.han_devices() if self.is_sleepy(e) and self._joined(e)]
        times = [t for t in times if t is not None]
        return min(times) if times else None

    def next_wake(self, eui) -> float | None:
        """When the sleepy device `eui` next wakes and polls the hub (None: not joined, or not sleepy)."""
        eui = eui_hex(as_eui(eui))
        return self._next_wake(eui) if self.is_sleepy(eui) and self._joined(eui) else None

    def _next_wake(self, eui: str) -> float:
        nxt = self.st["wake"]["next"].get(eui)
        if nxt is None:
            nxt = self._wake_after(eui, self.now)
            self.st["wake"]["next"][eui] = nxt
        return nxt

    def _wake_after(self, eui: str, t: float) -> float:
        dev = self.devices.get(eui)
        own = getattr(dev, "next_wake", None)
        if callable(own):
            return float(own(t))
        w = self.st["wake"]
        k = (t - w["phase"]) // w["interval"] + 1
        return w["phase"] + k * w["interval"]

    def tick(self, now: float) -> list[bytes]:
        """Everything time causes up to `now`; the WAN frames it produces, in time order."""
        out = _Out()
        self._advance(now, out)
        return out.frames

    def _advance(self, now: float, out: _Out) -> None:
        if now < self.now:
            raise PremisesError(f"time went backwards: {now} < {self.now}")
        while True:
            t = self.next_wakeup()
            if t is None or t > now:
                break
            self._step(max(t, self.now), out)
        self._set_now(now)
        for eui, dev in self.devices.items():        # time-driven behaviour besides schedules
            self._from_device(eui, dev.tick(now), now, out, while_awake=False)

    def _set_now(self, t: float) -> None:
        self.st["now"] = max(self.st["now"], t)

    def _step(self, t: float, out: _Out) -> None:
        self._set_now(t)
        for ev in self.net.poll(t):
            self._on_han_event(ev, out)
        for eui, dev in self.devices.items():
            due = dev.next_wakeup()
            if due is not None and due <= t:
                self._from_device(eui, dev.tick(t), t, out, while_awake=False)
        for eui in self.han_devices():
            if self.is_sleepy(eui) and self._joined(eui) and self._next_wake(eui) <= t:
                self.st["wake"]["next"][eui] = self._wake_after(eui, t)
                self._wake(eui, t)

    # ---------------------------------------------------------------------------------------- WAN side

    def wan_in(self, frame: bytes, now: float) -> list[bytes]:
        """A frame from the WAN at `now`; the WAN frames that go out by `now` (time before it runs first)."""
        out = _Out()
        self._advance(now, out)
        for d in self.router.route_wan(bytes(frame), now):
            if d.how in ("chf", "gpf"):
                eui = self.chf_eui if d.how == "chf" else d.to
                dev = self.devices.get(eui)
                if dev is None:
                    self._event("undeliverable", eui=eui, reason=f"{self.st['types'].get(eui)} not emulated")
                    continue
                self._from_device(eui, dev.receive(d.frame, now), now, out, while_awake=True)
            elif d.how == "now":
                self.server.queue(d.to, d.frame)
                self._kick(d.to, now)
            elif d.how == "queued":
                self._event("queued", eui=d.to, queued=self.router.queued(d.to))
            else:
                self._event(d.how, eui=d.to, reason=d.reason)
        return out.frames

    def _to_wan(self, frame: bytes, out: _Out) -> None:
        limit = self.st["wan"]["max_message"]
        if limit is not None and len(frame) > limit:
            out.frames += gbt.segment(frame, max_block=self.st["wan"]["gbt_block"])
        else:
            out.frames.append(frame)

    # ---------------------------------------------------------------------------------------- devices → network

    def _from_device(self, eui: str, emitted: list[Emitted], t: float, out: _Out, *, while_awake: bool) -> None:
        """Frames a device produced: the hub's go to the WAN, a HAN device's up its tunnel (a sleepy device's
        wait in its outbox for its next wake unless it is awake now)."""
        for e in emitted:
            if self.st["types"][eui] in HUB_TYPES:
                self._to_wan(e.frame, out)
            elif self.is_sleepy(eui) and not while_awake:
                self.st["outbox"].setdefault(eui, []).append(e.frame.hex().upper())
            else:
                self._put(eui, e.frame, t)

    def emit(self, eui, emitted: list[Emitted], now: float) -> list[bytes]:
        """Frames a HAN device made outside `receive`/`tick` (a PPMID keypad action): sent up its tunnel."""
        out = _Out()
        self._advance(now, out)
        eui = eui_hex(as_eui(eui))
        self._from_device(eui, emitted, now, out, while_awake=True)
        return out.frames

    def _put(self, eui: str, frame: bytes, t: float) -> None:
        client = self.clients[eui]
        if not client.is_open:
            self.st["outbox"].setdefault(eui, []).append(frame.hex().upper())
            return
        self.net.send(eui, self.chf_eui, client.put(frame, t), t)

    def _flush_outbox(self, eui: str, t: float) -> None:
        pending = self.st["outbox"].pop(eui, [])
        for h in pending:
            self._put(eui, bytes.fromhex(h), t)

    def _kick(self, eui: str, t: float) -> None:
        """An always-on device learns there is mail and GETs (opening its tunnel first when needed)."""
        if not self._joined(eui) or self.is_sleepy(eui):
            return
        client = self.clients[eui]
        if client.is_open:
            self.net.send(eui, self.chf_eui, client.get(t), t)
        elif client.state["phase"] != "OPENING":
            self.net.send(eui, self.chf_eui, client.open(t), t)

    def _wake(self, eui: str, t: float) -> None:
        """The GSME wakes: it pushes its metering data to the GPF's mirror, opens the tunnel if needed, else
        PUTs what it holds and GETs."""
        client = self.clients[eui]
        self._event("wake", eui=eui, queued=self.router.queued(eui))
        self._push_mirror(eui, t)
        if client.is_open:
            self._flush_outbox(eui, t)
            self.net.send(eui, self.chf_eui, client.get(t), t)
        else:
            self.net.send(eui, self.chf_eui, client.open(t), t)

    def _push_mirror(self, eui: str, t: float) -> None:
        """The GSME's Metering attributes to the GPF (`gpf.mirror.update_mirror`), read with the GSME's own
        cluster implementations. Simplification: the push does not cross the simulated HAN."""
        gpf, gsme = self.devices.get(self.gpf_eui or ""), self.devices.get(eui)
        if gpf is None or gsme is None or not hasattr(gpf, "update_mirror"):
            return
        from firmware_emu.gpf import mirror
        gsme.now = t
        at = gsme.device_time(t) if hasattr(gsme, "device_time") else t
        reliable = bool(gsme.state.get("gsme", {}).get("clock_reliable"))
        gpf.update_mirror(mirror.gsme_report(gsme, t), at, gsme_clock_reliable=reliable)

    def _joined(self, eui: str) -> bool:
        return self.net.is_joined(eui)

    # ---------------------------------------------------------------------------------------- HAN events

    def _join_policy(self, eui: str):
        """The CHF Device Log decides joins: logged, and joining open or a link key already held."""
        entry = chf_network.logged(self.chf, eui)
        if entry is None or not entry.get("install_code"):
            return None
        if not chf_network.joining_open(self.chf, self.net.st["now"]) and not entry.get("hashed_link_key"):
            return None
        return with_crc(bytes.fromhex(entry["install_code"]))

    def _on_han_event(self, ev, out: _Out) -> None:
        if isinstance(ev, Delivered):
            if ev.dst == self.chf_eui:
                self._at_hub(ev, out)
            elif ev.dst in self.clients:
                self._at_device(ev, out)
        elif isinstance(ev, DeliveryFailed):
            dev_end = ev.dst if ev.src == self.chf_eui else ev.src
            chf_network.han_activity(self.chf, dev_end, ev.time, ok=False)
            self._event("han_delivery_failed", src=ev.src, dst=ev.dst, reason=ev.reason)
        elif isinstance(ev, Joined):
            chf_network.han_join(self.chf, ev.eui, ev.time)
            self._event("han_joined", eui=ev.eui)
            client = self.clients.get(ev.eui)
            if client is not None:      # a joined device opens its tunnel at once (the GSME: its first wake)
                client.state.update(phase="CLOSED", tunnel_id=None)
                self.net.send(ev.eui, self.chf_eui, client.open(ev.time), ev.time)
                if self.is_sleepy(ev.eui):
                    self.st["wake"]["next"][ev.eui] = self._wake_after(ev.eui, ev.time)
        elif isinstance(ev, JoinFailed):
            self._event("han_join_failed", eui=ev.eui, reason=ev.reason)

    def _at_hub(self, ev: Delivered, out: _Out) -> None:
        src = ev.src
        if self.router.queued(src):                # what the CHF holds for it goes down this tunnel
            for frame in self.router.poll(src, ev.time):
                self.server.queue(src, frame)
        frames, events = self.server.receive(src, ev.payload, ev.time)
        for f in frames:
            self.net.send(self.chf_eui, src, f, ev.time)
        for e in events:
            if isinstance(e, Put):
                before = {x: self.router.queued(x) for x in self.clients}
                wan = self.router.route_han(e.message, src, ev.time)
                for f in wan:
                    out.frames.append(f)
                for x in self.clients:             # HAN → HAN (PPMID ↔ meter): the recipient is told
                    if self.router.queued(x) > before[x]:
                        self._kick(x, ev.time)
            elif isinstance(e, (TunnelError, TunnelClosed)):
                self._event("tunnel", eui=src, detail=e.reason)

    def _at_device(self, ev: Delivered, out: _Out) -> None:
        eui = ev.dst
        client = self.clients[eui]
        frames, events = client.receive(ev.payload, ev.time)
        for f in frames:
            self.net.send(eui, self.chf_eui, f, ev.time)
        for e in events:
            if isinstance(e, TunnelOpened):
                self._flush_outbox(eui, ev.time)
                self.net.send(eui, self.chf_eui, client.get(ev.time), ev.time)
            elif isinstance(e, Got):
                dev = self.devices.get(eui)
                if dev is None:
                    self._event("undeliverable", eui=eui, reason="device not emulated")
                    continue
                self._from_device(eui, dev.receive(e.message, ev.time), ev.time, out, while_awake=True)
            elif isinstance(e, TunnelClosed):
                self._event("tunnel", eui=eui, detail=e.reason)
                if not self.is_sleepy(eui):
                    self._kick(eui, ev.time)
            elif isinstance(e, TunnelError):
                self._event("tunnel", eui=eui, detail=e.reason)

    def _event(self, name: str, **detail) -> None:
        self.events.append({"event": name, "t": self.now, **detail})
        del self.events[:-1000]

    # ---------------------------------------------------------------------------------------- commissioning

    def commission(self, now: float, *, join_timeout: int = 3600, limit: float = 3 * 3600.0) -> dict:
        """Bring a factory-fresh premises into service with the built-in head end: CCS01 per HAN device (ACB
        on behalf of the supplier), the HAN joins with their install codes, then the CS03 joins (GSME ↔ GPF,
        PPMID/HCALCS ↔ meters). Runs simulated time until every answer is back (the GSME's on its first wake,
        right after its join) or `limit` seconds passed. Returns {"results": {label: outcome}, "wan": frames,
        "now": the time it finished}."""
        acb, sup = self.party(Role.ACCESS_CONTROL_BROKER), self.party(Role.SUPPLIER)
        wan: list[bytes] = []
        waiting: dict[tuple[str, int], str] = {}       # (originator, counter) → label
        results: dict[str, str] = {}

        def send(label: str, frame: bytes, t: float) -> None:
            gh = split_payload(frame)[0]["grouping_header"]
            waiting[(gh["originator"].upper(), gh["originator_counter"])] = label
            wan.extend(self.wan_in(frame, t))

        t = now
        for eui in self.han_devices():
            dtype = self.st["types"][eui]
            cmd = _ccs01(self.chf_eui, eui, self.st["install_codes"][eui], REGISTER_TYPE[dtype], join_timeout)
            send(f"CCS01 {dtype} {eui}", acb.build(cmd, on_behalf_of=sup.eui), t)
        for eui in self.han_devices():
            self.net.join(eui, t)
        while any(not self._joined(e) for e in self.han_devices()):      # joins take a few HAN round trips
            nxt = self.next_wakeup()
            if nxt is None or nxt > now + 60:
                break
            wan += self.tick(max(nxt, self.now))
            t = max(t, nxt)
        for label, frame in self._cs03_commands(acb, sup):
            send(label, frame, t)

        end, checked = now + limit, 0
        while True:
            for f in wan[checked:]:
                label = _answer(f, waiting)
                if label is not None:
                    results[label] = _outcome(f)
            checked = len(wan)
            if all(lbl in results for lbl in waiting.values()):
                break
            nxt = self.next_wakeup()
            if nxt is None or nxt > end:
                break
            wan += self.tick(max(nxt, self.now))
            t = nxt
        for label in waiting.values():
            results.setdefault(label, "no answer")
        return {"results": results, "wan": wan, "now": max(t, self.now)}

    def _cs03_commands(self, acb, sup):
        """The CS03 joins a premises needs, as (label, frame)."""
        types = self.st["types"]
        meters = [e for e, k in types.items() if k in ("ESME", "GSME")]
        ka = lambda e: self.keystore.certificate(e, Usage.KA)  # noqa: E731
        out = []
        for g in (e for e, k in types.items() if k == "GSME"):
            if self.gpf_eui is not None:
                out.append((f"CS03B GSME {g}", sup.build(_asn1(g, "0x000E", "CS03B.command", {
                    "method": 2, "other_device": self.gpf_eui, "device_type": "GPF"}))))
        for h in (e for e, k in types.items() if k in ("PPMID", "HCALCS")):
            kind = types[h]
            for m in meters:
                mtype = types[m]
                if kind == "HCALCS" and mtype != "ESME":
                    continue
                if mtype == "ESME":       # Method A on the meter (supplier, critical)
                    out.append((f"CS03A1 {mtype} {m} +{kind}", sup.build(_asn1(m, "0x000D", "CS03A1.command", {
                        "method": 0, "other_device": h, "device_type": kind}))))
                else:                     # the GSME learns the PPMID by Method C (RTDS 8.7.1)
                    cert = ka(h)
                    if cert is None:
                        continue
                    out.append((f"CS03C {mtype} {m} +{kind}", sup.build(_asn1(m, "0x00AF", "CS03C.command", {
                        "method": 3, "other_device": h, "device_type": kind,
                        "other_device_certificate": {"der": cert.hex().upper()}}))))
                cert = ka(m)
                if cert is None:
                    continue
                out.append((f"CS03C {kind} {h} +{mtype}", acb.build(_asn1(h, "0x00AF", "CS03C.command", {
                    "method": 3, "other_device": m, "device_type": mtype,
                    "other_device_certificate": {"der": cert.hex().upper()}}), on_behalf_of=sup.eui)))
        return out


# -------------------------------------------------------------------------------------------- command shapes

def _os(h: str) -> dict:
    return {"type": "octet-string", "value": h}


def _ccs01(chf: str, eui: str, install_code: str, register_type: int, timeout: int) -> dict:
    """CCS01: register_device {EUI, key type 1 (install code), code, type}, join timeout, enable joining."""
    register = {"type": "structure", "value": [_os(eui), {"type": "enum", "value": 1}, _os(install_code),
                                               {"type": "enum", "value": register_type}]}
    return {"grouping_header": {"recipient": chf, "other_information": {"message_code": "0x0001"}},
            "payload": {"dlms": access_request(("action", 104, NETWORK_CONTROL, 1, register),
                                               ("set", 104, NETWORK_CONTROL, 3, {"type": "long-unsigned",
                                                                                 "value": timeout}),
                                               ("set", 104, NETWORK_CONTROL, 2, {"type": "boolean", "value": True}))}}


def _asn1(recipient: str, code: str, schema: str, value: dict) -> dict:
    return {"grouping_header": {"recipient": recipient, "other_information": {"message_code": code}},
            "payload": {"asn1": {"use_case_schema": schema, "value": value}}}


def _answer(frame: bytes, waiting: dict) -> str | None:
    """The label of the command `frame` answers (a response echoes the command's originator counter)."""
    try:
        env, _, _ = split_payload(frame)
        gh = env["grouping_header"]
    except (DecodeError, KeyError, TypeError):
        return None
    if gh.get("cra_flag") != "response":
        return None
    return waiting.get((gh["recipient"].upper(), gh["originator_counter"]))


def _outcome(frame: bytes) -> str:
    """A short verdict of a commissioning response: the ASN.1 response code or the DLMS results."""
    try:
        payload = decode(frame)["payload"]
    except DecodeError as e:
        return f"undecodable: {e}"
    if "asn1" in payload:
        return str(payload["asn1"]["value"].get("response_code", "success"))
    if "dlms" in payload:
        results = [r.get("result") for r in payload["dlms"].get("access_response", {}).get("results", [])]
        return "success" if all(r == "success" for r in results) else ",".join(map(str, results))
    return "answered"

