"""The CHF's HAN: the ZigBee Network Control object, the CHF Device Log, the sub-GHz radio and the CHF's own
logs and alerts (CCS01–CCS08, CS14, ECS26i/n, ECS35c/d, DBCH01–DBCH11).

Theory of operation
-------------------
Everything lives in `state["chf"]` (JSON):

* `device_log`: the CHF Device Log (the HAN "whitelist", at most 16 entries), one entry per device:
  `{eui, device_type (the register_device enum: 0 ESME, 1 GSME, 13 HCALCS, 128 IHD, 130 CAD, 132 PPMID;
  None when restored), install_code (hex, "" when restored), hashed_link_key (hex, "" until a TC link key is
  established), joined, last_communication (unix seconds | None), successes, failures}`;
* `historic_log`: devices removed from the log, with the hash of their link key (CCS07, object 0-0:30.3.1.255);
  a device registered again from there communicates with its old key without a new join (GBCS CCS01);
* `join`: `{enabled_at, timeout}`: joining is open for `timeout` seconds after enable_disable_joining := TRUE;
* `extended_pan_id`: the network's extended PAN id (the CHF EUI until CCS03 restores another one);
* `sub_ghz`: operating channel `{page, channel}`, configuration (DBCH03/04), the channel log (DBCH02);
* `logs`: the event log (ECS35c) and the CHF's own security-log entries (ECS35d, merged with the core's
  refusals).

One device-log entry::

    absent ──CCS01 register_device──▶ registered ──HAN join while joining is open (han_join)──▶ joined
      ▲  ◀──────────────────CCS02 unregister_device (→ historic log, keeps the key hash)───────┘ │
      └──── CCS03 restore_PAN replaces the whole log (entries joined, with the restored key hashes)

Every change of the log's EUIs or link-key hashes raises CS14 (0x0018, alert 8F12 to the ACB, the body being
what backup_PAN returns). GBCS has the CHF send it once the command is done, so it is scheduled
(`CS14_DELAY` after the command) rather than returned with the response: time-caused work (`Device.tick`).
A sub-GHz channel scan (DBCH05) likewise ends later in DBCH08 (8F28) and, when the channel moves, DBCH07
(8F26); a configuration change (DBCH04) raises DBCH09 (8F2A). Test scenarios raise the rest through
`stimulate` (CS14, DBCH06–DBCH11, CCS08 firmware distribution 8F8A/8F89).

Fault targets are the DLMS ones (`104/0-0:30.3.0.255/m1`...), served by the COSEM server before any object runs.
"""
from __future__ import annotations

import hashlib
import logging

from protocols.framing.crc import x25

from protocols.asn1.payloads import encode_asn1
from protocols.security.eui import as_eui, eui_hex

from firmware_emu.core.catalogue import Catalogue
from firmware_emu.core.clock import dlms_datetime, to_gbcs_seconds
from firmware_emu.core.cosem import AccessFailure, StoredObject, attr_key, dlms_alert_content
from firmware_emu.han.install_code import mmo_hash

log = logging.getLogger(__name__)

__all__ = ["initial_chf_state", "NETWORK_CONTROL", "HISTORIC_NETWORK_CONTROL", "MAX_DEVICES", "CS14_DELAY", "chf_state", "han_join",
           "han_activity", "logged", "backup_pan", "stimulate", "register", "REGISTER_DEVICE_TYPES",
           "mmo_hash", "install_code_link_key", "ALERTS"]

NETWORK_CONTROL = "0-0:30.3.0.255"
HISTORIC_NETWORK_CONTROL = "0-0:30.3.1.255"
CLASS_NETWORK_CONTROL = 104
#: The CHF Device Log holds up to 16 devices (GBCS: active_devices[0..16]).
MAX_DEVICES = 16
#: Seconds between the command that changed the device log and the CS14 alert it causes.
CS14_DELAY = 1.0
#: How long a sub-GHz channel scan takes before its DBCH08 outcome.
SCAN_DURATION = 60.0
#: register_device device-type enum (appendix, CCS01 notes).
REGISTER_DEVICE_TYPES = {0: "ESME", 1: "GSME", 13: "HCALCS", 128: "IHD", 130: "CAD", 132: "PPMID"}

