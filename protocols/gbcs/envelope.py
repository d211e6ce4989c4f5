"""The GBCS outer layers, each declared once: General-Ciphering (`DD`, MAC header or GBT block) and
General-Signing (`DF`, the grouping header with routing, replay data, payload and signature).

    [DD 00 00 00 00 00 00 len | 11 00000000 | DF ... | MAC(12)]      MAC'd message
    DF 09 cra counter(8) 08 orig 08 recip dt other-info content [sig]  grouping header (signature byte absent in
                                                                       pre-commands, 00 unsigned, 40+64 signed)
    DD 09 cra counter 08 orig 08 recip 00 02 code 00 len | sec(5) | E0 block-control block-no(2) ack(2) data
                                                                       GBT block (GBCS 4.1 WAN segmentation)

The payload (`content`) stays bytes here; `protocols.gbcs.message` decodes it by payload family.
"""
from __future__ import annotations

import construct as cs
from construct import Byte, If, Int16ub, Int32ub, Int64ub, Int8ub, Struct, this

from protocols.prims import BerPrefixed, End, Eui, Expect, Hex, HexBytes, HexPrefixed, Linked, OptionalTail, StrictEnum, compiled

CRA_FLAG = {"command": 1, "response": 2, "alert": 3}
CraFlag = StrictEnum(Byte, **CRA_FLAG)

GENERAL_CIPHERING_TAG = 0xDD
GENERAL_SIGNING_TAG = 0xDF
GBT_TAG = 0xE0
MAC_LENGTH = 12
SIGNATURE_LENGTH = 64
SECURITY_HEADER_LENGTH = 5
#: The security control byte of a MAC-only (authenticated, suite 1) message.
SC_AUTHENTICATED = 0x11
#: The security control byte in front of an encrypted payload (authenticated + encrypted).
SC_AUTH_ENCRYPTED = 0x31

SecurityHeader = Struct(
    "security_control" / Int8ub,
    "invocation_counter" / Int32ub,
)

#: DLMS date-time (IEC 62056-62 4.1.6.1): 12 bytes; 0xFF/0x8000 mean "not specified".
DlmsDateTime = Struct(
    "year" / Int16ub,
    "month" / Int8ub,
    "day_of_month" / Int8ub,
    "day_of_week" / Int8ub,
    "hour" / Int8ub,
    "minute" / Int8ub,
    "second" / Int8ub,
    "hundredths" / Int8ub,
    "deviation" / cs.Int16sb,
    "clock_status" / Int8ub,
)

#: Other-information: the message code, then supplementary remote-party fields selected by the length
#: (2, 10, 18, 26 bytes, or longer when it carries the remote party's KA certificate, brief §1.4).
def _present(name: str, parse_tail_length):
    """Condition for an optional trailing field: on parse, decided by the bytes left; on build, by the value."""
    def cond(ctx):
        if ctx._building:
            return ctx.get(name) is not None
        return parse_tail_length(len(ctx._tail))
    return cond


OtherInformation = Struct(
    "message_code" / Int16ub,
    "supplementary_remote_party_id" / OptionalTail(Eui),
    "supplementary_remote_party_counter" / OptionalTail(Int64ub),
    "_tail" / cs.Peek(cs.GreedyBytes),
    "supplementary_originator_counter" / If(_present("supplementary_originator_counter", lambda n: n == 8), Int64ub),
    "supplementary_remote_party_ka_certificate" / If(
        _present("supplementary_remote_party_ka_certificate", lambda n: n > 8), HexBytes(cs.GreedyBytes)),
    End,
)

TransactionId = Struct(
    Expect(b"\x09", "transaction-id length"),
    "cra_flag" / CraFlag,
    "originator_counter" / Int64ub,
)

#: Date-time of the grouping header: `00` absent, or `0C` + a DLMS date-time.
OptionalDateTime = cs.FocusedSeq(
    "value",
    "length" / cs.Rebuild(Int8ub, lambda ctx: 0 if ctx.value is None else 12),
    cs.Check(lambda ctx: ctx.length in (0, 12)),
    "value" / If(this.length == 12, DlmsDateTime),
)

#: General-Signing APDU (the grouping header). Parsed over exactly its bytes, so the signature is absent
#: (pre-command) when the payload ends the buffer.
GeneralSigning = Struct(
    Expect(bytes((GENERAL_SIGNING_TAG,)), "General-Signing tag"),
    "transaction_id" / TransactionId,
    Expect(b"\x08", "system-title length"),
    "originator" / Eui,
    Expect(b"\x08", "system-title length"),
    "recipient" / Eui,
    "date_time" / Linked(OptionalDateTime),
    "other_information" / BerPrefixed(Linked(OtherInformation)),
    "content" / HexPrefixed(),
    "signature" / Linked(OptionalTail(cs.FocusedSeq(
        "value",
        "length" / cs.Rebuild(Int8ub, cs.len_(this.value) // 2),
        cs.Check(lambda ctx: ctx.length in (0, SIGNATURE_LENGTH)),
        "value" / Hex(this.length),
    ))),
    End,
)

#: GBT block (Green Book 9.3.5 general-block-transfer), the payload of a GBCS GBT General-Ciphering APDU.
GbtApdu = Struct(
    Expect(bytes((GBT_TAG,)), "GBT tag"),
    "block_control" / cs.BitStruct(
        "last_block" / cs.Flag,
        "streaming" / cs.Flag,
        "window" / cs.BitsInteger(6),
    ),
    "block_number" / Int16ub,
    "block_number_ack" / Int16ub,
    "block_data" / HexPrefixed(),
)

#: General-Ciphering APDU. In a MAC'd message every field is empty and the ciphered content is
#: security header + General-Signing APDU + 12-byte MAC; in a GBT block the routing fields are filled
#: and the ciphered content is security header + GBT APDU.
GeneralCiphering = Struct(
    Expect(bytes((GENERAL_CIPHERING_TAG,)), "General-Ciphering tag"),
    "transaction_id" / HexPrefixed(),
    "originator_system_title" / HexPrefixed(),
    "recipient_system_title" / HexPrefixed(),
    "date_time" / HexPrefixed(),
    "other_information" / HexPrefixed(),
    Expect(b"\x00", "key-info absent"),  # GBCS never carries key-info: the keys are agreed (static ECDH)
    "ciphered_content" / BerPrefixed(Struct(
        "security_header" / SecurityHeader,
        "body" / HexBytes(cs.GreedyBytes),
    )),
    End,
)

GbtRouting = Struct(
    "transaction_id" / BerPrefixed(TransactionId),
    "originator" / BerPrefixed(Eui),
    "recipient" / BerPrefixed(Eui),
)


GeneralSigningFast = compiled(GeneralSigning)
GeneralCipheringFast = compiled(GeneralCiphering)
