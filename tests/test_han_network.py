"""The virtual HAN (firmware_emu/han): delivery under loss, ordering, reproducibility, link drop/restore,
install-code join, sleepy polling, fragmentation on air, persistence, and the GBCS tunnel over it.

EUIs follow the RTDS pattern (…A0 ESME, …A1 GSME, …A2 CHF, …A4 PPMID) but are made up; install codes are
random. The RTDS corpus is only read (largest message through the tunnel) and skipped when absent.
"""
from __future__ import annotations

import json
import random

import pytest

from firmware_emu.han.install_code import with_crc
from firmware_emu.han.network import Confirmed, Delivered, DeliveryFailed, HanNetwork, JoinFailed, Joined
from firmware_emu.han.tunnel import Got, Put, TunnelClient, TunnelOpened, TunnelServer
from protocols.zigbee import han

CHF, ESME, GSME, PPMID = "0A0B0C0D0E0F00A2", "0A0B0C0D0E0F00A0", "0A0B0C0D0E0F00A1", "0A0B0C0D0E0F00A4"
CODES = {e: with_crc(random.Random(i).randbytes(16)) for i, e in enumerate((ESME, GSME, PPMID))}


def premises(*, seed: int = 1, loss: float = 0.0, trace: bool = False, poll_interval: float = 5.0, **kw) -> HanNetwork:
    """CHF + ESME (router) + GSME (sleepy) + PPMID (behind the ESME), all joined by t = 1."""
    net = HanNetwork(seed=seed, loss=loss, trace=trace, **kw)
    net.add_coordinator(CHF)
    net.add_node(ESME, role="router", install_code=CODES[ESME])
    net.add_node(GSME, role="sleepy", install_code=CODES[GSME], poll_interval=poll_interval, poll_phase=0.25)
    net.add_node(PPMID, role="end_device", install_code=CODES[PPMID], parent=ESME)
    for eui, code in CODES.items():
        net.allow(eui, code)
    net.join(ESME, 0.0)
    events = net.run_until_idle(0.0)
    net.join(GSME, 0.5)
    net.join(PPMID, 0.5)
    events += net.run_until_idle(0.5)
    assert sorted(e.eui for e in events if isinstance(e, Joined)) == sorted(CODES), events
    return net


def traffic(net: HanNetwork, n: int = 40, t0: float = 10.0) -> dict:
    """n messages of varied sizes on every flow (both directions, every device); returns what was sent."""
    rnd = random.Random(7)
    sent: dict = {}
    for i in range(n):
        for a, b in [(CHF, GSME), (GSME, CHF), (CHF, ESME), (ESME, CHF), (CHF, PPMID), (PPMID, ESME)]:
            payload = rnd.randbytes(rnd.choice((1, 30, 61, 62, 200)))
            net.send(a, b, payload, t0 + i * 0.05)
            sent.setdefault((a, b), []).append(payload)
    return sent


def delivered_by_flow(events) -> dict:
    out: dict = {}
    for e in events:
        if isinstance(e, Delivered):
            out.setdefault((e.src, e.dst), []).append(e.payload)
    return out


@pytest.mark.parametrize("loss", [0.0, 0.05])
def test_delivery_is_complete_and_ordered(loss):
    net = premises(loss=loss, seed=11)
    sent = traffic(net)
    events = net.run_until_idle(10.0)
    assert not [e for e in events if isinstance(e, DeliveryFailed)]
    assert delivered_by_flow(events) == sent
    assert len([e for e in events if isinstance(e, Confirmed)]) == sum(map(len, sent.values()))
    times = [e.time for e in events]
    assert times == sorted(times)


def test_five_percent_loss_really_loses_frames_and_retries():
    net = premises(loss=0.05, seed=2, trace=True)
    traffic(net, n=10)
    net.run_until_idle(10.0)
    outcomes = [t["outcome"] for t in net.trace]
    lost = outcomes.count("lost") + outcomes.count("ack lost")
    assert 0.02 < lost / len(outcomes) < 0.12  # the retries hid real losses
    assert "ack lost" in outcomes and "lost" in outcomes


def test_reproducible_from_the_seed():
    def run(seed):
        net = premises(loss=0.1, seed=seed, trace=True)
        traffic(net, n=10)
        return [e.as_dict() for e in net.run_until_idle(10.0)], net.trace
    assert run(5) == run(5)
    assert run(5)[1] != run(6)[1]


