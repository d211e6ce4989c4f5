"""The MQTT WAN adapter against a real mosquitto: topic pair per hub, QoS 1, reconnection, shards, bounds."""
from __future__ import annotations

import asyncio

import aiomqtt
import pytest

from protocols.gbcs.message import decode
from hil.verify import make_verifier

from firmware_emu.fleet.mqtt import MqttHeadEnd, MqttWan, down_topic, up_topic
from firmware_emu.fleet.wan import FrameTooLarge, Origin, WanAdapter, WanError

import mqtt_broker as _broker

# the broker fixtures (tests/mqtt_broker.py), imported rather than registered in conftest
mqtt_broker = _broker.mqtt_broker
own_mqtt_broker = _broker.own_mqtt_broker
free_port = _broker.free_port

T0 = 1420070400.0
HUBS = ["00DB1234567890A1", "00DB1234567890A2", "00DB1234567890A3", "00DB1234567890A4"]
FAST = {"min_backoff": 0.05, "max_backoff": 0.5}


async def until(cond, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        assert loop.time() < end, "condition not reached in time"
        await asyncio.sleep(0.01)


def tagging(name: str, log: list):
    """A handler answering `name:hub:frame`, recording which hubs it served."""
    async def handler(frame: bytes, reply: Origin) -> None:
        log.append((name, reply.hint))
        await reply(b"%s:%s:%s" % (name.encode(), reply.hint.encode(), frame))
    return handler


async def started(*links):
    for link in links:
        await link.start()
    for link in links:
        await link.wait_connected(10)


def test_topics():
    assert down_topic("00db1234567890a1") == "gbcs/00DB1234567890A1/down"
    assert up_topic(bytes.fromhex("00DB1234567890A1"), prefix="x/y") == "x/y/00DB1234567890A1/up"


async def test_a_command_on_down_gets_its_response_on_up(mqtt_broker):
    log = []
    wan = MqttWan(tagging("w", log), mqtt_broker.host, mqtt_broker.port, hubs=HUBS[:2], **FAST)
    head = MqttHeadEnd(mqtt_broker.host, mqtt_broker.port, **FAST)
    assert isinstance(wan, WanAdapter)
    await started(wan, head)
    try:
        assert await head.request(HUBS[0], b"\xDD\x01") == b"w:%s:\xDD\x01" % HUBS[0].encode()
        assert await head.request(HUBS[1].lower(), b"cmd") == b"w:%s:cmd" % HUBS[1].encode()
        # unsolicited alert to one hub's up topic
        assert await wan.send(b"alert!", to=HUBS[1])
        assert await head.recv(timeout=10) == (HUBS[1], b"alert!")
        st = wan.stats()
        assert st["frames_in"] == 2 and st["frames_out"] == 3 and st["connections"] == 1
        assert log == [("w", HUBS[0]), ("w", HUBS[1])]
        with pytest.raises(WanError):
            await wan.send(b"where to?")
        with pytest.raises(FrameTooLarge):
            await wan.send(b"\x00" * 0x10000, to=HUBS[0])
    finally:
        await head.close()
        await wan.close()


async def test_a_real_esme_behind_mqtt(mqtt_broker, own_pki, esme, tmp_path):
    """An ECS17a read published on the hub's down topic comes back on up with a valid MAC."""
    from hil.remote_party import RemoteParty
    from protocols.security.keystore import Role
    from test_wan_tcp import ecs17a

    summary, keystore = own_pki
    no = RemoteParty(keystore, summary.organisations[Role.NETWORK_OPERATOR], counter_store=tmp_path / "c.json",
                     initial_counter=1000)

    async def device(frame: bytes, reply: Origin) -> None:
        assert reply.hint == HUBS[3]
        for out in esme.receive(frame, T0):
            await reply(out.frame)

    wan = MqttWan(device, mqtt_broker.host, mqtt_broker.port, hubs=[HUBS[3]], **FAST)
    head = MqttHeadEnd(mqtt_broker.host, mqtt_broker.port, hubs=[HUBS[3]], **FAST)
    await started(wan, head)
    try:
        response = await head.request(HUBS[3], no.build(ecs17a(no, esme.eui.hex().upper())))
        msg = decode(response)
        assert msg["grouping_header"]["cra_flag"] == "response"
        assert msg["grouping_header"]["originator_counter"] == no.last_counter
        assert make_verifier(keystore)(response, msg)["mac"] == "valid"
    finally:
        await head.close()
        await wan.close()


async def test_broker_restart_the_adapter_reconnects_and_publishes_what_was_queued(own_mqtt_broker):
    broker = own_mqtt_broker
    log = []
    wan = MqttWan(tagging("w", log), broker.host, broker.port, hubs=HUBS[:1], identifier="shard-0",
                  persistent_session=True, **FAST)
    head = MqttHeadEnd(broker.host, broker.port, identifier="head-end", persistent_session=True, **FAST)
    await started(wan, head)
    try:
        assert await head.request(HUBS[0], b"before") == b"w:%s:before" % HUBS[0].encode()

        await asyncio.to_thread(broker.stop)
        await until(lambda: not wan.connected and not head.connected)
        assert await wan.send(b"alert while away", to=HUBS[0])       # queued, not lost
        assert await head.publish(HUBS[0], b"command while away")
        await asyncio.sleep(0.3)                                      # a few failed reconnection attempts
        assert wan.stats()["queued"] == 1 and wan.stats()["connect_failures"] >= 1

        await asyncio.to_thread(broker.start)
        await wan.wait_connected(10)
        await head.wait_connected(10)
        got = {await head.recv(timeout=10), await head.recv(timeout=10)}
        assert got == {(HUBS[0], b"alert while away"), (HUBS[0], b"w:%s:command while away" % HUBS[0].encode())}
        assert await head.request(HUBS[0], b"after") == b"w:%s:after" % HUBS[0].encode()
        # the head end can get the answer before the broker's PUBACK reaches the fleet (QoS 1): the fleet is
        # then still "publishing" it for a moment
        await until(lambda: wan.stats()["queued"] == 0)
        st = wan.stats()
        assert st["reconnects"] == 1 and st["disconnects"] == 1 and st["queued"] == 0
    finally:
        await head.close()
        await wan.close()


async def test_two_shards_on_one_broker_answer_only_their_hubs(mqtt_broker):
    log = []
    a = MqttWan(tagging("a", log), mqtt_broker.host, mqtt_broker.port, hubs=HUBS[:2], **FAST)
    b = MqttWan(tagging("b", log), mqtt_broker.host, mqtt_broker.port, hubs=HUBS[2:], **FAST)
    head = MqttHeadEnd(mqtt_broker.host, mqtt_broker.port, **FAST)
    await started(a, b, head)
    try:
        answers = await asyncio.gather(*(head.request(h, b"read") for h in HUBS))
        assert answers == [b"a:%s:read" % HUBS[0].encode(), b"a:%s:read" % HUBS[1].encode(),
                           b"b:%s:read" % HUBS[2].encode(), b"b:%s:read" % HUBS[3].encode()]
        with pytest.raises(asyncio.TimeoutError):          # nobody answers twice
            await head.recv(timeout=0.3)
        assert sorted(log) == [("a", HUBS[0]), ("a", HUBS[1]), ("b", HUBS[2]), ("b", HUBS[3])]
        assert a.stats()["not_ours"] == b.stats()["not_ours"] == 0   # the broker did the filtering
    finally:
        for link in (head, a, b):
            await link.close()


async def test_wildcard_shards_filter_locally(mqtt_broker):
    log = []
    even = lambda hub: int(hub, 16) % 2 == 0  # noqa: E731
    a = MqttWan(tagging("a", log), mqtt_broker.host, mqtt_broker.port, serves=even, prefix="wild", **FAST)
    b = MqttWan(tagging("b", log), mqtt_broker.host, mqtt_broker.port, serves=lambda h: not even(h),
                prefix="wild", **FAST)
    head = MqttHeadEnd(mqtt_broker.host, mqtt_broker.port, prefix="wild", **FAST)
    await started(a, b, head)
    try:
        for h in HUBS:
            await head.request(h, b"x")
        assert sorted(log) == [("a", HUBS[1]), ("a", HUBS[3]), ("b", HUBS[0]), ("b", HUBS[2])]
        assert a.stats()["not_ours"] == b.stats()["not_ours"] == 2
    finally:
        for link in (head, a, b):
            await link.close()


async def test_bad_topics_and_payloads_are_counted_not_served(mqtt_broker):
    log = []
    wan = MqttWan(tagging("w", log), mqtt_broker.host, mqtt_broker.port, prefix="odd", max_payload=16, **FAST)
    await started(wan)
    try:
        async with aiomqtt.Client(mqtt_broker.host, mqtt_broker.port) as raw:
            await raw.publish("odd/not-a-hub/down", b"x", qos=1)
            await raw.publish(f"odd/{HUBS[0]}/down", b"", qos=1)
            await raw.publish(f"odd/{HUBS[0]}/down", b"\x00" * 17, qos=1)
            await raw.publish(f"odd/{HUBS[0]}/down", b"fine", qos=1)
        await until(lambda: wan.stats()["frames_in"] == 1)
        st = wan.stats()
        assert st["framing_errors"] == 3 and st["oversize"] == 1
        assert log == [("w", HUBS[0])]
    finally:
        await wan.close()


async def test_outbound_queue_is_bounded_while_the_broker_is_away():
    wan = MqttWan(tagging("w", []), "127.0.0.1", free_port(), hubs=HUBS[:1], out_queue=2, **FAST)
    await wan.start()
    try:
        assert await wan.send(b"1", to=HUBS[0]) and await wan.send(b"2", to=HUBS[0])
        assert not await wan.send(b"3", to=HUBS[0])
        await until(lambda: wan.stats()["connect_failures"] >= 2)
        st = wan.stats()
        assert st["queue_drops"] == 1 and st["queued"] == 2 and st["connections"] == 0
    finally:
        await wan.close(grace=0.1)


async def test_close_publishes_the_answers_of_commands_being_handled(mqtt_broker):
    async def slow(frame, reply):
        await asyncio.sleep(0.2)
        await reply(frame + b" done")

    wan = MqttWan(slow, mqtt_broker.host, mqtt_broker.port, hubs=HUBS[:1], **FAST)
    head = MqttHeadEnd(mqtt_broker.host, mqtt_broker.port, hubs=HUBS[:1], **FAST)
    await started(wan, head)
    try:
        await head.publish(HUBS[0], b"job")
        await until(lambda: wan.stats()["frames_in"] == 1)
        await wan.close(grace=3)
        assert await head.recv(timeout=10) == (HUBS[0], b"job done")
        assert not wan.connected
    finally:
        await head.close()
        await wan.close()
