"""ZigBee-like HAN frames between the comms hub and the HAN devices, bytes <-> JSON, declared once.

A frame on the virtual HAN is four nested layers, every integer LITTLE-endian (IEEE 802.15.4 / ZigBee)::

    MAC   frame control (2) | sequence (1) | [dest PAN (2)] [dest address (2|8)] [src PAN (2)] [src address (2|8)]
          | MAC payload | FCS (2, CRC-16/KERMIT over header + payload)
    NWK   frame control (2) | destination (2) | source (2) | radius (1) | sequence (1)
          | [destination IEEE (8)] [source IEEE (8)] | NWK payload
    APS   frame control (1) | [destination endpoint (1)] [group (2)] [cluster (2) | profile (2) | source endpoint (1)]
          | APS counter (1) | [extended header: control (1) [block number (1) [ack bitfield (1)]]] | APS payload
    ZCL   Tunneling cluster 0x0704 (ZSE): frame control (1) | sequence (1) | command id (1) | payload
          Transfer Data payload = tunnel id (2) | data; GBCS data = 01 GET | 02 remaining (1) message
          (GET-RESPONSE) | 03 message (PUT)  (GBCS brief section 7, HIL notes)

Fragmentation (ZigBee APS 2.2.8.4.5): an APS payload longer than `MAX_APS_PAYLOAD` (61 bytes, brief section 7)
travels as blocks sharing one APS counter; the first carries fragmentation "first" and, in its block number
field, the NUMBER of blocks; the others carry "part" and their block index. An acknowledgement of a block
carries that block number and ack bitfield 0x01 (window size 1). `fragment()` cuts, `Reassembler` (sans-IO:
frames and `now` in, payloads out) puts blocks back together in any order, ignores duplicates and drops a
transmission that stays incomplete past its timeout.

Scope: the parts of the stack the virtual HAN uses. MAC and NWK security, multicast, source routes, the
inter-PAN APS frame and the reserved addressing modes are rejected with a DecodeError naming the field
(they are not modelled, so a misparse would be worse than a clear refusal).

JSON: EUI-64s are upper-case hex in the usual big-endian order (the wire holds them little-endian); short
addresses, PAN ids, clusters and profiles are ints; flags are booleans; closed fields are names. Every input
that decodes re-encodes to the same bytes; bad input raises DecodeError(field path, absolute offset).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import construct as cs
import crcmod.predefined
from construct import Construct, Int8ul, Int16ul, Struct, this

from protocols.errors import DecodeError, EncodeError
from protocols.prims import End, FieldError, HexBytes, Reject, build_value, parse_exact, to_jsonable

__all__ = [
    "MAX_APS_PAYLOAD", "SE_PROFILE", "TUNNELING_CLUSTER", "SE_ENDPOINT", "GBCS_TUNNEL_PROTOCOL",
    "MAC_HEADER", "NWK_HEADER", "APS_FRAME", "TUNNELING_FRAME", "GBCS_TUNNEL_DATA",
    "decode_mac", "encode_mac", "decode_nwk", "encode_nwk", "decode_aps", "encode_aps",
    "decode_tunneling", "encode_tunneling", "decode_gbcs_tunnel", "encode_gbcs_tunnel",
    "decode_frame", "encode_frame", "mac_fcs", "fragment", "aps_ack", "block_of", "Reassembler", "ReassemblyEvent",
    "TUNNEL_COMMAND_IDS", "TUNNEL_STATUS", "TRANSFER_DATA_STATUS",
]

MAX_APS_PAYLOAD = 61          # brief section 7: APS fragments carry at most 61 payload bytes
MAX_BLOCKS = 255              # the block number field is one byte
SE_PROFILE = 0x0109           # ZigBee Smart Energy
TUNNELING_CLUSTER = 0x0704
SE_ENDPOINT = 1
GBCS_TUNNEL_PROTOCOL = 200    # Request Tunnel protocol id of the GB HAN tunnel (manufacturer-defined range)

#: 802.15.4 FCS: CRC-16/KERMIT (poly 0x1021 reflected, init 0), sent least significant byte first.
mac_fcs = crcmod.predefined.mkPredefinedCrcFun("kermit")


# ============================================================================================ bit fields

@dataclass(frozen=True)
class F:
    """One sub-field of a bit field: `width` bits; `names` closes it (value -> name, others rejected);
    `allowed` restricts the values this model accepts, `why` says why the rest are refused."""
    name: str
    width: int
    names: dict | None = None
    allowed: tuple | None = None
    why: str = ""


class Bits(Construct):
    """An integer (`subcon`) cut into named sub-fields, least significant bit first (ZigBee bit order).

    Flags (width 1, no names) are booleans; closed fields are names; others ints. An undefined or refused
    value is a FieldError at the field's first byte; building takes names or numbers and range-checks."""

    def __init__(self, subcon, *fields: F):
        super().__init__()
        self.subcon = subcon
        self.fields = fields
        self.by_name = {f.name: {v: k for k, v in f.names.items()} for f in fields if f.names}

    def _parse(self, stream, context, path):
        pos = stream.tell()
        raw = self.subcon._parsereport(stream, context, path)
        out, shift = cs.Container(), 0
        for f in self.fields:
            v = (raw >> shift) & ((1 << f.width) - 1)
            shift += f.width
            if f.allowed is not None and v not in f.allowed:
                raise FieldError(f"{f.name} = {v}: {f.why or 'not supported'}", f"{path} -> {f.name}", pos)
            if f.names is not None:
                if v not in f.names:
                    raise FieldError(f"undefined {f.name} {v} (defined: "
                                     + ", ".join(f"{k} {n}" for k, n in f.names.items()) + ")",
                                     f"{path} -> {f.name}", pos)
                v = f.names[v]
            elif f.width == 1:
                v = bool(v)
            out[f.name] = v
        return out

    def _build(self, obj, stream, context, path):
        if not isinstance(obj, dict):
            raise cs.MappingError(f"expected an object, got {type(obj).__name__}", path=path)
        raw, shift, norm = 0, 0, cs.Container()
        for f in self.fields:
            v = obj.get(f.name, 0)
            if f.names is not None and isinstance(v, str):
                if v not in self.by_name[f.name]:
                    raise cs.MappingError(f"undefined {f.name} {v!r}", path=f"{path} -> {f.name}")
                v = self.by_name[f.name][v]
            if isinstance(v, bool):
                v = int(v)
            if not isinstance(v, int) or not 0 <= v < (1 << f.width):
                raise cs.MappingError(f"{f.name} must fit in {f.width} bit(s), got {v!r}", path=f"{path} -> {f.name}")
            if f.allowed is not None and v not in f.allowed:
                raise cs.MappingError(f"{f.name} = {v}: {f.why or 'not supported'}", path=f"{path} -> {f.name}")
            if f.names is not None and v not in f.names:
                raise cs.MappingError(f"undefined {f.name} {v}", path=f"{path} -> {f.name}")
            norm[f.name] = f.names[v] if f.names is not None else bool(v) if f.width == 1 else v
            raw |= v << shift
            shift += f.width
        self.subcon._build(raw, stream, context, path)
        return norm  # names and booleans, so the conditions of the enclosing Struct read one form

    def _sizeof(self, context, path):
        return self.subcon._sizeof(context, path)