SUB_GHZ_CONFIG = "0-0:94.44.10.0"
SUB_GHZ_SCAN = "0-0:94.44.10.1"
SUB_GHZ_CHANNEL = "0-0:94.44.10.2"
SUB_GHZ_CHANNEL_LOG = "0-0:94.44.10.3"
EVENT_LOG = "0-0:99.98.0.255"
SECURITY_LOG = "0-0:99.98.1.255"
LOG_DEPTH = {"event": 100, "security": 100, "channel": 100}

#: The CHF's own alerts: message code → (alert code, use case).
ALERTS = {
    0x0018: (0x8F12, "CS14"),
    0x0110: (0x8F20, "DBCH06"), 0x0111: (0x8F26, "DBCH07"), 0x0112: (0x8F28, "DBCH08"),
    0x0113: (0x8F2A, "DBCH09"), 0x0114: (0x8F2C, "DBCH10"), 0x0115: (0x8F2D, "DBCH11"),
    0x0128: (0x8F8A, "CCS08"),
}
CS14, DBCH07, DBCH08, DBCH09, DBCH11, CCS08 = 0x0018, 0x0111, 0x0112, 0x0113, 0x0115, 0x0128
FIRMWARE_TRANSFER_FAILED = 0x8F89

#: Factory sub-GHz configuration (GBCS 10.6.2.3 field order): four channel masks (page 28–31, every channel
#: allowed), duty-cycle thresholds, channel changes per week, GSME curfew, noise limits, poor-comms
#: percentage and periods, local channel measurement period and failure / retry percentages.
FACTORY_SUB_GHZ = [("mask", 28), ("mask", 29), ("mask", 30), ("mask", 31), ("long-unsigned", 150),
                   ("long-unsigned", 250), ("unsigned", 2), ("long-unsigned", 10), ("unsigned", 5),
                   ("unsigned", 12), ("long-unsigned", 6000), ("unsigned", 100), ("long-unsigned", 120),
                   ("long-unsigned", 4000), ("long-unsigned", 2500)]


# ---------------------------------------------------------------------------------------------- state

def initial_chf_state(eui: str) -> dict:
    """A factory-fresh hub: empty logs, joining closed, the PAN named after the CHF."""
    return {"device_log": [], "historic_log": [], "join": {"enabled_at": None, "timeout": 0},
            "extended_pan_id": eui, "sub_ghz": {"page": 28, "channel": 0, "config": None, "scans": 0},
            "logs": {"event": [], "security": [], "channel": []}}


def chf_state(device) -> dict:
    s = device.state.get("chf")
    if s is None:
        s = device.state["chf"] = initial_chf_state(device.state["eui"])
    return s


def _append(device, name: str, row: list) -> None:
    rows = chf_state(device)["logs"].setdefault(name, [])
    rows.append(list(row))
    del rows[:-LOG_DEPTH[name]]


def logged(device, eui) -> dict | None:
    """The device-log entry of `eui`, or None."""
    key = eui if isinstance(eui, str) and len(eui) == 16 and eui.isupper() else eui_hex(as_eui(eui))
    return next((e for e in chf_state(device)["device_log"] if e["eui"] == key), None)


def install_code_link_key(install_code: bytes) -> bytes:
    """The TC link key a device joins with: MMO hash of the install code with its CRC-16 (little-endian)
    appended (the appendix: the command's install code "does not include the 16 bit CRC")."""
    return mmo_hash(install_code + x25(install_code).to_bytes(2, "little"))


def joining_open(device, now: float) -> bool:
    j = chf_state(device)["join"]
    return j["enabled_at"] is not None and now < j["enabled_at"] + j["timeout"]


def _schedule_cs14(device, now: float, why: str) -> None:
    """One CS14 per burst of changes: the alert carries the log as it is when it is sent."""
    if not any(s["kind"] == "chf_cs14" for s in device.state["schedule"]):
        device.schedule(now + CS14_DELAY, "chf_cs14", {"why": why})


# ---------------------------------------------------------------------------------------------- HAN side

