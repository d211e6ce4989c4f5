"""The SMI lifecycle: the transition table, the SQLite inventory store, its counts, audit trail and exports."""
from __future__ import annotations

import io
import itertools
import json
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_emu.fleet.inventory import (
    RESUME_PREVIOUS, TRANSITIONS, DeviceRecord, DuplicateDevice, IllegalTransition, InventoryError,
    InventoryPolicy, InventoryStore, SmiEvent, SmiState, UnknownDevice, allowed_events, event_for_use_case,
)

T0 = 1420070400.0
EUI = "00DB1234567890A0"
GAS = "00DB1234567890B0"


def record_in(state: SmiState, previous: SmiState = SmiState.COMMISSIONED) -> DeviceRecord:
    return DeviceRecord(EUI, "ESME", state, T0, previous if state is SmiState.SUSPENDED else None)


@pytest.fixture
def store(tmp_path):
    with InventoryStore(str(tmp_path / "fleet.sqlite")) as s:
        yield s


# -- the table -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("pair", list(TRANSITIONS), ids=lambda p: f"{p[0].value}-{p[1].value}")
def test_every_allowed_transition_reaches_its_target(pair):
    state, event = pair
    r = record_in(state)
    t = r.apply(event, T0 + 5, actor="test")
    expected = TRANSITIONS[pair]
    if expected is RESUME_PREVIOUS:
        expected = SmiState.COMMISSIONED
    assert (t.source, t.event, t.target) == (state, event, expected)
    assert r.state is expected and r.since == T0 + 5
    assert (r.previous is not None) == (r.state is SmiState.SUSPENDED)


@pytest.mark.parametrize("pair", [p for p in itertools.product(SmiState, SmiEvent) if p not in TRANSITIONS],
                         ids=lambda p: f"{p[0].value}-{p[1].value}")
def test_every_other_pair_raises_naming_state_and_event(pair):
    state, event = pair
    r = record_in(state)
    before = r.as_dict()
    with pytest.raises(IllegalTransition) as info:
        r.apply(event, T0 + 5)
    assert info.value.state is state and info.value.event is event
    assert repr(state.value) in str(info.value) and repr(event.value) in str(info.value)
    assert r.as_dict() == before


def test_resume_returns_to_the_state_suspended_from():
    for origin in (SmiState.INSTALLED_NOT_COMMISSIONED, SmiState.COMMISSIONED):
        r = record_in(origin)
        r.apply("suspend", T0)
        assert r.state is SmiState.SUSPENDED and r.previous is origin
        r.apply("resume", T0 + 1)
        assert r.state is origin and r.previous is None


def test_the_happy_path_and_the_final_state():
    r = DeviceRecord(EUI, "ESME", since=T0)
    for ev in ("ccs01", "cs03", "ecs70", "cs04"):
        r.apply(ev, T0)
    assert r.state is SmiState.DECOMMISSIONED
    assert allowed_events(SmiState.DECOMMISSIONED) == []
    with pytest.raises(IllegalTransition, match="none \\(final\\)"):
        r.apply("reenrol", T0)


def test_use_cases_map_to_events():
    assert event_for_use_case("CCS01") is SmiEvent.CCS01
    assert event_for_use_case("cs03b") is SmiEvent.CS03
    assert event_for_use_case("CS04AC") is SmiEvent.CS04
    assert event_for_use_case(0x0062) is SmiEvent.ECS70   # ECS70 by message code
    assert event_for_use_case("GCS28") is SmiEvent.GCS28
    assert event_for_use_case("ECS17a") is None


def test_unknown_names_are_typed_errors():
    with pytest.raises(InventoryError, match="unknown inventory event"):
        record_in(SmiState.PENDING).apply("explode", T0)
    with pytest.raises(InventoryError, match="unknown SMI state"):
        DeviceRecord.from_dict({"eui": EUI, "device_type": "ESME", "state": "lost"})
    with pytest.raises(InventoryError, match="previous"):
        DeviceRecord.from_dict({"eui": EUI, "device_type": "ESME", "state": "suspended"})


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(list(SmiEvent)), max_size=40))
def test_random_event_sequences_keep_the_machine_consistent(events):
    r = DeviceRecord(EUI, "GSME", since=T0)
    now = T0
    for ev in events:
        now += 1
        before = r.as_dict()
        if (r.state, ev) in TRANSITIONS:
            t = r.apply(ev, now)
            assert t.source.value == before["state"] and t.target is r.state and r.since == now
        else:
            with pytest.raises(IllegalTransition):
                r.apply(ev, now)
            assert r.as_dict() == before
        # invariants: a suspension always knows where to go back to, nothing else carries `previous`,
        # and the record survives its JSON form
        assert (r.previous is not None) == (r.state is SmiState.SUSPENDED)
        assert r.previous in (None, SmiState.INSTALLED_NOT_COMMISSIONED, SmiState.COMMISSIONED)
        assert DeviceRecord.from_dict(json.loads(json.dumps(r.as_dict()))) == r