class EuiLE(cs.Adapter):
    """An EUI-64: little-endian on the air, big-endian hex (as printed on the device) in JSON."""

    def __init__(self):
        super().__init__(cs.Bytes(8))

    def _decode(self, obj, context, path):
        return obj[::-1].hex().upper()

    def _encode(self, obj, context, path):
        if isinstance(obj, (bytes, bytearray)):
            return bytes(obj)[::-1]
        try:
            raw = bytes.fromhex(obj)
        except (TypeError, ValueError):
            raise cs.MappingError(f"not an EUI-64 hex string: {obj!r}", path=path) from None
        if len(raw) != 8:
            raise cs.MappingError(f"an EUI-64 has 8 bytes, got {len(raw)}", path=path)
        return raw[::-1]


# ============================================================================================ MAC (802.15.4)

ADDR_MODES = {0: "none", 2: "short", 3: "extended"}
MAC_FRAME_CONTROL = Bits(
    Int16ul,
    F("frame_type", 3, {0: "beacon", 1: "data", 2: "ack", 3: "command"}),
    F("security_enabled", 1, allowed=(0,), why="MAC security is not used by ZigBee (NWK/APS secure instead)"),
    F("frame_pending", 1),
    F("ack_request", 1),
    F("pan_id_compression", 1),
    F("reserved", 3),
    F("dest_addr_mode", 2, ADDR_MODES),
    F("frame_version", 2),
    F("src_addr_mode", 2, ADDR_MODES),
)