def test_link_drop_then_restore():
    net = premises()
    ok = net.send(CHF, ESME, b"before", 10.0)
    net.drop_link(ESME, PPMID)
    lost = net.send(CHF, PPMID, b"while down", 10.0)
    ev = net.run_until_idle(10.0)
    assert [e.msg_id for e in ev if isinstance(e, Confirmed)] == [ok]  # the other links are unaffected
    failed = [e for e in ev if isinstance(e, DeliveryFailed)]
    assert [e.msg_id for e in failed] == [lost] and "no APS acknowledgement" in failed[0].reason
    assert not [e for e in ev if isinstance(e, Delivered) and e.dst == PPMID]
    net.restore_link(ESME, PPMID)
    again = net.send(CHF, PPMID, b"after", 20.0)
    ev = net.run_until_idle(20.0)
    assert [(e.dst, e.payload, e.msg_id) for e in ev if isinstance(e, Delivered)] == [(PPMID, b"after", again)]


def test_link_restored_within_the_retry_window_still_delivers():
    net = premises(aps_retries=3)
    net.drop_link(CHF, ESME)
    mid = net.send(CHF, ESME, b"x" * 100, 10.0)
    events = net.poll(10.05)  # first try lost on the dropped link
    net.restore_link(CHF, ESME)
    events += net.run_until_idle(10.05)
    assert [e.msg_id for e in events if isinstance(e, Delivered)] == [mid]


def test_duplicated_frames_are_delivered_once():
    net = premises(duplicate=0.5, seed=4)
    sent = traffic(net, n=10)
    assert delivered_by_flow(net.run_until_idle(10.0)) == sent


def test_sleepy_gsme_hears_the_hub_only_when_awake():
    net = premises(poll_interval=30.0)
    net.send(CHF, GSME, b"for the gas meter", 40.0)
    ev = net.run_until_idle(40.0)
    got = [e for e in ev if isinstance(e, Delivered)]
    assert len(got) == 1 and got[0].time >= 60.25  # held until the next poll (phase 0.25 + 2 x 30 s)
    # right after the GSME transmits it is awake: the answer comes at once
    net.send(GSME, CHF, b"GET", 100.0)
    net.send(CHF, GSME, b"GET-RESPONSE", 100.02)
    ev = net.run_until_idle(100.0)
    assert [e.time < 101.0 for e in ev if isinstance(e, Delivered)] == [True, True]


def test_one_kilobyte_message_crosses_as_61_byte_fragments():
    net = premises(loss=0.05, seed=9, trace=True)
    message = random.Random(1).randbytes(1024)
    mid = net.send(CHF, PPMID, message, 10.0)  # two hops, via the ESME
    ev = net.run_until_idle(10.0)
    assert [(e.payload, e.msg_id) for e in ev if isinstance(e, Delivered)] == [(message, mid)]
    blocks = set()
    for t in net.trace:
        if t["outcome"] != "sent":
            continue
        f = han.decode_frame(bytes.fromhex(t["frame"]))
        aps = f.get("aps")
        if aps and aps["frame_control"]["frame_type"] == "data":
            assert len(aps["payload"]) // 2 <= han.MAX_APS_PAYLOAD
            blocks.add(aps["extended"]["block_number"] if aps["extended"]["control"]["fragmentation"] == "part" else 0)
    assert blocks == set(range(17))


def test_join_with_right_and_wrong_install_code():
    decisions = []
    net = HanNetwork(seed=3)
    net.add_coordinator(CHF, on_join=lambda eui, ok, why: decisions.append((eui, ok)))
    good = with_crc(bytes(range(16)))
    net.add_node(ESME, install_code=good)
    net.add_node(GSME, role="sleepy", install_code=with_crc(bytes(range(1, 17))))  # not what the CHF holds
    net.add_node(PPMID, role="end_device", install_code=good)                      # not in the device log
    net.allow(ESME, good)
    net.allow(GSME, good)
    for e in (ESME, GSME, PPMID):
        net.join(e, 0.0)
    ev = {e.eui: e for e in net.run_until_idle(0.0)}
    assert isinstance(ev[ESME], Joined) and net.is_joined(ESME) and net.short_address(ESME) not in (None, 0)
    assert isinstance(ev[GSME], JoinFailed) and "install code" in ev[GSME].reason and not net.is_joined(GSME)
    assert isinstance(ev[PPMID], JoinFailed) and ev[PPMID].reason == "not in the device log"
    assert sorted(decisions) == sorted([(ESME, True), (GSME, True), (PPMID, False)])
    # an unjoined device cannot talk
    mid = net.send(CHF, GSME, b"x", 1.0)
    assert [(type(e), e.msg_id) for e in net.run_until_idle(1.0)] == [(DeliveryFailed, mid)]