def han_join(device, eui, now: float) -> bool:
    """A HAN device asks to join (or rejoin). Joins when it is in the device log and either joining is open
    or it already holds a TC link key (rejoin); the CHF then holds a link key for it (CS14 follows)."""
    entry = logged(device, eui)
    if entry is None:
        _append(device, "security", [to_gbcs_seconds(now), 0x8F3E])   # unauthorised communication access
        device.event("han_join_refused", eui=eui_hex(as_eui(eui)), reason="not in device log")
        return False
    if not entry["hashed_link_key"] and not joining_open(device, now):
        device.event("han_join_refused", eui=entry["eui"], reason="joining closed")
        return False
    entry["joined"] = True
    entry["last_communication"] = now
    if not entry["hashed_link_key"]:
        key = install_code_link_key(bytes.fromhex(entry["install_code"] or "00" * 16))
        entry["hashed_link_key"] = mmo_hash(key).hex().upper()
        _schedule_cs14(device, now, "link key established")
    _append(device, "event", [to_gbcs_seconds(now), 0x8F12, entry["eui"]])
    device.event("han_joined", eui=entry["eui"])
    return True


def han_activity(device, eui, now: float, *, ok: bool = True) -> None:
    """A HAN exchange with a logged device happened (routing calls it): last communication, counters."""
    entry = logged(device, eui)
    if entry is None:
        return
    if ok:
        entry["last_communication"] = now
        entry["successes"] = min(255, entry.get("successes", 0) + 1)
    else:
        entry["failures"] = min(255, entry.get("failures", 0) + 1)


# ---------------------------------------------------------------------------------------------- data shapes

def _os(hexstr: str) -> dict:
    return {"type": "octet-string", "value": hexstr}


def backup_pan(device, now: float, *, historic: bool = False) -> dict:
    """The backup_PAN structure {date-time, extended PAN id, array of {EUI, hashed TC link key}}: the method 4
    result and the CS14 alert body."""
    s = chf_state(device)
    entries = s["historic_log"] if historic else s["device_log"]
    devices = [{"type": "structure", "value": [_os(e["eui"]), _os(e.get("hashed_link_key", ""))]} for e in entries]
    return {"type": "structure", "value": [_os(dlms_datetime(now).hex().upper()), _os(s["extended_pan_id"]),
                                           {"type": "array", "value": devices}]}


def _radio(eui: str) -> list[int]:
    """Per-device link statistics: deterministic in the EUI (RSSI max/avg/min, LQI max/avg/min)."""
    h = hashlib.sha256(bytes.fromhex(eui)).digest()
    avg = -40 - h[0] % 40
    lqi = 150 + h[1] % 100
    return [avg + 5 + h[2] % 10, avg, avg - 5 - h[3] % 30, min(255, lqi + 5 + h[4] % 10), lqi,
            max(0, lqi - 30 - h[5] % 60)]


def _active_device(e: dict) -> dict:
    status = 0x80 | (0x40 if e.get("joined") else 0) | (0x08 if e.get("hashed_link_key") else 0)
    rmax, ravg, rmin, lmax, lavg, lmin = _radio(e["eui"])
    last = e.get("last_communication")
    last_dt = dlms_datetime(last).hex().upper() if last is not None else "FFFFFFFFFFFFFFFFFF8000FF"
    u = lambda v: {"type": "unsigned", "value": v}  # noqa: E731
    i = lambda v: {"type": "integer", "value": v}  # noqa: E731
    return {"type": "structure", "value": [
        _os(e["eui"]), {"type": "bit-string", "value": {"length": 8, "bits": f"{status:02X}"}},
        i(rmax), i(ravg), i(rmin), u(lmax), u(lavg), u(lmin), _os(last_dt),
        u(1), u(e.get("failures", 0)), u(e.get("successes", 0)), u(1), u(1)]}


# ---------------------------------------------------------------------------------------------- COSEM objects

def _expect(value: dict, dlms_type: str, length: int | None = None):
    if not isinstance(value, dict) or value.get("type") != dlms_type:
        raise AccessFailure("type-unmatched", f"expected {dlms_type}")
    if length is not None and len(value["value"]) != 2 * length:
        raise AccessFailure("type-unmatched", f"expected {dlms_type}({length})")
    return value["value"]