def _address(mode_key: str):
    return cs.Switch(lambda c: c["frame_control"][mode_key], {"short": Int16ul, "extended": EuiLE(), "none": cs.Pass})


MAC_HEADER = Struct(
    "frame_control" / MAC_FRAME_CONTROL,
    "sequence" / Int8ul,
    "dest_pan_id" / cs.If(lambda c: c["frame_control"]["dest_addr_mode"] != "none", Int16ul),
    "dest_address" / _address("dest_addr_mode"),
    "src_pan_id" / cs.If(lambda c: c["frame_control"]["src_addr_mode"] != "none"
                         and not c["frame_control"]["pan_id_compression"], Int16ul),
    "src_address" / _address("src_addr_mode"),
    "payload" / HexBytes(cs.GreedyBytes),
)


def _decode(con, data: bytes, field: str, base: int) -> dict:
    return to_jsonable(parse_exact(con, bytes(data), field=field, base=base))


def _clean(d: dict, keys: tuple[str, ...]) -> dict:
    """The JSON with None for the optional fields it leaves out (construct's If/Switch want the key)."""
    if not isinstance(d, dict):
        raise EncodeError(f"expected an object, got {type(d).__name__}")
    out = dict(d)
    for k in keys:
        out.setdefault(k, None)
    return out


def decode_mac(data: bytes, *, base: int = 0) -> dict:
    """An 802.15.4 MAC frame (with FCS) -> JSON; the FCS is checked, not kept (encode recomputes it)."""
    data = bytes(data)
    if len(data) < 5:
        raise DecodeError(f"a MAC frame has at least 5 bytes, got {len(data)}", "mac", base + len(data))
    body, fcs = data[:-2], int.from_bytes(data[-2:], "little")
    d = _decode(MAC_HEADER, body, "mac", base)
    if mac_fcs(body) != fcs:
        raise DecodeError(f"FCS 0x{fcs:04X} does not match 0x{mac_fcs(body):04X}", "mac.fcs", base + len(body))
    if d["frame_control"]["frame_type"] == "ack" and (d["payload"] or d["frame_control"]["dest_addr_mode"] != "none"
                                                      or d["frame_control"]["src_addr_mode"] != "none"):
        raise DecodeError("a MAC acknowledgement has no addresses and no payload", "mac.payload", base + 3)
    return d


def encode_mac(d: dict) -> bytes:
    """JSON -> MAC frame bytes with the FCS appended."""
    body = build_value(MAC_HEADER, _clean(d, ("dest_pan_id", "dest_address", "src_pan_id", "src_address")),
                       field="mac")
    return body + mac_fcs(body).to_bytes(2, "little")


# ============================================================================================ NWK

NWK_FRAME_CONTROL = Bits(
    Int16ul,
    F("frame_type", 2, {0: "data", 1: "command"}),
    F("protocol_version", 4),
    F("discover_route", 2),
    F("multicast", 1, allowed=(0,), why="multicast is not modelled"),
    F("security", 1, allowed=(0,), why="NWK security is not modelled (the virtual HAN is in clear)"),
    F("source_route", 1, allowed=(0,), why="source routing is not modelled"),
    F("dest_ieee_present", 1),
    F("src_ieee_present", 1),
    F("end_device_initiator", 1),
    F("reserved", 2),
)

NWK_HEADER = Struct(
    "frame_control" / NWK_FRAME_CONTROL,
    "dest_address" / Int16ul,
    "src_address" / Int16ul,
    "radius" / Int8ul,
    "sequence" / Int8ul,
    "dest_ieee" / cs.If(this.frame_control.dest_ieee_present, EuiLE()),
    "src_ieee" / cs.If(this.frame_control.src_ieee_present, EuiLE()),
    "payload" / HexBytes(cs.GreedyBytes),
)


def decode_nwk(data: bytes, *, base: int = 0) -> dict:
    return _decode(NWK_HEADER, data, "nwk", base)


def encode_nwk(d: dict) -> bytes:
    return build_value(NWK_HEADER, _clean(d, ("dest_ieee", "src_ieee")), field="nwk")


# ============================================================================================ APS

