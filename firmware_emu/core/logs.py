"""Logs and profiles of DLMS devices (ESME, CHF): Profile generic (class 7) buffers served from models and state.

Theory of operation
-------------------
A Profile generic buffer (attribute 2) is never stored whole. Each buffer is a *source* that yields rows (one
untagged value list per entry, in the order of the appendix's entry structure) for a closed range of GBCS
timestamps (seconds since 2000-01-01):

* **computed** buffers come from `firmware_emu.esme.metering` (half-hour and daily profiles, daily/billing read
  logs, the voltage profile): a row exists for every capture time `k * period` in the range that is not in the
  future and not older than the buffer's depth (the appendix's entry count), so a range read returns exactly
  the capture times inside it;
* **stored** buffers (event, security, power, boost, auxiliary-controller logs, prepayment credit and debt
  logs, the change-of-tariff billing log) are lists kept in `state["logs"][name]`, appended with
  `append_log(device, name, row)` by whichever module lives through the event (the depth bounds the list,
  oldest rows drop first). The security log also shows the core's `state["security_log"]` (commands the
  GBCS checks refused), mapped to the GBCS alert code that reports each refusal.

State of one stored log::

    empty --append_log--> holding rows (<= depth, oldest dropped) --clear (method 1, ECS15a/15c)--> empty

Range selection: selector 1 (range_descriptor {restricting object, from, to, selected columns}) with from/to
as uint32 GBCS seconds or DLMS date-times, and the 2-field {from, to} date-time form the Data protection
argument of ECS20b/20c/21b/22b/66 carries. A get without selection returns the whole buffer. The result is
a compact-array whose type description is the appendix's entry structure (twin-element members only on a
twin ESME).
"""
from __future__ import annotations

import logging
from typing import Callable, Iterable

from firmware_emu.core.alerts import AlertCode
from firmware_emu.core.catalogue import Catalogue, default_value
from firmware_emu.core.clock import from_gbcs_seconds, parse_dlms_datetime, to_gbcs_seconds
from firmware_emu.core.cosem import AccessContext, AccessFailure, StoredObject

log = logging.getLogger(__name__)

__all__ = ["LOGS", "append_log", "log_rows", "selection_range", "ProfileObject", "SECURITY_LOG_CODES",
           "is_twin"]

#: Stored logs: state name -> (class 7 OBIS, depth). Row layouts follow the appendix entry structures:
#: event [t, log code, other-information hex (8 bytes or "")], security [t, log code], power [t, log code,
#: uint32], boost [start, end], auxiliary [t, switch and action, outcome enum, HAN command id],
#: prepayment_credits / debt_repayments [t, value], billing_on_change: the whole entry of 0-0:98.1.2.255.
LOGS: dict[str, tuple[str, int]] = {
    "event": ("0-0:99.98.0.255", 100),
    "security": ("0-0:99.98.1.255", 100),
    "power": ("0-0:99.98.4.255", 100),
    "boost": ("0-0:99.98.20.255", 25),
    "auxiliary": ("0-17:99.98.2.255", 100),
    "debt_repayments": ("0-0:98.1.4.255", 10),
    "prepayment_credits": ("0-0:98.1.5.255", 5),
    "billing_on_change": ("0-0:98.1.2.255", 12),
}

#: Why the core refused a command (`state["security_log"][i]["reason"]`) -> the log code GBCS records.
SECURITY_LOG_CODES = {
    "unsupported_use_case": AlertCode.COMMAND_INTEGRITY_CHECK_FAILED,
    "unknown_remote_party": AlertCode.FAILED_AUTHENTICATION_OR_AUTHORISATION,
    "role_not_allowed": AlertCode.SOURCE_HAS_NO_AUTHORITY,
    "bad_mac": AlertCode.FAILED_AUTHENTICATION_OR_AUTHORISATION,
    "missing_mac": AlertCode.FAILED_AUTHENTICATION_OR_AUTHORISATION,
    "bad_signature": AlertCode.FAILED_AUTHENTICATION_OR_AUTHORISATION,
    "missing_signature": AlertCode.FAILED_AUTHENTICATION_OR_AUTHORISATION,
    "replayed_counter": AlertCode.FAILED_AUTHENTICATION_OR_AUTHORISATION,
}


def is_twin(device) -> bool:
    """A twin-element ESME (profile `twin`): the appendix's [[TWIN_ELEMENT_ESME_ONLY]] members exist."""
    return bool(device.profile.get("twin"))


def _logs(device) -> dict:
    return device.state.setdefault("logs", {})


def append_log(device, name: str, row: list) -> None:
    """Append one entry (untagged values, first the GBCS timestamp) to a stored log; the depth bounds it."""
    depth = LOGS[name][1]
    rows = _logs(device).setdefault(name, [])
    rows.append(list(row))
    del rows[:-depth]


def log_rows(device, name: str) -> list[list]:
    """The stored rows of a log, oldest first (the security log merged with the core's refusals)."""
    rows = [list(r) for r in _logs(device).get(name, [])]
    if name == "security":
        cleared = _logs(device).get("security_cleared_at", -1)
        for entry in device.state.get("security_log", []):
            code = SECURITY_LOG_CODES.get(entry.get("reason"))
            t = to_gbcs_seconds(entry.get("t", 0))
            if code is not None and t > cleared:
                rows.append([t, int(code)])
        rows.sort(key=lambda r: r[0])
        rows = rows[-LOGS[name][1]:]
    return rows


