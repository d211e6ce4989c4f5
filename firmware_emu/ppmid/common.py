"""What every HAN-connected device of a premises (PPMID, HCALCS) does alike: join to a meter (CS03C), report its
firmware version (CS08) and its firmware activations (CS09), and its GBZ-form alerts.

Theory of operation
-------------------
Both device types are `ModularDevice`s whose `MODULES` name this module; `setup(cls)` registers the handlers on
the class that loads it (the credential use cases CS02*, CS06 come from `core.credentials`).

CS03C "Method C Join" (the ACB on behalf of the supplier, signed): the device learns the meter it may talk to,
with the meter's KA certificate, which later keys the device-to-device MACs (PCS01/PCS02)::

    command ──method != C, or meter type not joinable by this device type──▶ invalid_join_method_and_role
       │ no certificate, or not a KA device certificate ─────────────────────▶ invalid_or_missing_certificate
       │ injected fault "CS03C" (any join response code) ───────────────────▶ that code
       └ device log (core.credentials.join_device) + state["meters"][EUI] ──▶ success / log full / incompatible

The certificate's own EUI is not checked against `other_device`: RTDS joins 00DB123456789094 with the
certificate of 00DB1234567890A1 and expects success (GBCS leaves that check to the CHF's CBKE).

CS08 "Read PPMID/HCALCS Firmware Version": {firmware_version, success} from state (`credentials.firmware_version`:
the activated image, else the profile's, else the CPL factory version); an injected fault "CS08" answers
{00000000, read_failure}.

CS09 (message code 0x012B, alert 0x8F8B, critical, to the ACB): raised when the device activates an image it
received through the comms hub (`activate_image`). The image is the CPL's next one after the running version
unless given; a model the CPL does not list takes the version given, else the running one + 1 (the shipped
`configs/cpl.toml` has no PPMID/HCALCS product yet). A failed activation keeps the running version and reports
`failure`::

    running v ──activate_image(hash|version)──▶ on CPL for the model? ──yes──▶ running v' ─▶ CS09 {v', success}
                                                     └───────no / fault "CS09"──▶ running v ─▶ CS09 {v, failure}

Other alerts of these devices (security rejections 0x8F53, 0x8F1E...) use the GBZ alert form
`01 09 00 | code | UTC since 2000`: PPMID and HCALCS are ZigBee devices.
"""
from __future__ import annotations

import calendar
import logging
import time

from cryptography import x509

from protocols.asn1.payloads import decode_asn1, encode_asn1
from protocols.errors import DecodeError
from protocols.security.eui import eui_hex
from protocols.security.keystore import Role
from protocols.zigbee.gbz import EPOCH_2000, encode_gbz

from firmware_emu.core import credentials
from firmware_emu.core.cpl import CplError, FirmwareImage, cpl_for_profile
from firmware_emu.core.device import Reply
from firmware_emu.core.modular import handles

log = logging.getLogger(__name__)

__all__ = ["setup", "JOINABLE", "CS09_MESSAGE_CODE", "FIRMWARE_ACTIVATED_ALERT", "meters", "meter", "join_local", "prepare", 
           "activate_image", "gbz_alert_content", "iso", "from_iso"]

#: Meter types each HAN device type may be joined to by CS03C.
JOINABLE = {"PPMID": frozenset({"ESME", "GSME"}), "HCALCS": frozenset({"ESME"})}
CS08_MESSAGE_CODE, CS09_MESSAGE_CODE = 0x0129, 0x012B
FIRMWARE_ACTIVATED_ALERT = 0x8F8B
_JOIN_CODES = frozenset({"invalid_message_code_for_join_method_and_role", "invalid_join_method_and_role",
                         "incompatible_with_existing_entry", "device_log_full", "write_failure",
                         "invalid_or_missing_certificate"})


def iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(t)))


