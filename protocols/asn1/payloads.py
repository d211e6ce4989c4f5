"""ASN.1 DER payloads of the GBCS security, join and firmware use cases: bytes <-> named JSON.

    decode_asn1(bytes.fromhex("3010020102040800DB12345678909C020103"), cra_flag="command", message_code=0x000E)
    == {"use_case_schema": "CS03B.command",
        "value": {"method": 2, "method_name": "method_b", "other_device": "00DB12345678909C",
                  "device_type": "GPF"}}

Every payload is first parsed as strict DER (`der.py`: any bad byte is a `DecodeError` with its offset), then
mapped onto the schema of its message code and CRA flag (`SCHEMAS_BY_CODE`). A payload whose valid DER does
not have the schema's shape, or whose bytes the schema would not rebuild exactly, falls back to the generic
tree `{"use_case_schema": null, "der": {...}}` instead of failing. So `encode_asn1(decode_asn1(b)) == b`
for every payload that decodes, and decoding is injective.

GBCS devices write lengths 128..255 as `82 00 nn` in the CS02a/b/f/g responses and alerts (RTDS 4.5.0);
such payloads decode with `"length_form": "82"` beside `value`, and encoding writes every length 128..255 in
that form again (certificates, kept as hex, are never re-encoded).

The structures follow GBCS sections 13 (CS02 security credentials), 11 (CS06 firmware, CCS08, CS08/CS09)
and the join/unjoin/device-log use cases (CS03, CS04, CS07, GCS59, GCS62), with GCS28 (set clock on the
GSME). Names are snake_case; enumerations decode to names (unknown numbers stay numbers) and encode from
either. Informational keys (`method_name`, certificate `subject`/`eui`/...) are ignored by `encode_asn1`.
"""
from __future__ import annotations

from protocols.asn1 import der
from protocols.asn1.certinfo import KEY_USAGE_BITS, certificate_info, request_info
from protocols.asn1.der import DER, Raw, Tlv
from protocols.asn1.schema import (TRUSTED_RAW, F, AlertCode, Certificate, Choice, Enumerated, Implicit, Integer,
                                   Mismatch, NamedBits, Null, Octets, Seq, SeqOf, Time, Type)
from protocols.errors import DecodeError, EncodeError
from protocols.prims import parse_exact

__all__ = ["decode_asn1", "encode_asn1", "SCHEMAS", "SCHEMAS_BY_CODE", "schema_name_for", "USE_CASES"]

# ------------------------------------------------------------------------------------------ enumerations

DEVICE_TYPES = {0: "GSME", 1: "ESME", 2: "CHF", 3: "GPF", 4: "HCALCS", 5: "PPMID", 6: "Type 2"}

REMOTE_PARTY_ROLES = {0: "root", 1: "recovery", 2: "supplier", 3: "network_operator", 4: "access_control_broker",
                      5: "transitional_cos", 6: "wan_provider", 7: "issuing_authority", 8: "load_controller",
                      127: "other"}

CREDENTIALS_REPLACEMENT_MODES = {
    2: "supplier_by_supplier", 3: "network_operator_by_network_operator", 4: "acb_by_acb",
    5: "wan_provider_by_wan_provider", 6: "transitional_cos_by_transitional_cos", 7: "supplier_by_transitional_cos",
    8: "any_except_abnormal_root_by_recovery", 9: "any_by_contingency", 10: "load_controller_by_load_controller",
    11: "load_controller_by_supplier",
}

CELL_USAGES = {0: "management", 1: "prepayment_top_up"}
SEQ_NUMBER_USAGES = {0: "prepayment_top_up"}
TIME_BASED_CPV_CHECKS = {0: "apply", 1: "disapply"}

STATUS_CODES = {0: "success", 5: "bad_certificate", 10: "no_trust_anchor", 17: "insufficient_memory",
                25: "trust_anchor_not_found", 30: "resources_busy", 127: "other"}

JOIN_METHODS = {0: "method_a_initiator", 1: "method_a_responder", 2: "method_b", 3: "method_c"}