class NetworkControl(StoredObject):
    """ZigBee network control (class 104): the CHF Device Log (0-0:30.3.0.255) and the historic log
    (0-0:30.3.1.255, backup_PAN only)."""

    def get(self, ctx, class_id, obis, attr, selection):
        s = chf_state(ctx.device)
        if obis == NETWORK_CONTROL:
            if attr == 2:
                return {"type": "boolean", "value": joining_open(ctx.device, ctx.now)}
            if attr == 3:
                return {"type": "long-unsigned", "value": s["join"]["timeout"]}
            if attr == 4:
                return {"type": "array", "value": [_active_device(e) for e in s["device_log"]]}
        return super().get(ctx, class_id, obis, attr, selection)

    def set(self, ctx, class_id, obis, attr, value):
        s = chf_state(ctx.device)
        if obis == NETWORK_CONTROL and attr == 2:
            on = _expect(value, "boolean")
            s["join"]["enabled_at"] = ctx.now if on else None
            ctx.device.event("joining", enabled=bool(on), timeout=s["join"]["timeout"])
            return
        if obis == NETWORK_CONTROL and attr == 3:
            s["join"]["timeout"] = int(_expect(value, "long-unsigned"))
            return
        raise AccessFailure("read-write-denied")

    def action(self, ctx, class_id, obis, method, arg):
        if method == 4:
            return backup_pan(ctx.device, ctx.now, historic=obis == HISTORIC_NETWORK_CONTROL)
        if obis != NETWORK_CONTROL:
            raise AccessFailure("object-undefined")
        if method == 1:
            return self.register_device(ctx, arg)
        if method == 2:
            return self.unregister_device(ctx, arg)
        if method == 5:
            return self.restore_pan(ctx, arg)
        return super().action(ctx, class_id, obis, method, arg)

    def register_device(self, ctx, arg) -> None:
        """CCS01: add a device (EUI, key type 1 = install code, 16-byte install code, device type)."""
        fields = _expect(arg, "structure")
        if len(fields) != 4:
            raise AccessFailure("type-unmatched", "register_device takes {ieee_address, key_type, key, type}")
        eui = _expect(fields[0], "octet-string", 8)
        key_type = _expect(fields[1], "enum")
        code = _expect(fields[2], "octet-string", 16)
        dtype = _expect(fields[3], "enum")
        if key_type != 1:
            raise AccessFailure("type-unmatched", "key type must be 1 (install code)")
        s = chf_state(ctx.device)
        if logged(ctx.device, eui) is not None:     # GBCS: the key is discarded, the result is success
            ctx.device.event("register_device", eui=eui, result="already logged")
            return None
        if len(s["device_log"]) >= MAX_DEVICES:
            raise AccessFailure("temporary-failure", "device log full")
        old = next((h for h in s["historic_log"] if h["eui"] == eui), None)
        entry = {"eui": eui, "device_type": dtype, "install_code": code,
                 "hashed_link_key": old["hashed_link_key"] if old else "", "joined": False,
                 "last_communication": None, "successes": 0, "failures": 0}
        if old is not None:
            s["historic_log"].remove(old)
        s["device_log"].append(entry)
        _append(ctx.device, "event", [to_gbcs_seconds(ctx.now), 0x8F12, eui])
        _schedule_cs14(ctx.device, ctx.now, "device added")
        ctx.device.event("register_device", eui=eui, device_type=REGISTER_DEVICE_TYPES.get(dtype, dtype),
                         from_historic=old is not None)
        return None

    def unregister_device(self, ctx, arg) -> None:
        """CCS02: remove a device; it moves to the historic log with its key hash. Removing a device that
        is not logged changes nothing and succeeds (the log is as asked)."""
        eui = _expect(arg, "octet-string", 8)
        s = chf_state(ctx.device)
        entry = logged(ctx.device, eui)
        if entry is None:
            ctx.device.event("unregister_device", eui=eui, result="not logged")
            return None
        s["device_log"].remove(entry)
        s["historic_log"] = [h for h in s["historic_log"] if h["eui"] != eui]
        s["historic_log"].append({"eui": eui, "hashed_link_key": entry.get("hashed_link_key", "")})
        del s["historic_log"][:-MAX_DEVICES]
        _append(ctx.device, "event", [to_gbcs_seconds(ctx.now), 0x8F12, eui])
        _schedule_cs14(ctx.device, ctx.now, "device removed")
        ctx.device.event("unregister_device", eui=eui, result="removed")
        return None

    def restore_pan(self, ctx, arg) -> None:
        """CCS03: form the network with the given extended PAN id and the given devices and key hashes."""
        fields = _expect(arg, "structure")
        if len(fields) != 2:
            raise AccessFailure("type-unmatched", "restore_PAN takes {extended_PAN_ID, devices}")
        pan = _expect(fields[0], "octet-string", 8)
        devices = _expect(fields[1], "array")
        if not 1 <= len(devices) <= MAX_DEVICES:
            raise AccessFailure("type-unmatched", "1..16 devices to restore")
        restored = []
        for d in devices:
            pair = _expect(d, "structure")
            if len(pair) != 2:
                raise AccessFailure("type-unmatched", "device_to_restore is {MAC address, hashed key}")
            eui = _expect(pair[0], "octet-string", 8)
            key = _expect(pair[1], "octet-string")
            if len(key) not in (0, 32):
                raise AccessFailure("type-unmatched", "hashed TC link key is 16 bytes or empty")
            old = logged(ctx.device, eui) or {}
            restored.append({"eui": eui, "device_type": old.get("device_type"), "install_code":
                             old.get("install_code", ""), "hashed_link_key": key, "joined": bool(key),
                             "last_communication": old.get("last_communication"),
                             "successes": old.get("successes", 0), "failures": old.get("failures", 0)})
        s = chf_state(ctx.device)
        s["extended_pan_id"] = pan
        s["device_log"] = restored
        _append(ctx.device, "event", [to_gbcs_seconds(ctx.now), 0x8F12, pan])
        _schedule_cs14(ctx.device, ctx.now, "device log restored")
        ctx.device.event("restore_pan", extended_pan_id=pan, devices=len(restored))
        return None


