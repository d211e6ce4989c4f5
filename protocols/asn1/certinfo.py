"""Informational summary of a GBCS (SMKI) X.509 certificate or PKCS#10 request, read from its DER tree.

Only for people reading decoded payloads: the certificate bytes themselves stay whole (hex) and encoding
ignores everything here. Best effort: anything unexpected just leaves a key out.

    {"serial_number": "4FBC...", "issuer": "OU=07, CN=Z1", "subject": "CN=GITTESTSUPPLIER, OU=02, ...",
     "not_before": "2015-10-30T00:00:00Z", "not_after": "2025-10-29T23:59:59Z", "eui": "90B3D51F30010000",
     "key_usage": ["digital_signature"]}

SMKI carries the entity's EUI-64 either in the subject's x500UniqueIdentifier (organisation certificates) or
in subjectAltName hardwareModuleName (device certificates and requests).
"""
from __future__ import annotations

from protocols.asn1 import der
from protocols.asn1.der import CONTEXT, T_BIT_STRING, T_OCTET_STRING, T_OID, T_SEQUENCE, T_SET, UNIVERSAL, Tlv

__all__ = ["certificate_info", "request_info", "KEY_USAGE_BITS"]

KEY_USAGE_BITS = {0: "digital_signature", 1: "non_repudiation", 2: "key_encipherment", 3: "data_encipherment",
                  4: "key_agreement", 5: "key_cert_sign", 6: "crl_sign", 7: "encipher_only", 8: "decipher_only"}

_ATTR_NAMES = {"2.5.4.3": "CN", "2.5.4.6": "C", "2.5.4.7": "L", "2.5.4.8": "ST", "2.5.4.10": "O",
               "2.5.4.11": "OU", "2.5.4.5": "serialNumber", "2.5.4.45": "x500UniqueIdentifier"}
_OID_UNIQUE_ID = "2.5.4.45"
_OID_KEY_USAGE = "2.5.29.15"
_OID_SAN = "2.5.29.17"
_OID_HW_MODULE_NAME = "1.3.6.1.5.5.7.8.4"
_OID_EXTENSION_REQUEST = "1.2.840.113549.1.9.14"


def _is(node: Tlv, number: int, cls: int = der.UNIVERSAL) -> bool:
    return node.cls == cls and node.number == number


def _oid(node: Tlv) -> str | None:
    return der.oid_from_content(node.value) if _is(node, T_OID) and not node.constructed else None


def _text(node: Tlv) -> str:
    if node.constructed:
        return ""
    if _is(node, T_BIT_STRING):
        return node.value[1:].hex().upper()
    kind = der.UNIVERSAL_TYPES.get(node.number, (None, None))[1] if node.cls == UNIVERSAL else None
    if kind in ("ascii", "utf8"):
        return node.value.decode("utf-8")
    return node.value.hex().upper()


def _name(node: Tlv, info: dict) -> str:
    """RFC 4514-like text of a Name (RDNs in encoded order); notes the EUI from x500UniqueIdentifier."""
    parts = []
    for rdn in node.value:
        if not _is(rdn, T_SET):
            continue
        for atv in rdn.value:
            if not (_is(atv, T_SEQUENCE) and len(atv.value) == 2):
                continue
            oid = _oid(atv.value[0])
            value = _text(atv.value[1])
            if oid == _OID_UNIQUE_ID and len(value) == 16:
                info.setdefault("eui", value)
            parts.append(f"{_ATTR_NAMES.get(oid, oid)}={value}")
    return ", ".join(parts)


def _time(node: Tlv) -> str | None:
    text = node.value.decode("ascii")
    if node.number == der.T_UTCTIME and len(text) == 13:
        year = int(text[:2])
        text = ("19" if year >= 50 else "20") + text
    if len(text) != 15 or not text[:14].isdigit() or text[14] != "Z":
        return None
    return f"{text[0:4]}-{text[4:6]}-{text[6:8]}T{text[8:10]}:{text[10:12]}:{text[12:14]}Z"


def _extensions(exts: list[Tlv], info: dict) -> None:
    for ext in exts:
        if not (_is(ext, T_SEQUENCE) and ext.value):
            continue
        oid = _oid(ext.value[0])
        inner = ext.value[-1]
        if not _is(inner, T_OCTET_STRING):
            continue
        try:
            node, end = der.parse_der(inner.value, 0, len(inner.value), 8, ["ext"])
        except Exception:
            continue
        if oid == _OID_KEY_USAGE and _is(node, T_BIT_STRING):
            content = node.value
            nbits = (len(content) - 1) * 8 - content[0]
            info["key_usage"] = [KEY_USAGE_BITS.get(i, i) for i in range(nbits)
                                 if content[1 + i // 8] & (0x80 >> (i % 8))]
        elif oid == _OID_SAN and node.constructed:
            for general_name in node.value:
                # otherName [0] { type-id OID, [0] EXPLICIT HardwareModuleName { hwType OID, hwSerialNum OCTETS } }
                if general_name.cls != CONTEXT or general_name.number != 0 or len(general_name.value) != 2:
                    continue
                if _oid(general_name.value[0]) != _OID_HW_MODULE_NAME:
                    continue
                hmn = general_name.value[1].value[0]
                serial = hmn.value[1]
                if _is(serial, T_OCTET_STRING):
                    info.setdefault("eui", serial.value.hex().upper())


def certificate_info(node: Tlv, data: bytes = b"") -> dict:
    """Summary of an X.509 Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signature }."""
    info: dict = {}
    tbs = node.value[0].value
    i = 1 if tbs[0].cls == CONTEXT and tbs[0].number == 0 else 0
    info["serial_number"] = tbs[i].value.hex().upper()
    issuer, validity, subject = tbs[i + 2], tbs[i + 3], tbs[i + 4]
    found: dict = {}
    info["issuer"] = _name(issuer, {})
    info["subject"] = _name(subject, found)
    info["not_before"] = _time(validity.value[0])
    info["not_after"] = _time(validity.value[1])
    for extra in tbs[i + 6:]:
        if extra.cls == CONTEXT and extra.number == 3 and extra.value:
            _extensions(extra.value[0].value, found)
    info.update(found)
    return {k: v for k, v in info.items() if v}


def request_info(node: Tlv, data: bytes = b"") -> dict:
    """Summary of a PKCS#10 CertificationRequest ::= SEQUENCE { certificationRequestInfo, algorithm, sig }."""
    found: dict = {}
    cri = node.value[0].value
    info = {"subject": _name(cri[1], found)}
    for attrs in cri[3:]:
        if attrs.cls != CONTEXT or attrs.number != 0:
            continue
        for attr in attrs.value:
            if _is(attr, T_SEQUENCE) and len(attr.value) == 2 and _oid(attr.value[0]) == _OID_EXTENSION_REQUEST:
                for exts in attr.value[1].value:
                    _extensions(exts.value, found)
    info.update(found)
    return {k: v for k, v in info.items() if v}