# -- the store -----------------------------------------------------------------------------------------------------

def test_store_persists_transitions_and_the_audit_trail(tmp_path):
    path = str(tmp_path / "fleet.sqlite")
    with InventoryStore(path) as s:
        s.enrol(EUI, "ESME", T0, actor="fleet")
        s.apply_use_case(EUI, "CCS01", T0 + 1)
        s.apply_use_case(EUI, "CS03B", T0 + 2)
        s.apply(EUI, "commission", T0 + 3, actor="operator")
        assert s.apply_use_case(EUI, "ECS17a", T0 + 4) is None
    with InventoryStore(path) as s:   # a restart carries on
        assert s.get(EUI).state is SmiState.COMMISSIONED and s.get(EUI).since == T0 + 3
        trail = s.history(EUI)
        assert [(t.source and t.source.value, t.target.value) for t in trail] == [
            (None, "pending"), ("pending", "whitelisted"), ("whitelisted", "installed_not_commissioned"),
            ("installed_not_commissioned", "commissioned")]
        assert trail[1].detail == "CCS01" and trail[3].actor == "operator"
        assert [t.target for t in s.history(EUI, limit=1)] == [SmiState.COMMISSIONED]
        assert s.journal_mode() == "wal"


def test_store_refuses_illegal_and_unknown_and_rolls_back_a_batch(store):
    store.enrol_many([(EUI, "ESME"), (GAS, "GSME")], T0)
    with pytest.raises(DuplicateDevice):
        store.enrol(EUI, "ESME", T0)
    with pytest.raises(UnknownDevice):
        store.apply("00DB000000000001", "ccs01", T0)
    with pytest.raises(IllegalTransition):
        store.apply_many([(EUI, "ccs01"), (GAS, "cs03")], T0 + 1)
    # all or none: the legal first half did not stick, and no audit row was written
    assert store.get(EUI).state is SmiState.PENDING
    assert len(store.history(EUI)) == 1
    assert len(store) == 2


def test_pending_devices_expire_after_the_policy_ttl(tmp_path):
    with InventoryStore(str(tmp_path / "i.sqlite"), policy=InventoryPolicy(pending_ttl=3600)) as s:
        s.enrol_many([(EUI, "ESME"), (GAS, "GSME")], T0)
        s.apply(GAS, "ccs01", T0 + 10)               # whitelisted in time: no deadline any more
        assert s.get(GAS).expires_at is None
        assert s.due(T0 + 3599) == [] and s.expire_due(T0 + 3599) == []
        assert s.due(T0 + 3600) == [EUI]
        [t] = s.expire_due(T0 + 3600)
        assert (t.event, t.target, t.actor) == (SmiEvent.EXPIRE, SmiState.WITHDRAWN, "time")
        assert s.due(T0 + 10 ** 6) == []
        s.apply(EUI, "reenrol", T0 + 4000)           # back to pending: a new deadline
        assert s.get(EUI).expires_at == T0 + 4000 + 3600


_EUIS = [f"00DB00000000{i:04X}" for i in range(12)]


@settings(max_examples=60, deadline=None)
@given(types=st.lists(st.sampled_from(["ESME", "GSME", "CHF", "GPF", "PPMID"]), min_size=len(_EUIS),
                      max_size=len(_EUIS)),
       moves=st.lists(st.tuples(st.sampled_from(_EUIS), st.sampled_from(list(SmiEvent))), max_size=60))
def test_store_counts_match_a_python_recount(types, moves):
    with InventoryStore(":memory:") as s:
        s.enrol_many(list(zip(_EUIS, types)), T0)
        for i, (eui, ev) in enumerate(moves):
            try:
                s.apply(eui, ev, T0 + i)
            except IllegalTransition:
                pass
        records = list(s.records(page=5))            # pages smaller than the fleet: pagination is exercised
        assert [r.eui for r in records] == sorted(_EUIS)
        status = s.status()
        assert status.total == len(_EUIS) == sum(status.by_state.values())
        assert status.by_state == {st_.value: Counter(r.state.value for r in records)[st_.value] for st_ in SmiState}
        recount: dict[str, Counter] = {}
        for r in records:
            recount.setdefault(r.device_type, Counter())[r.state.value] += 1
        assert status.by_type == {k: dict(v) for k, v in recount.items()}
        for state in SmiState:
            assert s.count(state) == status.by_state[state.value]
        assert s.count(device_type="ESME") == types.count("ESME")
        assert json.loads(json.dumps(status.as_dict())) == status.as_dict()