class Identity(StoredObject):
    """CHF identity Data objects (ECS26i/26n): the EUI, the profile's model and manufacturer."""

    DEFAULTS = {"0-0:96.1.4.255": ("model", "EMU-CHF1"), "0-0:96.1.6.255": ("manufacturer", "GBCE")}

    def get(self, ctx, class_id, obis, attr, selection):
        if attr == 2 and obis == "0-0:96.1.1.255":
            return _os(ctx.device.state["eui"])
        if attr == 2 and obis in self.DEFAULTS and ctx.cosem.get(attr_key(class_id, obis, attr)) is None:
            key, default = self.DEFAULTS[obis]
            v = ctx.device.profile.get(key, default)
            return _os(str(v).encode().hex().upper())
        return super().get(ctx, class_id, obis, attr, selection)


def _bits32(v: int) -> dict:
    return {"type": "bit-string", "value": {"length": 32, "bits": f"{v & 0xFFFFFFFF:08X}"}}


def channel_value(page: int, channel: int) -> dict:
    """A sub-GHz channel as GBCS carries it: bit-string(32), 5-bit page then a 27-bit channel mask."""
    return _bits32((page << 27) | (1 << channel))


def _factory_config() -> dict:
    items = []
    for kind, v in FACTORY_SUB_GHZ:
        items.append(_bits32((v << 27) | 0x07FFFFFF) if kind == "mask" else {"type": kind, "value": v})
    return {"type": "structure", "value": items}


def sub_ghz_config(device) -> dict:
    return chf_state(device)["sub_ghz"]["config"] or _factory_config()