def test_join_policy_callback_is_the_device_log():
    log = {ESME: CODES[ESME]}
    net = HanNetwork(seed=3, join_policy=log.get)
    net.add_coordinator(CHF)
    net.add_node(ESME, install_code=CODES[ESME])
    net.add_node(PPMID, role="end_device", install_code=CODES[PPMID], parent=ESME)
    net.join(PPMID, 0.0)
    assert net.run_until_idle(0.0)[0].reason == "parent not joined"
    net.join(ESME, 0.0)
    net.join(PPMID, 1.0)
    ev = net.run_until_idle(0.0)
    assert [type(e) for e in ev] == [Joined, JoinFailed]
    log[PPMID] = CODES[PPMID]  # the CHF adds it to its device log
    net.join(PPMID, 2.0)
    assert [type(e) for e in net.run_until_idle(2.0)] == [Joined]


def test_state_persists_mid_flight():
    def fresh():
        net = premises(loss=0.05, seed=8)
        traffic(net, n=8)
        return net
    straight = fresh()
    expected = [e.as_dict() for e in straight.run_until_idle(10.0)]
    net = fresh()
    first = net.poll(10.2)
    resumed = HanNetwork.from_state(json.loads(json.dumps(net.state)))
    rest = resumed.run_until_idle(10.2)
    assert [e.as_dict() for e in first + rest] == expected


# ============================================================================================ GBCS tunnel

def pump(net: HanNetwork, server: TunnelServer, client: TunnelClient, now: float) -> list:
    """Carry tunnel frames over the network until idle; the tunnel events in order."""
    out = []
    while net.next_due() is not None:
        for e in net.poll(net.next_due()):
            if isinstance(e, Delivered) and e.dst == CHF:
                frames, evs = server.receive(e.src, e.payload, e.time)
                for f in frames:
                    net.send(CHF, e.src, f, e.time)
            elif isinstance(e, Delivered) and e.dst == GSME:
                frames, evs = client.receive(e.payload, e.time)
                for f in frames:
                    net.send(GSME, CHF, f, e.time)
            else:
                evs = [e] if isinstance(e, DeliveryFailed) else []
            out += evs
    return out


def test_gsme_polls_the_hub_through_the_tunnel():
    net = premises(loss=0.05, seed=12)
    server, client = TunnelServer(), TunnelClient(GSME)
    net.send(GSME, CHF, client.open(10.0), 10.0)
    assert [type(e) for e in pump(net, server, client, 10.0)] == [TunnelOpened, TunnelOpened]
    # nothing queued: an empty GET-RESPONSE
    net.send(GSME, CHF, client.get(20.0), 20.0)
    assert pump(net, server, client, 20.0) == [] and client.state["phase"] == "OPEN"
    # three GBCS commands queued (one of 1 KB): one GET fetches them all, the count remaining drives the polls
    commands = [b"\xDD" + random.Random(i).randbytes(n) for i, n in enumerate((40, 1024, 300))]
    for c in commands:
        server.queue(GSME, c)
    net.send(GSME, CHF, client.get(30.0), 30.0)
    got = pump(net, server, client, 30.0)
    assert [(e.message, e.remaining) for e in got] == [(commands[0], 2), (commands[1], 1), (commands[2], 0)]
    assert server.pending(GSME) == 0
    # the GSME PUTs its response
    net.send(GSME, CHF, client.put(b"\xDF" + bytes(500), 40.0), 40.0)
    assert [(type(e), e.message) for e in pump(net, server, client, 40.0)] == [(Put, b"\xDF" + bytes(500))]


def test_transfer_on_unknown_tunnel_closes_the_client():
    server, client = TunnelServer(), TunnelClient(GSME)
    frames, _ = server.receive(GSME, client.open(0.0), 0.0)
    client.receive(frames[0], 0.0)
    server2 = TunnelServer()  # the hub restarted without its tunnel table
    frames, _ = server2.receive(GSME, client.get(1.0), 1.0)
    _, events = client.receive(frames[0], 1.0)
    assert not client.is_open and "status 0" in events[0].reason


def test_largest_rtds_message_crosses_the_tunnel_intact(rtds):
    files = sorted(rtds.rglob("*.HEX"), key=lambda p: p.stat().st_size)
    message = bytes.fromhex(files[-1].read_text().strip())
    assert len(message) > 2 * han.MAX_APS_PAYLOAD
    net = premises(loss=0.05, seed=13)
    server, client = TunnelServer(), TunnelClient(GSME)
    net.send(GSME, CHF, client.open(10.0), 10.0)
    pump(net, server, client, 10.0)
    server.queue(GSME, message)
    net.send(GSME, CHF, client.get(20.0), 20.0)
    got = [e for e in pump(net, server, client, 20.0) if isinstance(e, Got)]
    assert [e.message for e in got] == [message]