APS_FRAME_CONTROL = Bits(
    Int8ul,
    F("frame_type", 2, {0: "data", 1: "command", 2: "ack"}),
    F("delivery_mode", 2, {0: "unicast", 2: "broadcast", 3: "group"}),
    F("ack_format", 1),
    F("security", 1, allowed=(0,), why="APS security is not modelled"),
    F("ack_request", 1),
    F("extended_header", 1),
)

FRAGMENTATION = {0: "none", 1: "first", 2: "part"}
APS_EXTENDED_HEADER = Struct(
    "control" / Bits(Int8ul, F("fragmentation", 2, FRAGMENTATION), F("reserved", 6)),
    "block_number" / cs.If(lambda c: c["control"]["fragmentation"] != "none", Int8ul),
    "ack_bitfield" / cs.If(lambda c: c["control"]["fragmentation"] != "none"
                           and c["_"]["frame_control"]["frame_type"] == "ack", Int8ul),
)


class _Nothing(Construct):
    """An empty payload (""), for frames that carry none: a trailing byte is an error at its offset."""

    def __init__(self, what: str):
        super().__init__()
        self.what = what
        self.flagbuildnone = True

    def _parse(self, stream, context, path):
        End._parse(stream, context, path)
        return ""

    def _build(self, obj, stream, context, path):
        if obj not in (None, "", b""):
            raise cs.MappingError(f"{self.what} has no payload", path=path)
        return ""

    def _sizeof(self, context, path):
        return 0


def _addressed(c) -> bool:
    """Data frames, and acks of data frames, carry endpoints, cluster and profile (ZigBee 2.2.5.1)."""
    fc = c["frame_control"]
    return fc["frame_type"] == "data" or (fc["frame_type"] == "ack" and not fc["ack_format"])


APS_FRAME = Struct(
    "frame_control" / APS_FRAME_CONTROL,
    "dest_endpoint" / cs.If(lambda c: _addressed(c) and c["frame_control"]["delivery_mode"] != "group", Int8ul),
    "group_address" / cs.If(lambda c: c["frame_control"]["delivery_mode"] == "group", Int16ul),
    "cluster_id" / cs.If(_addressed, Int16ul),
    "profile_id" / cs.If(_addressed, Int16ul),
    "src_endpoint" / cs.If(_addressed, Int8ul),
    "counter" / Int8ul,
    "extended" / cs.If(this.frame_control.extended_header, APS_EXTENDED_HEADER),
    "payload" / cs.IfThenElse(this.frame_control.frame_type == "ack", _Nothing("an APS acknowledgement"),
                              HexBytes(cs.GreedyBytes)),
)
_APS_OPTIONAL = ("dest_endpoint", "group_address", "cluster_id", "profile_id", "src_endpoint", "extended", "payload")


def decode_aps(data: bytes, *, base: int = 0) -> dict:
    return _decode(APS_FRAME, data, "aps", base)


def encode_aps(d: dict) -> bytes:
    d = _clean(d, _APS_OPTIONAL)
    if d.get("extended") is not None:
        d["extended"] = _clean(d["extended"], ("block_number", "ack_bitfield"))
    return build_value(APS_FRAME, d, field="aps")


# ============================================================================================ ZCL Tunneling

ZCL_TUNNEL_FRAME_CONTROL = Bits(
    Int8ul,
    F("frame_type", 2, {1: "cluster"}),   # Transfer Data & co. are cluster-specific commands
    F("manufacturer_specific", 1, allowed=(0,), why="no manufacturer-specific tunnel commands are modelled"),
    F("direction", 1, {0: "client_to_server", 1: "server_to_client"}),
    F("disable_default_response", 1),
    F("reserved", 3),
)

TUNNEL_STATUS = {0: "Success", 1: "Busy", 2: "No More Tunnel IDs", 3: "Protocol Not Supported",
                 4: "Flow Control Not Supported"}