class SubGhz(StoredObject):
    """Sub-GHz Data objects: configuration (DBCH03 get / DBCH04 set → DBCH09), channel scan request (DBCH05
    set → scan → DBCH08, DBCH07 when the channel moves), operating channel (DBCH01)."""

    def get(self, ctx, class_id, obis, attr, selection):
        sg = chf_state(ctx.device)["sub_ghz"]
        if attr == 2 and obis == SUB_GHZ_CHANNEL:
            return channel_value(sg["page"], sg["channel"])
        if attr == 2 and obis == SUB_GHZ_CONFIG:
            return sub_ghz_config(ctx.device)
        return super().get(ctx, class_id, obis, attr, selection)

    def set(self, ctx, class_id, obis, attr, value):
        sg = chf_state(ctx.device)["sub_ghz"]
        if attr == 2 and obis == SUB_GHZ_CONFIG:
            from firmware_emu.core.catalogue import same_shape
            if same_shape(_factory_config(), value) is not None:
                raise AccessFailure("type-unmatched", "not a sub-GHz configuration")
            sg["config"] = value
            ctx.scratch.setdefault("alerts", []).append(
                ctx.device.raise_alert(0x8F2A, message_code=DBCH09, extra=[value]))
            return
        if attr == 2 and obis == SUB_GHZ_SCAN:
            _expect(value, "unsigned")
            if not any(s["kind"] == "chf_scan" for s in ctx.device.state["schedule"]):
                ctx.device.schedule(ctx.now + SCAN_DURATION, "chf_scan", {})
            ctx.cosem[attr_key(class_id, obis, attr)] = value
            ctx.device.event("sub_ghz_scan_requested")
            return
        if obis == SUB_GHZ_CHANNEL:
            raise AccessFailure("read-write-denied")
        super().set(ctx, class_id, obis, attr, value)


def scan_done(device, data: dict, at: float) -> list:
    """A channel scan finished: the outcome (DBCH08, 8F28) and, when a quieter channel was found, the move
    (DBCH07, 8F26, channel log entry). Deterministic: each scan moves to the next channel of the page."""
    sg = chf_state(device)["sub_ghz"]
    sg["scans"] = sg.get("scans", 0) + 1
    old = channel_value(sg["page"], sg["channel"])
    sg["channel"] = (sg["channel"] + 1) % 27
    new = channel_value(sg["page"], sg["channel"])
    _append(device, "channel", [to_gbcs_seconds(at), 0x8F26, new["value"]["bits"] + "00000000"])
    return [device.raise_alert(0x8F28, message_code=DBCH08, extra=[old, new]),
            device.raise_alert(0x8F26, message_code=DBCH07,
                               extra=[{"type": "structure", "value": [new, _os("00")]}])]


# ---------------------------------------------------------------------------------------------- logs

def _rows(name: str):
    def rows(ctx, rng, twin):
        device = ctx.device
        out = [list(r) for r in chf_state(device)["logs"].get(name, [])]
        if name == "event" or name == "channel":
            out = [[t, c, (o + "0" * 16)[:16] if o else ""] for t, c, o in out]
        if name == "security":
            from firmware_emu.core.logs import SECURITY_LOG_CODES
            for entry in device.state.get("security_log", []):
                code = SECURITY_LOG_CODES.get(entry.get("reason"))
                if code is not None:
                    out.append([to_gbcs_seconds(entry.get("t", 0)), int(code)])
            out.sort(key=lambda r: r[0])
            out = out[-LOG_DEPTH["security"]:]
        return [r for r in out if rng is None or rng[0] <= r[0] <= rng[1]]
    return rows


# ---------------------------------------------------------------------------------------------- alerts

def cs14_alert(device, at: float):
    """CS14: the device log as backup_PAN returns it (hashes empty where no TC link key is held yet)."""
    return device.raise_alert(0x8F12, message_code=CS14, extra=[backup_pan(device, at)])


