"""The GBCS tunnel over the ZSE Tunneling cluster (0x0704): how GBCS messages cross the HAN to a sleepy GSME.

The GSME is the tunnel client, the hub (GPF side of the CHF) the server. The hub never pushes: it queues the
GBCS messages meant for the device, and the device, when it wakes, asks (brief section 7, HIL notes)::

    GSME                                              hub
     | Request Tunnel (protocol 200)         ---->     |  OPEN: a tunnel id for this EUI
     |                                  <----  Request Tunnel Response (Success, tunnel id)
     | Transfer Data 01 GET                  ---->     |
     |        <----  Transfer Data 02 GET-RESPONSE remaining(1) <GBCS message or nothing>
     | (remaining > 0: GET again at once)              |
     | Transfer Data 03 PUT <GBCS response/alert> -->  |  -> Put event (the hub forwards it to the WAN)

Both ends are sans-IO: `receive(zcl_bytes, now)` returns (frames to send back, events); the frames are ZCL
Tunneling frames, carried by `HanNetwork.send(..., cluster=0x0704)` and fragmented there into 61-byte APS
blocks, so a 1 KB GBCS message crosses as one Transfer Data. Client state machine::

    CLOSED --open()--> OPENING --Response(Success)--> OPEN --get()--> WAITING --GET-RESPONSE n>0--> WAITING
                                 --Response(other)--> CLOSED         --GET-RESPONSE n=0--> OPEN
    any state --Transfer Data Error(No Such Tunnel)--> CLOSED (the hub lost the tunnel: open again)

State of both ends is a JSON dict (`state`), so it persists with the device.
"""
from __future__ import annotations

from dataclasses import dataclass

from protocols.errors import DecodeError
from protocols.zigbee import han

__all__ = ["TunnelServer", "TunnelClient", "TunnelOpened", "TunnelClosed", "Put", "Got", "TunnelError",
           "GBCS_TUNNEL_PROTOCOL", "MAX_TRANSFER"]

GBCS_TUNNEL_PROTOCOL = han.GBCS_TUNNEL_PROTOCOL
MANUFACTURER_CODE = 0xFFFF           # the GB tunnel protocol is not tied to one manufacturer
MAX_TRANSFER = 2048                  # bytes of tunnelled data either end accepts in one Transfer Data
NO_SUCH_TUNNEL, DATA_OVERFLOW = 0, 2
STATUS_SUCCESS, STATUS_PROTOCOL_NOT_SUPPORTED = 0, 3


@dataclass(frozen=True)
class TunnelOpened:
    eui: str
    tunnel_id: int
    time: float


@dataclass(frozen=True)
class TunnelClosed:
    eui: str
    time: float
    reason: str


@dataclass(frozen=True)
class Put:
    """A GBCS message the device sent up the tunnel (its response or alert), at the hub."""
    eui: str
    message: bytes
    time: float


@dataclass(frozen=True)
class Got:
    """A GBCS message the hub handed down (at the device); `remaining` more are waiting."""
    message: bytes
    remaining: int
    time: float


@dataclass(frozen=True)
class TunnelError:
    eui: str
    time: float
    reason: str


def _frame(direction: str, seq: int, command: str, payload: dict) -> bytes:
    return han.encode_tunneling({
        "frame_control": {"frame_type": "cluster", "direction": direction, "disable_default_response": True},
        "sequence_number": seq & 0xFF, "command_id": han.TUNNEL_COMMAND_IDS[(direction, command)],
        "payload": payload})


class TunnelServer:
    """The hub's end: one tunnel per device EUI, a queue of GBCS messages per device."""

    def __init__(self, state: dict | None = None, *, max_transfer: int = MAX_TRANSFER):
        self.state = state if state is not None else {"tunnels": {}, "next_id": 1, "queues": {}, "seq": 0}
        self.max_transfer = max_transfer

    def queue(self, eui: str, message: bytes) -> None:
        """A GBCS message for the device; it leaves at the device's next GET."""
        self.state["queues"].setdefault(eui.upper(), []).append(bytes(message).hex().upper())

    def pending(self, eui: str) -> int:
        return len(self.state["queues"].get(eui.upper(), []))

    def _send(self, command: str, payload: dict) -> bytes:
        self.state["seq"] = (self.state["seq"] + 1) & 0xFF
        return _frame("server_to_client", self.state["seq"], command, payload)

    def receive(self, eui: str, zcl: bytes, now: float) -> tuple[list[bytes], list]:
        """A Tunneling frame from device `eui`: (frames back to it, events)."""
        eui = eui.upper()
        try:
            f = han.decode_tunneling(zcl)
        except DecodeError as e:
            return [], [TunnelError(eui, now, f"malformed Tunneling frame: {e}")]
        if f["frame_control"]["direction"] != "client_to_server":
            return [], [TunnelError(eui, now, "server-to-client frame sent to the hub")]
        name, p = f["command_name"], f["payload"]
        if name == "Request Tunnel":
            if p["protocol_id"] != GBCS_TUNNEL_PROTOCOL:
                return [self._send("Request Tunnel Response", {"tunnel_id": 0xFFFF,
                        "tunnel_status": STATUS_PROTOCOL_NOT_SUPPORTED, "maximum_incoming_transfer_size": 0})], []
            tid = self.state["tunnels"].get(eui)
            if tid is None:
                tid = self.state["next_id"]
                self.state["next_id"] = tid % 0xFFFE + 1
                self.state["tunnels"][eui] = tid
            return [self._send("Request Tunnel Response", {"tunnel_id": tid, "tunnel_status": STATUS_SUCCESS,
                                                           "maximum_incoming_transfer_size": self.max_transfer})], \
                [TunnelOpened(eui, tid, now)]
        if self.state["tunnels"].get(eui) != p["tunnel_id"]:
            if name == "Transfer Data":
                return [self._send("Transfer Data Error", {"tunnel_id": p["tunnel_id"],
                                                           "transfer_data_status": NO_SUCH_TUNNEL})], []
            return [], [TunnelError(eui, now, f"{name} on unknown tunnel {p['tunnel_id']}")]
        if name == "Close Tunnel":
            del self.state["tunnels"][eui]
            return [], [TunnelClosed(eui, now, "closed by the device")]
        if name == "Transfer Data Error":
            return [], [TunnelError(eui, now, f"device reports transfer data status {p['transfer_data_status']}")]
        if len(p["data"]) // 2 > self.max_transfer:
            return [self._send("Transfer Data Error", {"tunnel_id": p["tunnel_id"],
                                                       "transfer_data_status": DATA_OVERFLOW})], []
        try:
            data = han.decode_gbcs_tunnel(bytes.fromhex(p["data"]))
        except DecodeError as e:
            return [], [TunnelError(eui, now, f"malformed GBCS tunnel data: {e}")]
        if data["kind"] == "PUT":
            return [], [Put(eui, bytes.fromhex(data["message"]), now)]
        if data["kind"] == "GET":
            q = self.state["queues"].get(eui, [])
            message = q.pop(0) if q else ""
            body = han.encode_gbcs_tunnel({"kind": "GET_RESPONSE", "remaining": min(len(q), 255), "message": message})
            return [self._send("Transfer Data", {"tunnel_id": p["tunnel_id"], "data": body.hex()})], []
        return [], [TunnelError(eui, now, "GET-RESPONSE sent to the hub")]


