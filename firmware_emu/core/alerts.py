"""GBCS alert codes a device raises, and which message code carries each security failure.

Names follow the GBCS alert table (the 16-bit alert codes 0x8xxx). Only the codes the emulated devices raise
are listed; `alert_name` falls back to the hex code for the rest.
"""
from __future__ import annotations

from enum import IntEnum


class AlertCode(IntEnum):
    """GBCS alert codes used by the emulated devices."""

    CREDIT_BELOW_LOW_CREDIT_THRESHOLD = 0x810D
    CREDIT_ADDED_LOCALLY = 0x810E
    EMERGENCY_CREDIT_AVAILABLE = 0x8119
    SMART_METER_INTEGRITY_WARNING = 0x81A0
    EMERGENCY_CREDIT_EXHAUSTED = 0x81AA
    EMERGENCY_CREDIT_ACTIVATED = 0x81AB
    METER_COVER_CLOSED = 0x81B9
    SUPPLY_CONNECT_FAILURE = 0x81BD
    SUPPLY_DISCONNECT_FAILURE = 0x81C0
    UTRN_REJECTED_LOCKED_OUT = 0x81C5
    CLOCK_NOT_ADJUSTED_OUTSIDE_TOLERANCE = 0x81C6
    CLOCK_ADJUSTED_WITHIN_TOLERANCE = 0x8145
    ACTIVE_POWER_ABOVE_LOAD_LIMIT = 0x8F01
    BILLING_DATA_LOG_UPDATED = 0x8F0A
    CLOCK_NOT_ADJUSTED_GT_10S = 0x8F0C
    CREDIT_BELOW_DISABLEMENT_THRESHOLD = 0x8F0F
    FIRMWARE_VERIFICATION_FAILED = 0x8F1C
    COMMAND_INTEGRITY_CHECK_FAILED = 0x8F1E
    SOURCE_HAS_NO_AUTHORITY = 0x8F30
    SUPPLY_ARMED = 0x8F32
    SUPPLY_OUTAGE_RESTORED = 0x8F35
    SUPPLY_OUTAGE_RESTORED_3_MINUTES = 0x8F36
    TRUSTED_SOURCE_AUTHENTICATION_FAILURE = 0x8F3D
    UNAUTHORISED_COMMUNICATION_ACCESS = 0x8F3E
    UNAUTHORISED_PHYSICAL_ACCESS_TAMPER = 0x8F3F
    FIRMWARE_VERSION_CHANGED = 0x8F43
    CREDIT_WOULD_EXCEED_MAX_METER_BALANCE = 0x8F47
    DUPLICATE_UTRN = 0x8F51
    EVENT_LOG_CLEARED = 0x8F52
    FAILED_AUTHENTICATION_OR_AUTHORISATION = 0x8F53
    SUPPLY_INTERRUPTED = 0x8F57
    UTRN_EXCEEDS_MAX_CREDIT = 0x8F5B
    UNUSUAL_NUMBERS_OF_MALFORMED_COMMANDS = 0x8F60
    UTRN_NOT_AUTHENTIC = 0x8F63
    UTRN_NOT_FOR_THIS_DEVICE = 0x8F64
    FUTURE_DATED_COMMAND_SUCCEEDED = 0x8F66
    FUTURE_DATED_COMMAND_FAILED = 0x8F67
    DEVICE_COMMISSIONED = 0x8F69
    UPDATE_SECURITY_CREDENTIALS = 0x8F70
    FIRMWARE_VERIFICATION_SUCCESSFUL = 0x8F72
    METER_COVER_REMOVED = 0x8F74


#: Generic alert message codes (GBCS: 0x1000 carries critical alerts, 0x1001 non-critical ones).
GENERIC_CRITICAL_ALERT = 0x1000
GENERIC_NON_CRITICAL_ALERT = 0x1001
#: Future-dated outcome alerts (one per instruction) on DLMS devices.
FUTURE_DATED_DLMS_ALERT = 0x00CC
#: Meter integrity issue warning (ESME).
MIIWA_ESME = 0x00F0
#: ECS80 supply outage restored.
ECS80_ALERT = 0x0067

#: Alert codes GBCS treats as critical (signed, carried by 0x1000); the rest go in 0x1001, MAC'd.
CRITICAL_ALERT_CODES = frozenset({
    0x8F01, 0x8F0A, 0x8F0C, 0x8F0F, 0x8F1C, 0x8F1E, 0x8F30, 0x8F32, 0x8F3D, 0x8F3E, 0x8F3F, 0x8F43, 0x8F47,
    0x8F51, 0x8F52, 0x8F53, 0x8F57, 0x8F5B, 0x8F60, 0x8F63, 0x8F64, 0x8F66, 0x8F67, 0x8F69, 0x8F70, 0x8F72,
    0x8F74,
})


def alert_name(code: int) -> str:
    try:
        return AlertCode(code).name
    except ValueError:
        return f"0x{code:04X}"


def generic_message_code(alert_code: int) -> int:
    """The message code of a generic alert: 0x1000 for critical alert codes, else 0x1001."""
    return GENERIC_CRITICAL_ALERT if alert_code in CRITICAL_ALERT_CODES else GENERIC_NON_CRITICAL_ALERT