def stimulate(device, message_code: int, alert_code: int | None, now: float, **detail) -> list:
    """Live through what raises one of the CHF's own alerts (module docstring). `detail`: `eui` (the HAN
    device concerned), `version` / `outcome` (CCS08)."""
    s = chf_state(device)
    eui = detail.get("eui")
    if message_code == CS14:
        if eui is not None and logged(device, eui) is None:
            s["device_log"].append({"eui": eui_hex(as_eui(eui)), "device_type": detail.get("device_type", 0),
                                    "install_code": "00" * 16, "hashed_link_key": "", "joined": False,
                                    "last_communication": None, "successes": 0, "failures": 0})
        if eui is not None:
            s["join"].update(enabled_at=now, timeout=max(s["join"]["timeout"], 60))
            han_join(device, eui, now)
            device.unschedule(lambda x: x["kind"] == "chf_cs14")
        return [cs14_alert(device, now)]
    if message_code == DBCH08 or message_code == DBCH07:
        out = scan_done(device, {}, now)
        return [a for a in out if a.message_code == message_code]
    if message_code == DBCH09:
        return [device.raise_alert(0x8F2A, message_code=DBCH09, extra=[sub_ghz_config(device)])]
    if message_code == DBCH11:      # a device could not join: no sub-GHz capacity left
        who = eui or (s["device_log"][0]["eui"] if s["device_log"] else device.state["eui"])
        _append(device, "event", [to_gbcs_seconds(now), 0x8F2D, eui_hex(as_eui(who))])
        return [device.raise_alert(0x8F2D, message_code=DBCH11, extra=[_os(eui_hex(as_eui(who)))])]
    if message_code in (0x0110, 0x0114):    # duty-cycle management: the operating channel concerned
        sg = s["sub_ghz"]
        code = ALERTS[message_code][0]
        _append(device, "event", [to_gbcs_seconds(now), code, ""])
        return [device.raise_alert(code, message_code=message_code, extra=[channel_value(sg["page"], sg["channel"])])]
    if message_code == CCS08:
        return [firmware_transfer_alert(device, now, eui, detail.get("version"), detail.get("outcome", "success"))]
    raise NotImplementedError(f"CHF cannot be stimulated to raise 0x{message_code:04X}")


def firmware_transfer_alert(device, now: float, eui=None, version: str | None = None, outcome: str = "success"):
    """CCS08: the CHF distributed a firmware image to a HAN device (8F8A success, 8F89 failure)."""
    s = chf_state(device)
    if eui is None:
        eui = s["device_log"][0]["eui"] if s["device_log"] else device.state["eui"]
    from firmware_emu.core.credentials import firmware_version
    version = version or firmware_version(device)
    code = 0x8F8A if outcome == "success" else FIRMWARE_TRANSFER_FAILED
    import time as _t
    body = {"alert_code": f"0x{code:04X}", "date_time": _t.strftime("%Y-%m-%dT%H:%M:%SZ", _t.gmtime(int(now))),
            "entity_id": eui_hex(as_eui(eui)), "firmware_version": version, "response_code": outcome}
    content = encode_asn1({"use_case_schema": "CCS08.alert", "value": body})
    return device.raise_alert(code, message_code=CCS08, content=content, critical=True)


def alert_content(device, alert_code, counter, now, extra) -> bytes:
    return dlms_alert_content(alert_code, counter, now, extra)


# ---------------------------------------------------------------------------------------------- wiring

def register(server, catalogue: Catalogue) -> None:
    """The CHF's COSEM objects on its server."""
    from firmware_emu.core.logs import ProfileObject
    server.register(NetworkControl(catalogue), CLASS_NETWORK_CONTROL, NETWORK_CONTROL, HISTORIC_NETWORK_CONTROL)
    server.register(Identity(catalogue), 1, "0-0:96.1.1.255", *Identity.DEFAULTS)
    server.register(SubGhz(catalogue), 1, SUB_GHZ_CONFIG, SUB_GHZ_SCAN, SUB_GHZ_CHANNEL)
    for name, obis in (("event", EVENT_LOG), ("security", SECURITY_LOG), ("channel", SUB_GHZ_CHANNEL_LOG)):
        if catalogue.attribute(7, obis, 2) is not None:
            server.register(ProfileObject(catalogue, obis, _rows(name)), 7, obis)


def setup(cls) -> None:
    """Timers of the CHF: the delayed CS14 and the end of a channel scan."""
    from firmware_emu.core.modular import on_timer
    on_timer(cls, "chf_cs14")(lambda device, data, at: [cs14_alert(device, at)])
    on_timer(cls, "chf_scan")(scan_done)


__all__ += ["NetworkControl", "Identity", "SubGhz", "channel_value", "sub_ghz_config", "scan_done",
            "cs14_alert", "firmware_transfer_alert", "alert_content", "setup"]