JOIN_RESPONSE_CODES = {
    0: "success", 1: "invalid_message_code_for_join_method_and_role", 2: "invalid_join_method_and_role",
    3: "incompatible_with_existing_entry", 4: "device_log_full", 5: "write_failure",
    6: "key_agreement_no_resources", 7: "key_agreement_unknown_issuer", 8: "key_agreement_unsupported_suite",
    9: "key_agreement_bad_message", 10: "key_agreement_bad_key_confirm", 11: "invalid_or_missing_certificate",
    12: "no_partner_link_key_received", 13: "no_cbke_response",
}
UNJOIN_RESPONSE_CODES = {0: "success", 1: "not_in_device_log", 2: "other_failure"}
ISSUE_CREDENTIALS_CODES = {1: "invalid_key_usage", 2: "key_pair_generation_failed", 3: "cr_production_failed"}
UPDATE_DEVICE_CERTIFICATE_CODES = {
    0: "success", 1: "invalid_certificate", 2: "wrong_device_identity", 3: "invalid_key_usage",
    4: "no_corresponding_key_pair_generated", 5: "wrong_public_key", 6: "certificate_storage_failed",
    7: "private_key_change_failed",
}
PROVIDE_DEVICE_CERTIFICATE_CODES = {1: "invalid_key_usage", 2: "no_certificate_held",
                                    3: "certificate_retrieval_failure"}
ACTIVATE_FIRMWARE_CODES = {0: "success", 1: "no_image_held", 2: "hash_mismatch", 3: "activation_failure"}
READ_FAILURE_CODES = {0: "success", 1: "read_failure"}
FIRMWARE_TRANSFER_CODES = {0: "success", 1: "image_discarded", 2: "hardware_version_mismatch",
                           3: "file_transfer_failure"}
ACTIVATE_IMAGE_CODES = {0: "success", 1: "failure"}
DEVICE_TIME_STATUS = {0: "reliable", 1: "invalid", 2: "unreliable"}

# ------------------------------------------------------------------------------------------ shared types

SeqNumber = Integer
DeviceType = Integer(DEVICE_TYPES)
RemotePartyRole = Integer(REMOTE_PARTY_ROLES)
KeyUsage = NamedBits(KEY_USAGE_BITS)
StatusCode = Enumerated(STATUS_CODES)
CredentialsReplacementMode = Integer(CREDENTIALS_REPLACEMENT_MODES)
X509Certificate = Certificate(certificate_info)
CertificationRequest = Certificate(request_info)

TrustAnchorCellIdentifier = Seq(
    F("remote_party_role", RemotePartyRole),
    F("key_usage", KeyUsage),
    F("cell_usage", Integer(CELL_USAGES), optional=True),     # DEFAULT management: absent when management
)

TrustAnchorCellContents = Seq(
    F("key_usage", KeyUsage),
    F("cell_usage", Integer(CELL_USAGES), optional=True),
    F("subject_unique_id", Octets()),
    F("subject_key_identifier", Octets()),
)

SpecialistSeqNumber = Seq(
    F("seq_number_usage", Integer(SEQ_NUMBER_USAGES)),
    F("seq_number", SeqNumber()),
)

RemotePartySeqNumberChange = Seq(
    F("remote_party_role", RemotePartyRole),
    F("floor_seq_number", SeqNumber()),
    F("specialist_floor_seq_numbers", SeqOf(SpecialistSeqNumber), optional=True),
)

DeviceLogEntry = Seq(
    F("device_id", Octets()),
    F("device_type", DeviceType),
)

# ------------------------------------------------------------------------------------------ CS02a / CS02f

ProvideSecurityCredentialDetailsCommand = Seq(
    F("authorising_remote_party_ta_cell", TrustAnchorCellIdentifier),
    F("remote_party_roles", SeqOf(RemotePartyRole)),
)

RemotePartyDetails = Seq(
    F("remote_party_role", RemotePartyRole),
    F("status_code", StatusCode),
    F("current_seq_number", SeqNumber(), optional=True),
    F("trust_anchor_cells", SeqOf(TrustAnchorCellContents), optional=True),
)

ProvideSecurityCredentialDetailsResponse = Choice(("remote_party_details", SeqOf(RemotePartyDetails)))

# ------------------------------------------------------------------------------------------ CS02b / CS02g