class TunnelClient:
    """The device's end (GSME): opens the tunnel, polls with GET, PUTs its responses and alerts."""

    def __init__(self, eui: str, state: dict | None = None):
        self.eui = eui.upper()
        self.state = state if state is not None else {"phase": "CLOSED", "tunnel_id": None, "seq": 0,
                                                      "max_transfer": None}

    def _send(self, command: str, payload: dict) -> bytes:
        self.state["seq"] = (self.state["seq"] + 1) & 0xFF
        return _frame("client_to_server", self.state["seq"], command, payload)

    @property
    def is_open(self) -> bool:
        return self.state["phase"] in ("OPEN", "WAITING")

    def open(self, now: float) -> bytes:
        self.state["phase"] = "OPENING"
        return self._send("Request Tunnel", {"protocol_id": GBCS_TUNNEL_PROTOCOL,
                                             "manufacturer_code": MANUFACTURER_CODE, "flow_control_support": 0,
                                             "maximum_incoming_transfer_size": MAX_TRANSFER})

    def _data(self, body: bytes) -> bytes:
        if not self.is_open:
            raise RuntimeError("the tunnel is not open: call open() and wait for the response")
        return self._send("Transfer Data", {"tunnel_id": self.state["tunnel_id"], "data": body.hex()})

    def get(self, now: float) -> bytes:
        """Poll the hub: "anything for me?"."""
        frame = self._data(han.encode_gbcs_tunnel({"kind": "GET"}))
        self.state["phase"] = "WAITING"
        return frame

    def put(self, message: bytes, now: float) -> bytes:
        """Send a GBCS message (response or alert) up to the hub."""
        limit = self.state["max_transfer"]
        if limit is not None and len(message) + 1 > limit:
            raise ValueError(f"{len(message)} bytes exceed the hub's maximum incoming transfer size {limit}")
        return self._data(han.encode_gbcs_tunnel({"kind": "PUT", "message": bytes(message).hex()}))

    def receive(self, zcl: bytes, now: float) -> tuple[list[bytes], list]:
        """A Tunneling frame from the hub: (frames back, events). A GET-RESPONSE announcing more messages
        answers with the next GET at once."""
        try:
            f = han.decode_tunneling(zcl)
        except DecodeError as e:
            return [], [TunnelError(self.eui, now, f"malformed Tunneling frame: {e}")]
        if f["frame_control"]["direction"] != "server_to_client":
            return [], [TunnelError(self.eui, now, "client-to-server frame sent to the device")]
        name, p = f["command_name"], f["payload"]
        if name == "Request Tunnel Response":
            if p["tunnel_status"] != STATUS_SUCCESS:
                self.state.update(phase="CLOSED", tunnel_id=None)
                return [], [TunnelClosed(self.eui, now, f"tunnel refused (status {p['tunnel_status']})")]
            self.state.update(phase="OPEN", tunnel_id=p["tunnel_id"], max_transfer=p["maximum_incoming_transfer_size"])
            return [], [TunnelOpened(self.eui, p["tunnel_id"], now)]
        if name == "Transfer Data Error":
            self.state.update(phase="CLOSED", tunnel_id=None)
            return [], [TunnelClosed(self.eui, now, f"hub reports transfer data status {p['transfer_data_status']}")]
        if name != "Transfer Data" or p["tunnel_id"] != self.state["tunnel_id"]:
            return [], [TunnelError(self.eui, now, f"unexpected {name} on tunnel {p.get('tunnel_id')}")]
        try:
            data = han.decode_gbcs_tunnel(bytes.fromhex(p["data"]))
        except DecodeError as e:
            return [], [TunnelError(self.eui, now, f"malformed GBCS tunnel data: {e}")]
        if data["kind"] != "GET_RESPONSE":
            return [], [TunnelError(self.eui, now, f"{data['kind']} sent to the device")]
        events = [Got(bytes.fromhex(data["message"]), data["remaining"], now)] if data["message"] else []
        if data["remaining"] > 0:
            return [self.get(now)], events
        self.state["phase"] = "OPEN"
        return [], events