def _fleet(store):
    euis = [f"00DB00000001{i:04X}" for i in range(30)]
    store.enrol_many([(e, ("ESME", "GSME", "CHF")[i % 3]) for i, e in enumerate(euis)], T0)
    script = ["ccs01", "cs03", "ecs70", "suspend", "withdraw"]
    for i, e in enumerate(euis):
        for ev in script[: i % (len(script) + 1)]:
            store.apply(e, ev, T0 + i + 0.25)
    return euis


@pytest.mark.parametrize("kind", ["csv", "json"])
def test_export_round_trip(store, kind):
    _fleet(store)
    text = store.export_text(kind)
    if kind == "json":
        assert json.loads(text)["format"] == "gbcs-emu inventory 1"
    else:
        assert text.splitlines()[0] == "eui,device_type,state,since,previous,expires_at"
    with InventoryStore(":memory:") as other:
        n = (other.import_csv if kind == "csv" else other.import_json)(io.StringIO(text), batch=7)
        assert n == len(store) == 30
        assert list(other.records()) == list(store.records())
        assert other.status() == store.status()
        assert other.export_text(kind) == text


def test_import_rejects_foreign_documents(store):
    with pytest.raises(InventoryError):
        store.import_json(io.StringIO('{"devices": []}'))
    with pytest.raises(InventoryError):
        store.import_json(io.StringIO("not json"))


def _msg(code: int, recipient: str, payload: dict) -> dict:
    return {"grouping_header": {"cra_flag": "command", "recipient": recipient,
                                "other_information": {"message_code": f"0x{code:04X}"}}, "payload": payload}


CHF = "00DB1234567890A2"


def test_observe_applies_accepted_commands_to_the_devices_they_concern(store):
    store.enrol_many([(EUI, "ESME"), (GAS, "PPMID")], T0)
    ccs01 = _msg(0x0001, CHF, {"dlms": {"access_request": {"data": [
        {"type": "structure", "value": [{"type": "octet-string", "value": EUI.lower()}, {"type": "enum", "value": 1}]},
        {"type": "long-unsigned", "value": 90}]}}})
    [t] = store.observe(ccs01, T0 + 1, actor="CHF")
    assert (t.eui, t.target, t.detail) == (EUI, SmiState.WHITELISTED, "CCS01")
    store.apply(GAS, "ccs01", T0 + 1)
    # CS03B to the ESME joining the PPMID: both are whitelisted, both are installed
    cs03b = _msg(0x000E, EUI, {"asn1": {"value": {"method": 2, "other_device": GAS, "device_type": "PPMID"}}})
    assert [(t.eui, t.target) for t in store.observe(cs03b, T0 + 2)] == [
        (GAS, SmiState.INSTALLED_NOT_COMMISSIONED), (EUI, SmiState.INSTALLED_NOT_COMMISSIONED)]
    ecs70 = _msg(0x0062, EUI, {"dlms": {}})
    assert [t.target for t in store.observe(ecs70, T0 + 3)] == [SmiState.COMMISSIONED]
    assert store.observe(ecs70, T0 + 4) == []        # a later clock setting leaves a commissioned ESME alone
    assert store.observe(_msg(0x0026, EUI, {"dlms": {}}), T0 + 5) == []   # ECS17a means nothing here
    ccs02 = _msg(0x0002, CHF, {"dlms": {"access_request": {"data": [{"type": "octet-string", "value": EUI}]}}})
    assert [t.target for t in store.observe(ccs02, T0 + 6)] == [SmiState.DECOMMISSIONED]
    assert store.observe(_msg(0x0001, CHF, {"dlms": {}}), T0 + 7) == []   # no device named: nothing


def test_inventory_shares_the_device_state_file(tmp_path):
    from firmware_emu.core.store import StateStore
    path = str(tmp_path / "fleet.sqlite")
    with StateStore(path) as states, InventoryStore(path) as inv:
        states.save(EUI, "ESME", {"device_type": "ESME", "counters": {}})
        inv.enrol(EUI, "ESME", T0)
        assert states.load(EUI)["device_type"] == "ESME" and inv.get(EUI).state is SmiState.PENDING