AuthorisingRemotePartyControl = Seq(
    F("credentials_replacement_mode", CredentialsReplacementMode),
    F("plaintext_symmetric_key", Implicit(0, Octets()), optional=True),
    F("time_based_cpv_checks", Implicit(1, Integer(TIME_BASED_CPV_CHECKS)), optional=True),
    F("authorising_remote_party_ta_cell", Implicit(2, TrustAnchorCellIdentifier), optional=True),
    F("authorising_remote_party_seq_number", Implicit(3, SeqNumber())),
    F("new_remote_party_floor_seq_number", Implicit(4, SeqNumber()), optional=True),
    F("new_remote_party_specialist_floor_seq_numbers", Implicit(5, SeqOf(SpecialistSeqNumber)), optional=True),
    F("other_remote_party_seq_number_changes", Implicit(6, SeqOf(RemotePartySeqNumberChange)), optional=True),
)

TrustAnchorReplacement = Seq(
    F("replacement_certificate", X509Certificate),
    F("target_trust_anchor_cell", TrustAnchorCellIdentifier),
)

UpdateSecurityCredentialsCommand = Seq(
    F("authorising_remote_party_control", AuthorisingRemotePartyControl),
    F("replacements", SeqOf(TrustAnchorReplacement)),
    F("certification_path_certificates", SeqOf(X509Certificate)),
    F("execution_date_time", Time(), optional=True),
)

ReplacementOutcome = Seq(
    F("affected_trust_anchor_cell", TrustAnchorCellIdentifier),
    F("status_code", StatusCode),
    F("existing_subject_unique_id", Octets()),
    F("existing_subject_key_id", Octets()),
    F("replacing_subject_unique_id", Octets()),
    F("replacing_subject_key_id", Octets()),
)

UpdateSecurityCredentialsExecutionOutcome = Seq(
    F("authorising_remote_party_seq_number", SeqNumber()),
    F("credentials_replacement_mode", CredentialsReplacementMode),
    F("remote_party_seq_number_changes", SeqOf(RemotePartySeqNumberChange)),
    F("replacement_outcomes", SeqOf(ReplacementOutcome)),
)

UpdateSecurityCredentialsResponse = Seq(
    F("command_accepted", Null()),
    F("execution_outcome", UpdateSecurityCredentialsExecutionOutcome, optional=True),
)

UpdateSecurityCredentialsAlert = Seq(
    F("alert_code", AlertCode()),
    F("date_time", Time()),
    F("execution_outcome", UpdateSecurityCredentialsExecutionOutcome),
)

# ------------------------------------------------------------------------------------------ CS02c / d / e

IssueSecurityCredentialsCommand = Seq(F("key_usage", KeyUsage))
IssueSecurityCredentialsResponse = Choice(
    ("certification_request", CertificationRequest),
    ("response_code", Integer(ISSUE_CREDENTIALS_CODES)),
)
UpdateDeviceCertificateCommand = Choice(("device_certificate", X509Certificate))
UpdateDeviceCertificateResponse = Choice(("response_code", Integer(UPDATE_DEVICE_CERTIFICATE_CODES)))
ProvideDeviceCertificateCommand = Seq(F("key_usage", KeyUsage))
ProvideDeviceCertificateResponse = Choice(
    ("device_certificate", X509Certificate),
    ("response_code", Integer(PROVIDE_DEVICE_CERTIFICATE_CODES)),
)

# ------------------------------------------------------------------------------------------ CS03 / CS04 / CS07


def _method_name(value):
    return JOIN_METHODS.get(value) if isinstance(value, int) else None


JoinDeviceCommand = Seq(
    F("method", Integer(), info=("method_name", _method_name)),
    F("other_device", Octets()),
    F("device_type", DeviceType),
    F("other_device_certificate", X509Certificate, optional=True),
)
JoinDeviceResponse = Choice(("response_code", Integer(JOIN_RESPONSE_CODES)))

UnjoinDeviceCommand = Choice(("other_device", Octets()))
UnjoinDeviceResponse = Choice(("response_code", Integer(UNJOIN_RESPONSE_CODES)))

NullCommand = Null()
ReadDeviceJoinDetailsResponse = Seq(
    F("response_code", Integer(READ_FAILURE_CODES)),
    F("device_log_entries", SeqOf(DeviceLogEntry), optional=True),
)