# ZSE 1.x Tunneling cluster: the commands the GB HAN tunnel uses, by (direction, command id)
_TUNNEL_COMMANDS = {
    ("client_to_server", 0x00): ("Request Tunnel", Struct(
        "protocol_id" / Int8ul, "manufacturer_code" / Int16ul, "flow_control_support" / Int8ul,
        "maximum_incoming_transfer_size" / Int16ul, End)),
    ("client_to_server", 0x01): ("Close Tunnel", Struct("tunnel_id" / Int16ul, End)),
    ("client_to_server", 0x02): ("Transfer Data", Struct("tunnel_id" / Int16ul, "data" / HexBytes(cs.GreedyBytes))),
    ("client_to_server", 0x03): ("Transfer Data Error", Struct("tunnel_id" / Int16ul, "transfer_data_status" / Int8ul,
                                                              End)),
    ("server_to_client", 0x00): ("Request Tunnel Response", Struct(
        "tunnel_id" / Int16ul, "tunnel_status" / Int8ul, "maximum_incoming_transfer_size" / Int16ul, End)),
    ("server_to_client", 0x01): ("Transfer Data", Struct("tunnel_id" / Int16ul, "data" / HexBytes(cs.GreedyBytes))),
    ("server_to_client", 0x02): ("Transfer Data Error", Struct("tunnel_id" / Int16ul, "transfer_data_status" / Int8ul,
                                                              End)),
}
TRANSFER_DATA_STATUS = {0: "No Such Tunnel", 1: "Wrong Device", 2: "Data Overflow"}
TUNNEL_COMMAND_IDS = {(d, name): cid for (d, cid), (name, _) in _TUNNEL_COMMANDS.items()}

TUNNELING_FRAME = Struct(
    "frame_control" / ZCL_TUNNEL_FRAME_CONTROL,
    "sequence_number" / Int8ul,
    "command_id" / Int8ul,
    "payload" / cs.Switch(lambda c: (c.frame_control.direction, c.command_id),
                          {k: v[1] for k, v in _TUNNEL_COMMANDS.items()},
                          Reject("Tunneling command not modelled (Request Tunnel, Close Tunnel, Transfer Data, Transfer Data Error)")),
)


def decode_tunneling(data: bytes, *, base: int = 0) -> dict:
    """A ZCL frame of the Tunneling cluster -> JSON (+ informational `command_name`)."""
    d = _decode(TUNNELING_FRAME, data, "zcl", base)
    d["command_name"] = _TUNNEL_COMMANDS[(d["frame_control"]["direction"], d["command_id"])][0]
    return d


def encode_tunneling(d: dict) -> bytes:
    d = {k: v for k, v in _clean(d, ()).items() if k != "command_name"}
    return build_value(TUNNELING_FRAME, d, field="zcl")


# GBCS over the tunnel (GBCS 7 / brief section 7): one byte says what the data is
GBCS_TUNNEL_DATA = Struct(
    "kind" / cs.Enum(Int8ul, GET=1, GET_RESPONSE=2, PUT=3),
    "body" / cs.Switch(this.kind, {
        "GET": End,
        "GET_RESPONSE": Struct("remaining" / Int8ul, "message" / HexBytes(cs.GreedyBytes)),
        "PUT": Struct("message" / HexBytes(cs.GreedyBytes)),
    }, Reject("undefined GBCS tunnel header (01 GET, 02 GET-RESPONSE, 03 PUT)")),
)


def decode_gbcs_tunnel(data: bytes, *, base: int = 0) -> dict:
    """Transfer Data `data` -> {"kind": "GET"} | {"kind": "GET_RESPONSE", "remaining", "message"} |
    {"kind": "PUT", "message"} (message: GBCS bytes as hex)."""
    d = _decode(GBCS_TUNNEL_DATA, data, "gbcs_tunnel", base)
    out = {"kind": d["kind"]}
    if d["body"]:
        out.update(d["body"])
    return out


def encode_gbcs_tunnel(d: dict) -> bytes:
    d = _clean(d, ())
    kind = d.get("kind")
    body = None if kind == "GET" else {k: v for k, v in d.items() if k != "kind"}
    return build_value(GBCS_TUNNEL_DATA, {"kind": kind, "body": body}, field="gbcs_tunnel")


# ============================================================================================ whole frames

def decode_frame(data: bytes) -> dict:
    """MAC -> NWK -> APS (-> Tunneling ZCL for SE data frames on cluster 0x0704), each layer parsed over its
    own bytes with its absolute offset, so an error deep inside still points into `data`."""
    data = bytes(data)
    mac = decode_mac(data)
    out = {"mac": mac}
    if mac["frame_control"]["frame_type"] != "data":
        return out
    inner = bytes.fromhex(mac.pop("payload"))
    off = len(data) - 2 - len(inner)
    nwk = decode_nwk(inner, base=off)
    out["nwk"] = nwk
    if nwk["frame_control"]["frame_type"] != "data":
        return out
    off, inner = off + len(inner), bytes.fromhex(nwk.pop("payload"))
    off -= len(inner)
    aps = decode_aps(inner, base=off)
    out["aps"] = aps
    if (aps["frame_control"]["frame_type"] == "data" and aps["cluster_id"] == TUNNELING_CLUSTER
            and aps["profile_id"] == SE_PROFILE and aps["extended"] is None):
        off, inner = off + len(inner), bytes.fromhex(aps.pop("payload"))
        out["zcl"] = decode_tunneling(inner, base=off - len(inner))
    return out