def from_iso(text: str) -> float:
    return float(calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ")))


def meters(device) -> dict:
    """The meters this device is joined to: {EUI: {"device_type", "ka_certificate" (DER hex), "joined_at"}}."""
    return device.state.setdefault("meters", {})


def meter(device, device_type: str | None = None, eui=None) -> tuple[str, dict] | None:
    """(EUI, entry) of a joined meter: the one named, else the first of `device_type`; None when not joined."""
    table = meters(device)
    if eui is not None:
        key = eui_hex(eui)
        return (key, table[key]) if key in table else None
    for key, entry in sorted(table.items()):
        if device_type is None or entry["device_type"] == device_type:
            return key, entry
    return None


def _decode(cmd):
    payload = decode_asn1(cmd.content, base=cmd.content_offset, cra_flag="command", message_code=cmd.code)
    if payload.get("use_case_schema") is None:
        raise DecodeError("payload does not have the shape of its use case", "asn1", cmd.content_offset)
    return payload["value"]


def _ka_certificate(value: dict) -> bytes | None:
    """The DER of the command's meter certificate when it is a key-agreement device certificate, else None."""
    cert = value.get("other_device_certificate")
    if not cert or not cert.get("der"):
        return None
    der = bytes.fromhex(cert["der"])
    try:
        ku = x509.load_der_x509_certificate(der).extensions.get_extension_for_class(x509.KeyUsage).value
    except (ValueError, x509.ExtensionNotFound):
        return None
    return der if ku.key_agreement and not ku.digital_signature else None


def join_meter(device, cmd, now) -> Reply:
    """CS03C: join this HAN device to a meter (module docstring)."""
    value = _decode(cmd)
    other, dtype = eui_hex(value["other_device"]), value["device_type"]
    der = _ka_certificate(value)
    fault = device.faults.lookup("CS03C") or device.faults.lookup(cmd.entry.name)
    if value["method"] != 3 or dtype not in JOINABLE.get(device.DEVICE_TYPE, ()):
        code = "invalid_join_method_and_role"
    elif der is None:
        code = "invalid_or_missing_certificate"
    elif fault is not None:
        code = fault if fault in _JOIN_CODES else "write_failure"
    else:
        code = credentials.join_device(device, other, dtype)
        if code == "success":
            meters(device)[other] = {"device_type": dtype, "ka_certificate": der.hex().upper(), "joined_at": now}
    device.event("join", other=other, device_type=dtype, result=code)
    return Reply(encode_asn1({"use_case_schema": "CS03C.response", "value": {"response_code": code}}))


def join_local(device, other, device_type: str, ka_certificate: bytes | None, now: float) -> str:
    """An installer's join (a test or fleet precondition, `prepare("joined_to_meter", ...)`): as CS03C."""
    other = eui_hex(other)
    code = credentials.join_device(device, other, device_type)
    if code == "success":
        meters(device)[other] = {"device_type": device_type, "joined_at": now,
                                 "ka_certificate": ka_certificate.hex().upper() if ka_certificate else None}
    return code


def prepare(device, condition: str, detail: dict) -> bool:
    """The HAN-device preconditions: "joined_to_meter" (meter=EUI, device_type, ka_certificate=DER)."""
    if condition != "joined_to_meter":
        return False
    join_local(device, detail["meter"], detail.get("device_type", "ESME"), detail.get("ka_certificate"), device.now)
    return True


def read_firmware_version(device, cmd, now) -> Reply:
    """CS08: the running firmware version, or {00000000, read_failure} under an injected fault."""
    _decode(cmd)
    if device.faults.lookup("CS08") is not None:
        value = {"firmware_version": "00000000", "response_code": "read_failure"}
    else:
        value = {"firmware_version": credentials.firmware_version(device), "response_code": "success"}
    device.event("firmware_version_read", **value)
    return Reply(encode_asn1({"use_case_schema": "CS08.response", "value": value}))


def _product(device):
    try:
        return cpl_for_profile(device.profile, device.DEVICE_TYPE)[1]
    except CplError as e:
        device.event("cpl_unavailable", detail=str(e))
        return None


def activate_image(device, now: float, *, image_hash: str | None = None, version: str | None = None):
    """The device activates an image the comms hub distributed to it; raises CS09 (module docstring).
    Returns the list with the one alert."""
    device.now = now
    current = credentials.firmware_version(device)
    product = _product(device)
    images = list(product.firmware) if product is not None else []
    if image_hash is not None:
        image = next((i for i in images if i.image_hash == str(image_hash).upper()), None)
    elif version is not None:
        image = next((i for i in images if i.version == str(version).upper()), None)
    else:   # the next certified image after the running one
        later = [i for i in images if int(i.version, 16) > int(current, 16)]
        image = min(later, key=lambda i: int(i.version, 16)) if later else None
    if product is None and image_hash is None:   # no CPL entry for the model: the hub's image is taken as is
        image = FirmwareImage(str(version or f"{(int(current, 16) + 1) & 0xFFFFFFFF:08X}").upper(), "")
    ok = image is not None and device.faults.lookup("CS09") is None
    if ok:
        device.state["firmware"] = {"version": image.version, "image_hash": image.image_hash}
        device.firmware_activated(image.version)
        current = image.version
    device.event("firmware_activation", version=current, result="success" if ok else "failure")
    body = {"alert_code": f"0x{FIRMWARE_ACTIVATED_ALERT:04X}", "date_time": iso(now), "firmware_version": current,
            "activate_image": "success" if ok else "failure"}
    content = encode_asn1({"use_case_schema": "CS09.alert", "value": body})
    acb = device.anchors.get(Role.ACCESS_CONTROL_BROKER)
    return [device.raise_alert(FIRMWARE_ACTIVATED_ALERT, message_code=CS09_MESSAGE_CODE, content=content,
                               critical=True, recipient=acb)]


def gbz_alert_content(alert_code: int | None, now: float) -> bytes:
    """The GBZ alert payload without components: `01 09 00 | code | UTC seconds since 2000`."""
    return encode_gbz({"alert_code": f"0x{(alert_code or 0):04X}", "timestamp": max(0, int(now) - EPOCH_2000),
                       "components": []}, cra_flag="alert")


def setup(cls) -> None:
    """Register the shared HAN-device use cases on `cls` (a PPMID or HCALCS class)."""
    handles(cls, "CS03C")(join_meter)
    handles(cls, "CS08")(read_firmware_version)