# ------------------------------------------------------------------------------------------ CS06 / CS08 / CS09 / CCS08

ActivateFirmwareExecutionOutcome = Seq(
    F("response_code", Integer(ACTIVATE_FIRMWARE_CODES)),
    F("firmware_version", Octets()),
)
ActivateFirmwareCommand = Seq(
    F("manufacturer_image_hash", Octets()),
    F("originator_counter", SeqNumber()),
    F("execution_date_time", Time(), optional=True),
)
ActivateFirmwareResponse = Choice(
    ("command_accepted", Null()),
    ("execution_outcome", ActivateFirmwareExecutionOutcome),
)
ActivateFirmwareAlert = Seq(
    F("alert_code", AlertCode()),
    F("date_time", Time()),
    F("originator_counter", SeqNumber()),
    F("execution_outcome", ActivateFirmwareExecutionOutcome),
)

ReadFirmwareVersionResponse = Seq(
    F("firmware_version", Octets()),
    F("response_code", Integer(READ_FAILURE_CODES)),
)
FirmwareVersionAlert = Seq(         # CS09 (012B): PPMID/HCALCS image activated
    F("alert_code", AlertCode()),
    F("date_time", Time()),
    F("firmware_version", Octets()),
    F("activate_image", Integer(ACTIVATE_IMAGE_CODES)),
)
FirmwareTransferAlert = Seq(        # CCS08 (0128)
    F("alert_code", AlertCode()),
    F("date_time", Time()),
    F("entity_id", Octets()),
    F("firmware_version", Octets()),
    F("response_code", Integer(FIRMWARE_TRANSFER_CODES)),
)

# ------------------------------------------------------------------------------------------ GCS28 / GCS59 / GCS62

SetTimeCommand = Seq(
    F("validity_interval_start", Time()),
    F("validity_interval_end", Time()),
)
SetTimeResponse = Seq(
    F("device_time", Time()),
    F("device_time_status", Integer(DEVICE_TIME_STATUS)),
)
GpfDeviceLogRestoreCommand = Seq(F("device_log_entries", SeqOf(DeviceLogEntry)))
GpfDeviceLogRestoreResponse = Seq(F("restore_outcomes", SeqOf(Seq(
    F("device_log_entry", DeviceLogEntry),
    F("join_response_code", Integer(JOIN_RESPONSE_CODES)),
))))
GpfDeviceLogBackupAlert = Seq(
    F("alert_code", AlertCode()),
    F("date_time", Time()),
    F("device_log_entries", SeqOf(DeviceLogEntry)),
)

# ------------------------------------------------------------------------------------------ the tables

#: message code -> use-case name (the ASN.1 use cases only)
USE_CASES: dict[int, str] = {
    0x0008: "CS02a", 0x0102: "CS02b", 0x0103: "CS02b", 0x0104: "CS02b", 0x0105: "CS02b", 0x0106: "CS02b",
    0x0107: "CS02b", 0x0108: "CS02b", 0x0109: "CS02b", 0x00CB: "CS02b", 0x000A: "CS02c", 0x000B: "CS02d",
    0x000C: "CS02e", 0x011B: "CS02f", 0x0124: "CS02g", 0x0125: "CS02g", 0x0126: "CS02g",
    0x000D: "CS03A1", 0x00AB: "CS03A2", 0x000E: "CS03B", 0x00AF: "CS03C", 0x000F: "CS04AC", 0x0010: "CS04B",
    0x0012: "CS06", 0x00CA: "CS06", 0x0013: "CS07", 0x0129: "CS08", 0x012B: "CS09", 0x0128: "CCS08",
    0x007F: "GCS28", 0x008C: "GCS59", 0x00B2: "GCS62",
}