def clear_log(device, name: str, now: float) -> None:
    logs = _logs(device)
    logs[name] = []
    if name == "security":
        logs["security_cleared_at"] = to_gbcs_seconds(now)


# ---------------------------------------------------------------------------------------------- selection

def _seconds(d: dict) -> int:
    """A range bound: uint32 GBCS seconds, or a DLMS date-time octet-string."""
    if d.get("type") == "octet-string":
        t = parse_dlms_datetime(bytes.fromhex(d["value"]))
        if not isinstance(t, float):
            raise AccessFailure("type-unmatched", "range bound is not a date-time")
        return to_gbcs_seconds(t)
    if d.get("type") in ("double-long-unsigned", "double-long", "long64-unsigned"):
        return int(d["value"])
    raise AccessFailure("type-unmatched", f"range bound of type {d.get('type')}")


def selection_range(selection: dict | None) -> tuple[int, int] | None:
    """(from, to) GBCS seconds, inclusive, of a selective access; None: the whole buffer."""
    if not selection:
        return None
    if selection.get("selector") != 1:
        raise AccessFailure("object-unavailable", f"selector {selection.get('selector')} not supported")
    params = selection.get("parameters") or {}
    fields = params.get("value") if params.get("type") == "structure" else None
    try:
        if fields and len(fields) == 4:         # range_descriptor
            return _seconds(fields[1]), _seconds(fields[2])
        if fields and len(fields) == 2:         # {from, to} (Data protection argument)
            return _seconds(fields[0]), _seconds(fields[1])
    except (ValueError, KeyError, TypeError) as e:
        raise AccessFailure("type-unmatched", f"bad range: {e}") from None
    raise AccessFailure("type-unmatched", "range descriptor is not a structure of 4 (or 2) fields")


def capture_times(rng: tuple[int, int] | None, now: float, period: int, depth: int,
                  offset: int = 0) -> range:
    """Capture times `k * period + offset` (GBCS seconds) inside `rng` that exist at `now`: not in the future,
    not older than `depth` captures."""
    last = (to_gbcs_seconds(now) - offset) // period * period + offset
    first = last - (depth - 1) * period
    lo, hi = (first, last) if rng is None else (max(first, rng[0]), min(last, rng[1]))
    if hi < lo:
        return range(0)
    start = -(-(lo - offset) // period) * period + offset
    return range(start, hi + 1, period)


# ---------------------------------------------------------------------------------------------- the object

Rows = Callable[[AccessContext, "tuple[int, int] | None", bool], Iterable[list]]


class ProfileObject(StoredObject):
    """One Profile generic object whose buffer comes from `rows(ctx, range, twin)`; other attributes (capture
    objects, capture period, entries...) are the stored / appendix-typed ones. Method 1 (reset / clear)
    empties a stored log."""

    def __init__(self, catalogue: Catalogue, obis: str, rows: Rows, log_name: str | None = None):
        super().__init__(catalogue)
        self.obis = obis
        self.rows = rows
        self.log_name = log_name
        entry = catalogue.attribute(7, obis, 2)
        self._types = {tw: default_value(entry, twin=tw)["value"]["type_description"] for tw in (False, True)} \
            if entry is not None else None

    def get(self, ctx, class_id, obis, attr, selection):
        if attr != 2:
            return super().get(ctx, class_id, obis, attr, selection)
        if self._types is None:
            raise AccessFailure("object-undefined")
        twin = is_twin(ctx.device)
        rng = selection_range(selection)
        try:
            values = [list(r) for r in self.rows(ctx, rng, twin)]
        except ValueError as e:
            log.info("profile %s: %s", obis, e)
            raise AccessFailure("temporary-failure", str(e)) from None
        return {"type": "compact-array", "value": {"type_description": self._types[twin], "values": values}}

    def action(self, ctx, class_id, obis, method, arg):
        if method == 1 and self.log_name is not None:
            clear_log(ctx.device, self.log_name, ctx.now)
            if self.log_name == "event":
                append_log(ctx.device, "security", [to_gbcs_seconds(ctx.now), int(AlertCode.EVENT_LOG_CLEARED)])
            return None
        return super().action(ctx, class_id, obis, method, arg)


def stored_rows(name: str) -> Rows:
    """Rows of a stored log inside the range."""
    def rows(ctx: AccessContext, rng, twin):
        for r in log_rows(ctx.device, name):
            if rng is None or rng[0] <= r[0] <= rng[1]:
                yield r
    return rows


def register(server, catalogue: Catalogue) -> None:
    """The stored logs (computed profiles are registered by `metering`)."""
    for name, (obis, _depth) in LOGS.items():
        if catalogue.attribute(7, obis, 2) is not None:
            server.register(ProfileObject(catalogue, obis, stored_rows(name), name), 7, obis)


def gbcs_now(ctx: AccessContext) -> int:
    return to_gbcs_seconds(ctx.now)


def unix(t_gbcs: int) -> float:
    return from_gbcs_seconds(t_gbcs)