def encode_frame(d: dict) -> bytes:
    """The inverse of `decode_frame`."""
    aps = d.get("aps")
    if aps is not None and "zcl" in d:
        aps = dict(aps, payload=encode_tunneling(d["zcl"]).hex())
    nwk = d.get("nwk")
    if nwk is not None and aps is not None:
        nwk = dict(nwk, payload=encode_aps(aps).hex())
    mac = d["mac"]
    if nwk is not None:
        mac = dict(mac, payload=encode_nwk(nwk).hex())
    return encode_mac(mac)


# ============================================================================================ fragmentation

def _aps_data(counter: int, payload: bytes, *, cluster_id: int, profile_id: int, dest_endpoint: int,
              src_endpoint: int, ack_request: bool, extended: dict | None) -> bytes:
    return encode_aps({
        "frame_control": {"frame_type": "data", "delivery_mode": "unicast", "ack_request": ack_request,
                          "extended_header": extended is not None},
        "dest_endpoint": dest_endpoint, "cluster_id": cluster_id, "profile_id": profile_id,
        "src_endpoint": src_endpoint, "counter": counter, "extended": extended, "payload": payload.hex(),
    })


def fragment(payload: bytes, *, counter: int, cluster_id: int = TUNNELING_CLUSTER, profile_id: int = SE_PROFILE,
             dest_endpoint: int = SE_ENDPOINT, src_endpoint: int = SE_ENDPOINT, ack_request: bool = True,
             max_payload: int = MAX_APS_PAYLOAD) -> list[bytes]:
    """APS data frames carrying `payload`: one plain frame when it fits in `max_payload`, else blocks of at most
    `max_payload` bytes (first block: fragmentation "first", block number = number of blocks)."""
    payload = bytes(payload)
    if not 1 <= max_payload <= 255:
        raise EncodeError(f"max_payload must be 1..255, got {max_payload}", "max_payload")
    common = dict(cluster_id=cluster_id, profile_id=profile_id, dest_endpoint=dest_endpoint,
                  src_endpoint=src_endpoint, ack_request=ack_request)
    if len(payload) <= max_payload:
        return [_aps_data(counter, payload, extended=None, **common)]
    n = math.ceil(len(payload) / max_payload)
    if n > MAX_BLOCKS:
        raise EncodeError(f"{len(payload)} bytes need {n} APS blocks, at most {MAX_BLOCKS}", "payload")
    frames = []
    for i in range(n):
        ext = {"control": {"fragmentation": "first" if i == 0 else "part"}, "block_number": n if i == 0 else i}
        frames.append(_aps_data(counter, payload[i * max_payload:(i + 1) * max_payload], extended=ext, **common))
    return frames


def block_of(aps: dict) -> tuple[int, int | None]:
    """(block index, number of blocks if this frame says it) of a decoded APS data frame; (0, 1) unfragmented."""
    ext = aps.get("extended")
    if ext is None or ext["control"]["fragmentation"] == "none":
        return 0, 1
    if ext["control"]["fragmentation"] == "first":
        return 0, ext["block_number"]
    return ext["block_number"], None


def aps_ack(data_frame: dict) -> bytes:
    """The APS acknowledgement of a decoded APS data frame (endpoints swapped; block + bitfield when fragmented)."""
    block, _ = block_of(data_frame)
    ext = data_frame.get("extended")
    extended = None
    if ext is not None and ext["control"]["fragmentation"] != "none":
        extended = {"control": {"fragmentation": ext["control"]["fragmentation"]}, "block_number": block,
                    "ack_bitfield": 0x01}
    return encode_aps({
        "frame_control": {"frame_type": "ack", "delivery_mode": "unicast", "extended_header": extended is not None},
        "dest_endpoint": data_frame["src_endpoint"], "cluster_id": data_frame["cluster_id"],
        "profile_id": data_frame["profile_id"], "src_endpoint": data_frame["dest_endpoint"],
        "counter": data_frame["counter"], "extended": extended,
    })