#: schema name -> declaration. Names are `<use case>.<command|response|alert>`.
SCHEMAS: dict[str, Type] = {
    "CS02a.command": ProvideSecurityCredentialDetailsCommand,
    "CS02a.response": ProvideSecurityCredentialDetailsResponse,
    "CS02f.command": ProvideSecurityCredentialDetailsCommand,
    "CS02f.response": ProvideSecurityCredentialDetailsResponse,
    "CS02b.command": UpdateSecurityCredentialsCommand,
    "CS02b.response": UpdateSecurityCredentialsResponse,
    "CS02b.alert": UpdateSecurityCredentialsAlert,
    "CS02g.command": UpdateSecurityCredentialsCommand,
    "CS02g.response": UpdateSecurityCredentialsResponse,
    "CS02g.alert": UpdateSecurityCredentialsAlert,
    "CS02c.command": IssueSecurityCredentialsCommand,
    "CS02c.response": IssueSecurityCredentialsResponse,
    "CS02d.command": UpdateDeviceCertificateCommand,
    "CS02d.response": UpdateDeviceCertificateResponse,
    "CS02e.command": ProvideDeviceCertificateCommand,
    "CS02e.response": ProvideDeviceCertificateResponse,
    **{f"{uc}.command": JoinDeviceCommand for uc in ("CS03A1", "CS03A2", "CS03B", "CS03C")},
    **{f"{uc}.response": JoinDeviceResponse for uc in ("CS03A1", "CS03A2", "CS03B", "CS03C")},
    **{f"{uc}.command": UnjoinDeviceCommand for uc in ("CS04AC", "CS04B")},
    **{f"{uc}.response": UnjoinDeviceResponse for uc in ("CS04AC", "CS04B")},
    "CS06.command": ActivateFirmwareCommand,
    "CS06.response": ActivateFirmwareResponse,
    "CS06.alert": ActivateFirmwareAlert,
    "CS07.command": NullCommand,
    "CS07.response": ReadDeviceJoinDetailsResponse,
    "CS08.command": NullCommand,
    "CS08.response": ReadFirmwareVersionResponse,
    "CS08.alert": FirmwareVersionAlert,
    "CS09.alert": FirmwareVersionAlert,
    "CCS08.alert": FirmwareTransferAlert,
    "GCS28.command": SetTimeCommand,
    "GCS28.response": SetTimeResponse,
    "GCS59.command": GpfDeviceLogRestoreCommand,
    "GCS59.response": GpfDeviceLogRestoreResponse,
    "GCS62.alert": GpfDeviceLogBackupAlert,
}

_ALERT_ONLY = {0x00CB, 0x0124, 0x00CA, 0x012B, 0x0128, 0x00B2}

#: (message code, CRA flag) -> schema name
SCHEMAS_BY_CODE: dict[tuple[int, str], str] = {}
for _code, _uc in USE_CASES.items():
    for _cra in (("alert",) if _code in _ALERT_ONLY else ("command", "response")):
        SCHEMAS_BY_CODE[(_code, _cra)] = f"{_uc}.{_cra}"
SCHEMAS_BY_CODE[(0x0129, "alert")] = "CS08.alert"     # CS08 code with the alert flag: the CS09 layout
del _code, _uc, _cra
assert all(name in SCHEMAS for name in SCHEMAS_BY_CODE.values())

_CRA_NAMES = {1: "command", 2: "response", 3: "alert"}


def _cra_name(cra_flag) -> str:
    if isinstance(cra_flag, int) and not isinstance(cra_flag, bool):
        return _CRA_NAMES.get(cra_flag, str(cra_flag))
    return str(cra_flag)


def schema_name_for(message_code: int | None, cra_flag="command") -> str | None:
    """The schema that decodes the payload of `message_code` with this CRA flag (None: generic DER only)."""
    if message_code is None:
        return None
    return SCHEMAS_BY_CODE.get((message_code, _cra_name(cra_flag)))


# ------------------------------------------------------------------------------------------ decode / encode

def _length_forms(tree: Tlv, data: bytes) -> tuple[bool, bool]:
    """(any length written 82 00 nn, any length written 81 nn) over the whole tree."""
    has82 = has81 = False
    stack = [tree]
    while stack:
        node = stack.pop()
        if node.long82:
            has82 = True
        else:
            pos = node.start + 1
            if data[node.start] & 0x1F == 0x1F:
                while data[pos] & 0x80:
                    pos += 1
                pos += 1
            if data[pos] == 0x81:
                has81 = True
        if node.constructed:
            stack.extend(node.value)
    return has82, has81


