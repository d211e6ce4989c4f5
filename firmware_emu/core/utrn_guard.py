"""UTRN verification shared by every meter type (GBCS 14): the ESME's Token Gateway (CS01a) and the GSME's ZSE
Consumer Top Up (CS01b, PCS01) run the same checks; only how a refusal is reported differs per device type.

Theory of operation
-------------------
`check_utrn(device, utrn, counters, ...)` is pure with respect to the device: it reads the device's keys and
anchors and returns a `UtrnVerdict`; the caller records the accepted counter (`accept_counter`) and credits
the amount. Checks, in GBCS order, each with the alert code a refusal carries:

    malformed / check digit ──────────────────────────────▶ 0x8F63 "UTRN not authentic"
    counter bits resolved against the UTRN Counter Cache (GBCS Table 27)
    tag not authentic for this device ───────────────────▶ 0x8F64 when it verifies for another device this
                                                            meter's keystore knows (an emulator aid: a real
                                                            meter only sees "not authentic"), else 0x8F63
    counter already in the cache / below a full cache ───▶ 0x8F51 "duplicate UTRN"
    value above the maximum credit per UTRN ─────────────▶ 0x8F5B
    balance would exceed the maximum meter balance ──────▶ 0x8F47
    ──▶ accepted: (counter, amount in millipence)

The UTRN secret is the supplier's prepayment KA key with the device KA key, from whichever private key is at
hand (the device's own with an own PKI; the supplier's with RTDS keys). `make_utrn` is the supplier's side of
the same computation: what a device's simulated past (`Gsme.prepare("lived")`) uses to top itself up.
"""
from __future__ import annotations

from dataclasses import dataclass

from protocols.security import ecc
from protocols.security.counters import CounterCheck, UtrnCounterCache
from protocols.security.errors import UtrnError
from protocols.security.keystore import Role
from protocols.security.utrn import ValueClass, parse_utrn, utrn_from_secret, verify_utrn_with_secret

from firmware_emu.core.alerts import AlertCode

__all__ = ["UtrnVerdict", "check_utrn", "accept_counter", "utrn_secret", "make_utrn", "PER_PENNY"]

PER_PENNY = 1000      # amounts are millipence (1/100000 of the currency unit)


@dataclass
class UtrnVerdict:
    """The outcome of one UTRN check: `reason` is "accepted" or why it was refused."""

    accepted: bool
    reason: str
    alert_code: int | None = None
    counter: int | None = None
    amount: int = 0
    detail: str = ""


def supplier_of(device) -> bytes | None:
    return device.anchors.get(Role.SUPPLIER)


def utrn_secret(device, supplier: bytes, device_eui: bytes) -> bytes | None:
    """Z between the supplier's prepayment KA key and `device_eui`'s KA key, from whichever side we can."""
    keys = device.keys
    peers = keys.peers
    if device_eui == device.eui and keys.ka_private is not None:
        public = peers.pp_ka_public(supplier)
        if public is not None:
            return ecc.ecdh_shared_secret(keys.ka_private, public)
    return peers.shared_secret(supplier, device_eui, usage="pp-ka")


def _verifies_for_other_device(device, utrn: str, supplier: bytes, counter: int) -> bool:
    """Emulator aid for 0x8F64: does the UTRN verify for another device whose keys the keystore holds?"""
    peers = device.keys.peers
    for n, eui in enumerate(sorted(peers.euis())):
        if n > 512:
            break
        if eui == device.eui or not peers.is_device(eui) or peers.ka_public(eui) is None:
            continue
        try:
            z = peers.shared_secret(supplier, eui, usage="pp-ka")
        except Exception:   # noqa: BLE001 - a keystore entry we cannot use is simply not a candidate
            continue
        if z is not None and verify_utrn_with_secret(utrn, z, supplier, eui, counter):
            return True
    return False


def check_utrn(device, utrn: str, counters, *, max_credit_per_utrn: int, balance: int,
               max_meter_balance: int) -> UtrnVerdict:
    """Run the UTRN checks (module docstring); changes nothing."""
    try:
        parsed = parse_utrn(utrn)
    except UtrnError as e:
        return UtrnVerdict(False, "malformed", AlertCode.UTRN_NOT_AUTHENTIC, detail=str(e))
    supplier = supplier_of(device)
    cache = UtrnCounterCache(tuple(counters))
    counter = cache.counter_from_bits(parsed.counter_bits)
    z = utrn_secret(device, supplier, device.eui) if supplier is not None else None
    if z is None or not verify_utrn_with_secret(utrn, z, supplier, device.eui, counter):
        other = supplier is not None and _verifies_for_other_device(device, utrn, supplier, counter)
        return UtrnVerdict(False, "other_device" if other else "not_authentic",
                           AlertCode.UTRN_NOT_FOR_THIS_DEVICE if other else AlertCode.UTRN_NOT_AUTHENTIC,
                           counter=counter)
    verdict = cache.check(counter)
    if verdict is not CounterCheck.ACCEPT:
        return UtrnVerdict(False, verdict.value, AlertCode.DUPLICATE_UTRN, counter=counter)
    amount = parsed.value * (100 if parsed.value_class == ValueClass.POUNDS else 1) * PER_PENNY
    if amount > max_credit_per_utrn:
        return UtrnVerdict(False, "exceeds_max_credit", AlertCode.UTRN_EXCEEDS_MAX_CREDIT, counter, amount)
    if balance + amount > max_meter_balance:
        return UtrnVerdict(False, "exceeds_max_meter_balance", AlertCode.CREDIT_WOULD_EXCEED_MAX_METER_BALANCE,
                           counter, amount)
    return UtrnVerdict(True, "accepted", None, counter, amount)


def accept_counter(counters, counter: int) -> list[int]:
    """The UTRN Counter Cache after accepting `counter` (JSON list, for the persisted state)."""
    return list(UtrnCounterCache(tuple(counters)).accept(counter).counters)


def make_utrn(device, counter: int, pounds: int) -> str | None:
    """A UTRN for this device from its supplier (the supplier's side of the computation), or None when no
    key pair allows it."""
    supplier = supplier_of(device)
    z = utrn_secret(device, supplier, device.eui) if supplier is not None else None
    if z is None:
        return None
    return utrn_from_secret(z, supplier, device.eui, counter, pounds, ValueClass.POUNDS)
