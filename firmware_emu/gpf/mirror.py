"""The GPF's mirror of the gas meter: what the sleepy GSME last pushed when it woke, and how reliable an answer
built from it is.

Theory of operation
-------------------
The GSME sleeps; every time it wakes (about every half hour) it pushes its metering data (ZSE Metering cluster
0x0702: registers, unit, multiplier, divisor, supply status...) to the GPF, which keeps the last value of each
attribute with the time the GSME reported it (`update_mirror(device, attrs, at)`, what the premises calls
when the GSME's data arrives over the HAN). Remote parties read the gas meter *from the GPF*: GCS13a/b/c,
GCS14, GCS60a addressed to the GPF are answered at once, from the mirror for the mirrored attributes and from
the GPF's own calculations (price, prepayment, bill to date, logs: the GSME's cluster implementations run on
the GPF's state) for the rest.

State `state["gpf"]`, JSON only::

    {"clock_reliable": bool,             # the hub clock is synchronised (it is, once the WAN gave the time)
     "freshness": seconds,               # how old mirrored data may be for the GPF to vouch for it
     "mirror": {"at": t | None,          # when the GSME last pushed (its own clock)
                "gsme_clock_reliable": bool,
                "attributes": {"0702/0000": {"type", "value", "at"}, ...}}}

Reliability of a read (the DLMS clock status of the response date-time, brief §1.3 / pitfall 12)::

    mirror empty ─────────────────────────────────────────────▶ UNRELIABLE    02, date-time = now
    GPF clock reliable and now − mirror.at ≤ freshness ──────────▶ RELIABLE_GPF  00, date-time = now
    otherwise, the GSME's clock was reliable when it pushed ─────▶ RELIABLE_GSME 04 ("different clock base"),
                                                                   date-time = mirror.at (the GSME's time)
    otherwise ───────────────────────────────────────────────────▶ UNRELIABLE    02, date-time = now

`MirrorServer` is the GSME's `ZclServer` with one change: a Read Attributes record of a mirrored attribute is
answered from the mirror (an injected attribute fault still wins).
"""
from __future__ import annotations

from protocols.zigbee.zcl import TYPE_BY_NAME

from firmware_emu.core.zcl import Status, ZclContext, ZclServer, attr_key, zcl_attr_target

__all__ = ["MirrorServer", "update_mirror", "mirrored", "reliability", "gsme_report", "mirrorable",
           "initial_gpf_state", "RELIABLE_GPF", "RELIABLE_GSME", "UNRELIABLE", "NOT_SPECIFIED",
           "DEFAULT_FRESHNESS", "METERING"]

METERING = 0x0702
#: Attributes of the Metering cluster the GPF calculates itself (a cost, from its tariff), never mirrored.
GPF_CALCULATED = frozenset({(METERING, 0x0A00)})   # BillToDateDelivered
#: DLMS clock status bytes (brief §1.3): answered by the GPF on its reliable clock; from the GSME's data on the
#: GSME's clock ("different clock base"); doubtful; not specified (responses that are not meter reads).
RELIABLE_GPF, RELIABLE_GSME, UNRELIABLE, NOT_SPECIFIED = 0x00, 0x04, 0x02, 0xFF
#: The GSME pushes every half hour; data older than two pushes is no longer the GPF's to vouch for.
DEFAULT_FRESHNESS = 3600.0


def initial_gpf_state(profile: dict) -> dict:
    return {"clock_reliable": bool(profile.get("clock_reliable", True)),
            "freshness": float(profile.get("mirror_freshness", DEFAULT_FRESHNESS)),
            "mirror": {"at": None, "gsme_clock_reliable": False, "attributes": {}}}


def _gpf(device) -> dict:
    return device.state["gpf"]


def _key(k) -> tuple[int, int]:
    if isinstance(k, str):
        c, a = k.split("/")
        return int(c, 16), int(a, 16)
    c, a = k
    return int(c), int(a)


def mirrorable(catalogue) -> list[tuple[int, int]]:
    """The attributes the GSME pushes: its Metering cluster attributes the appendix reads through the GPF."""
    return [k for k in catalogue.attributes() if k[0] == METERING and k not in GPF_CALCULATED]


def update_mirror(device, attrs: dict, at: float, *, gsme_clock_reliable: bool = True) -> None:
    """The GSME's data arrived over the HAN: `attrs` maps "0702/0000" or (cluster, attribute) to a value (typed
    as the GPF catalogue says) or {"type", "value"}; `at` is when the GSME took it, on its own clock."""
    catalogue = type(device).server().catalogue
    m = _gpf(device)["mirror"]
    for k, v in attrs.items():
        cluster, attr = _key(k)
        if isinstance(v, dict) and "type" in v:
            typ, value = v["type"], v["value"]
        else:
            entry = catalogue.attribute(cluster, attr)
            if entry is None:
                raise KeyError(f"no ZCL type known for {attr_key(cluster, attr)}; pass {{'type', 'value'}}")
            typ, value = entry["type"], v
        if typ not in TYPE_BY_NAME:
            raise KeyError(f"unknown ZCL type {typ!r}")
        m["attributes"][attr_key(cluster, attr)] = {"type": typ, "value": value, "at": at}
    m["at"] = at if m["at"] is None else max(m["at"], at)
    m["gsme_clock_reliable"] = bool(gsme_clock_reliable)
    device.event("mirror_updated", attributes=len(attrs), at=at)


def mirrored(device, cluster: int, attribute_id: int) -> dict | None:
    return _gpf(device)["mirror"]["attributes"].get(attr_key(cluster, attribute_id))


def reliability(device, now: float) -> tuple[int, float]:
    """(clock status, time) of a meter read answered now (module docstring)."""
    g = _gpf(device)
    m = g["mirror"]
    if m["at"] is None:
        return UNRELIABLE, now
    if g["clock_reliable"] and now - m["at"] <= g["freshness"]:
        return RELIABLE_GPF, now
    if m["gsme_clock_reliable"]:
        return RELIABLE_GSME, m["at"]
    return UNRELIABLE, now


def gsme_report(device, at: float) -> dict:
    """What the paired GSME pushes when it wakes at `at`: its metering attributes, evaluated with the GSME's
    cluster implementations over the same seeded gas model (a premises feeds the real GSME's data instead)."""
    server = type(device).server()
    ctx = ZclContext(device, at)
    out = {}
    for cluster, attr in mirrorable(server.catalogue):
        rec = ZclServer.read_attribute(server, ctx, cluster, attr)
        if rec["status"] == Status.SUCCESS:
            out[attr_key(cluster, attr)] = {"type": rec["type"], "value": rec["value"]}
    return out


class MirrorServer(ZclServer):
    """The GSME's ZCL server, reading mirrored attributes from the GSME's last push (module docstring)."""

    def read_attribute(self, ctx: ZclContext, cluster: int, attribute_id: int) -> dict:
        if ctx.device.faults.lookup(zcl_attr_target(cluster, attribute_id), executing=ctx.executing):
            return super().read_attribute(ctx, cluster, attribute_id)
        m = mirrored(ctx.device, cluster, attribute_id) if "gpf" in ctx.state else None
        if m is None:
            return super().read_attribute(ctx, cluster, attribute_id)
        ctx.scratch.setdefault("mirrored", []).append(attr_key(cluster, attribute_id))
        return {"attribute_id": attribute_id, "status": Status.SUCCESS, "type": m["type"], "value": m["value"]}