def _schema_value(schema: Type, tree: Tlv, data: bytes) -> tuple[dict, bool] | None:
    """(named value, long82) when `tree` fits `schema` and the schema rebuilds exactly `data`, else None.

    Every schema type decodes canonically (DER already fixed integers, lengths and tags; the types reject
    what they could not rebuild, e.g. a non-canonical named-bit string), so only the GBCS `82 00 nn` length
    form needs the proof by re-encoding: it is all-or-nothing per payload (certificates excepted)."""
    if tree.key not in schema.keys:
        return None
    try:
        value = schema.decode_content(tree, data)
    except Mismatch:
        return None
    if b"\x82\x00" not in data:       # no node can carry the 82 00 nn form: the value is exact as decoded
        return value, False
    has82, has81 = _length_forms(tree, data)
    if not has82:
        return value, False
    if not has81:                       # every length 128..255 is 82 00 nn: the "82" style rebuilds it exactly
        return value, True
    token = TRUSTED_RAW.set(True)
    try:
        node = schema.encode(value, "value")
    except EncodeError:
        return None
    finally:
        TRUSTED_RAW.reset(token)
    if isinstance(node, Raw):
        return (value, False) if node.data == data else None
    if der.serialize(node) == data:
        return value, False
    if der.serialize(node, long82=True) == data:
        return value, True
    return None


def decode_asn1(data: bytes, *, base: int = 0, cra_flag: str = "command", message_code: int | None = None) -> dict:
    """Decode one ASN.1 DER payload: `{"use_case_schema": name, "value": {...}}` when the payload fits the
    schema of (`message_code`, `cra_flag`), else `{"use_case_schema": null, "der": <generic tree>}`.
    Raises DecodeError (field path, offset = `base` + offset in `data`) on anything that is not DER."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise DecodeError(f"expected bytes, got {type(data).__name__}", "asn1", base)
    data = bytes(data)
    if not data:
        raise DecodeError("empty ASN.1 payload", "asn1", base)
    tree = parse_exact(DER, data, field="asn1", base=base)
    name = schema_name_for(message_code, cra_flag)
    if name is not None:
        found = _schema_value(SCHEMAS[name], tree, data)
        if found is not None:
            value, long82 = found
            out = {"use_case_schema": name, "value": value}
            if long82:
                out["length_form"] = "82"
            return out
    return {"use_case_schema": None, "der": der.node_to_json(tree)}


_TOP_KEYS = frozenset(("use_case_schema", "value", "der", "length_form"))


def encode_asn1(obj: dict, *, cra_flag="command", message_code=None) -> bytes:
    """Encode the JSON form of `decode_asn1` back to bytes (informational keys are ignored). Without
    `use_case_schema`, a `value` is encoded with the schema of (`message_code`, `cra_flag`)."""
    if not isinstance(obj, dict):
        raise EncodeError("ASN.1 payload must be an object with 'value' or 'der'", "asn1")
    unknown = [k for k in obj if k not in _TOP_KEYS]
    if unknown:
        raise EncodeError(f"unknown key {unknown[0]!r}", f"asn1.{unknown[0]}")
    lf = obj.get("length_form")
    if lf not in (None, "82", "minimal"):
        raise EncodeError(f"length_form must be '82' or absent, got {lf!r}", "asn1.length_form")
    long82 = lf == "82"
    if "der" in obj and obj["der"] is not None:
        tree = obj["der"]
        if isinstance(tree, list):
            if len(tree) != 1:
                raise EncodeError("an ASN.1 payload is exactly one DER value", "asn1.der")
            tree = tree[0]
        return der.serialize(der.node_from_json(tree, "der"), long82=long82)
    if "value" not in obj:
        raise EncodeError("ASN.1 payload needs 'value' (with a schema) or 'der'", "asn1")
    name = obj.get("use_case_schema")
    if name is None:
        name = schema_name_for(message_code, cra_flag)
        if name is None:
            raise EncodeError(f"no ASN.1 schema for message code {message_code!r} ({_cra_name(cra_flag)}); "
                              "give 'der' instead", "asn1.use_case_schema")
    schema = SCHEMAS.get(name) if isinstance(name, str) else None
    if schema is None:
        raise EncodeError(f"unknown use_case_schema {name!r}", "asn1.use_case_schema")
    try:
        node = schema.encode(obj["value"], "value")
    except RecursionError:
        raise EncodeError("structure nested too deeply", "value") from None
    return der.serialize(node, long82=long82)