@dataclass(frozen=True)
class ReassemblyEvent:
    """What `Reassembler.feed` learnt from one frame: `payload` when a transmission completed, `duplicate` when
    the block was already held (or the transmission already delivered: ack it again, deliver nothing)."""
    payload: bytes | None = None
    duplicate: bool = False


class Reassembler:
    """Sans-IO APS reassembly, per (source, APS counter).

    State machine per key: (absent) --block--> COLLECTING --all blocks--> DONE (payload returned once)
    --`done_ttl` elapsed, or `DONE_PER_SOURCE` newer completions from that source--> (absent);
    COLLECTING --`timeout` without completing--> (absent, dropped). A block arriving for a DONE key is a
    duplicate (the sender missed our ack and retried). Bounding DONE by count as well as time keeps the 8-bit
    APS counter safe when it wraps within `done_ttl`. State is JSON-serialisable (`state`, `from_state`).
    """

    DONE_PER_SOURCE = 16

    def __init__(self, *, timeout: float = 30.0, done_ttl: float = 30.0, max_partial: int = 64,
                 max_sources: int = 1024):
        self.timeout = timeout
        self.done_ttl = done_ttl
        #: Bounds under a flood of never-completed transmissions or of spoofed sources: the oldest partial
        #: transmission is evicted (counted in `evicted`); completions are kept for at most `max_sources` sources.
        self.max_partial, self.max_sources = max_partial, max_sources
        self.evicted = 0
        self.partial: dict[str, dict] = {}     # "src/counter" -> {"n": total|None, "blocks": {i: hex}, "t": first}
        self.done: dict[str, list] = {}        # src -> [[counter, completion time], ...] newest last

    def _finish(self, src: str, counter: int, now: float) -> None:
        recent = self.done.setdefault(src, [])
        recent.append([counter, now])
        del recent[:-self.DONE_PER_SOURCE]
        while len(self.done) > self.max_sources:          # forget the source heard from longest ago
            del self.done[min(self.done, key=lambda s: self.done[s][-1][1])]

    def feed(self, src, aps: dict, now: float) -> ReassemblyEvent:
        """A decoded APS data frame from `src` at `now`."""
        self.expire(now)
        src, counter = str(src), aps["counter"]
        if any(c == counter for c, _ in self.done.get(src, ())):
            return ReassemblyEvent(duplicate=True)
        block, total = block_of(aps)
        payload = bytes.fromhex(aps["payload"])
        if total == 1 and block == 0:
            self._finish(src, counter, now)
            return ReassemblyEvent(payload=payload)
        key = f"{src}/{counter}"
        entry = self.partial.get(key)
        if entry is None:
            while len(self.partial) >= self.max_partial:
                del self.partial[min(self.partial, key=lambda k: self.partial[k]["t"])]
                self.evicted += 1
            entry = self.partial[key] = {"n": None, "blocks": {}, "t": now}
        if total is not None:
            entry["n"] = total
        if str(block) in entry["blocks"]:
            return ReassemblyEvent(duplicate=True)
        entry["blocks"][str(block)] = payload.hex()
        n = entry["n"]
        if n is not None and all(str(i) in entry["blocks"] for i in range(n)):
            del self.partial[key]
            self._finish(src, counter, now)
            return ReassemblyEvent(payload=b"".join(bytes.fromhex(entry["blocks"][str(i)]) for i in range(n)))
        return ReassemblyEvent()

    def expire(self, now: float) -> list[str]:
        """Forget completions older than `done_ttl`; drop transmissions incomplete after `timeout` (returned)."""
        for src in list(self.done):
            self.done[src] = [e for e in self.done[src] if now - e[1] <= self.done_ttl]
            if not self.done[src]:
                del self.done[src]
        dropped = [k for k, e in self.partial.items() if now - e["t"] > self.timeout]
        for k in dropped:
            del self.partial[k]
        return dropped

    @property
    def state(self) -> dict:
        return {"partial": self.partial, "done": self.done}

    @classmethod
    def from_state(cls, state: dict, **kw) -> "Reassembler":
        r = cls(**kw)
        r.partial = {k: dict(v, blocks=dict(v["blocks"])) for k, v in state.get("partial", {}).items()}
        r.done = {k: [list(e) for e in v] for k, v in state.get("done", {}).items()}
        return r
