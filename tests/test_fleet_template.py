"""Installer commissioning (fleet/template.py) and lazily keyed fleet devices (fleet/keys.FleetDeviceKeys): a
stamped premises equals the same premises commissioned through the use cases (shared HAN draws aside), answers
MAC-valid reads, is in the inventory as commissioned, survives a restart; kinds whose stamp cannot match fall
back to the use cases; no X.509 certificate is built on the frame path."""
from __future__ import annotations

from dataclasses import replace

from cryptography.hazmat.primitives import serialization

from firmware_emu.fleet.host import FleetHost, _premises_seed, fleet_status
from firmware_emu.fleet.keys import FleetDeviceKeys, FleetKeys
from firmware_emu.fleet.template import compare_states, settle
from firmware_emu.premises import Premises
from protocols.security.keystore import Keystore, Usage
from protocols.security.pki import PkiIssuer

from test_fleet_host import HeadEnd, config


def installer(tmp_path, premises=60, **host):
    return replace(config(tmp_path, premises=premises, **host), commissioning_method="installer")


def read_all(h, he, indices, now):
    for i in indices:
        eui = he.eui(i, "ESME")
        frame, counter = he.ecs17a(eui)
        out = [o for o in h.handle(frame, now) if o.kind == "response"]
        assert len(out) == 1, (i, out)
        he.check(out[0].frame, eui, counter)
    h.commit()


def test_stamped_premises_equal_protocol_ones_and_answer(tmp_path):
    cfg = installer(tmp_path)
    h = FleetHost(cfg)
    he = HeadEnd(cfg)
    now = h.start_time
    read_all(h, he, range(cfg.premises), now)
    c = h.counters
    assert c.materialised == cfg.premises and c.responses == cfg.premises
    # electricity-only and dual-fuel kinds stamp; the PPMID kind holds its meters' certificates: use cases
    assert set(h._templates) == {"dual_fuel", "electricity_only"}
    assert h._template_off == {"dual_fuel_ppmid"} and c.errors == {"template_mismatch": 1}
    assert c.stamped == cfg.premises - len(h._templates) - sum(
        1 for i in range(cfg.premises) if cfg.kind_of(i).name == "dual_fuel_ppmid")
    # a stamp against the same premises commissioned through the use cases, installed at the same moment
    for kind, tpl in h._templates.items():
        j = next(i for i in range(cfg.premises) if cfg.kind_of(i).name == kind and i != tpl.idx)
        real = h._new_premises(j, cfg.kind_of(j), tpl.installed_at)
        real.commission(tpl.installed_at)
        settle(real, tpl.made_at)
        assert compare_states(h._stamped(j, tpl).state(), real.state()) == []
        stamped = h._stamped(j, tpl).st
        assert stamped["seed"] == _premises_seed(cfg.seed, j) and stamped["install_codes"] == real.st["install_codes"]
    h.close()


def test_inventory_restart_and_counters(tmp_path):
    cfg = installer(tmp_path, premises=12)
    h = FleetHost(cfg)
    he = HeadEnd(cfg)
    now = h.start_time
    read_all(h, he, range(cfg.premises), now)
    status = h.status()
    devices = sum(len(cfg.kind_of(i).device_types) for i in range(cfg.premises))
    assert status["by_state"]["commissioned"] == devices and status["by_state"]["pending"] == 0
    h.close()
    assert fleet_status(cfg)["by_state"]["commissioned"] == devices
    h2 = FleetHost(cfg)                              # restart: stored stamps load and carry on
    read_all(h2, he, range(cfg.premises), now + 60)
    assert h2.counters.materialised == 0 and h2.counters.loads == cfg.premises
    p = h2.premises(3, now + 61)                     # the stored stamp is premises 3's own, not the template's
    assert p.st["seed"] == _premises_seed(cfg.seed, 3) and p.chf_eui == he.eui(3, "CHF")
    assert set(p.st["install_codes"]) == {he.eui(3, t) for t in cfg.kind_of(3).device_types if t not in ("CHF", "GPF")}
    h2.close()


def test_protocol_method_is_the_default_and_unchanged(tmp_path):
    cfg = config(tmp_path, premises=4)
    assert cfg.commissioning_method == "protocol"
    h = FleetHost(cfg)
    he = HeadEnd(cfg)
    read_all(h, he, range(4), h.start_time)
    assert h.counters.stamped == 0 and not h._templates
    h.close()


def test_fleet_device_keys_are_lazy_and_match_the_pki(tmp_path):
    cfg = installer(tmp_path, premises=8)
    h = FleetHost(cfg)
    he = HeadEnd(cfg)
    ks = h.keystore
    read_all(h, he, [i for i in range(8) if cfg.kind_of(i).name != "dual_fuel_ppmid"], h.start_time)
    assert ks.certificates_built == 0                # reads and stamps need no X.509 certificate
    eui = bytes.fromhex(he.eui(1, "ESME"))
    keys = ks.device_keys(eui)
    assert isinstance(keys, FleetDeviceKeys) and keys._v == {}
    ref = Keystore()
    PkiIssuer.load(cfg.pki_dir / "ca", seed=cfg.seed).issue_device(ref, eui)
    der = lambda c: c.public_bytes(serialization.Encoding.DER)        # noqa: E731
    assert keys.ds_certificate == der(ref.entry(eui, Usage.DS).certificate)
    assert keys.ka_certificate == der(ref.entry(eui, Usage.KA).certificate)
    assert keys.ka_private.private_numbers() == ref.ka_private(eui).private_numbers()
    keys.ds_certificate = b"replaced"                # credential use cases replace fields
    assert keys.ds_certificate == b"replaced"
    assert ks.device_keys(bytes.fromhex("90B3D51FEE000001")) is None
    assert isinstance(FleetKeys.from_config(cfg, create=False).keystore.device_keys(eui), FleetDeviceKeys)
    p = h.premises(1, h.start_time)
    assert isinstance(p.devices[he.eui(1, "ESME")].keys, FleetDeviceKeys)
    assert isinstance(Premises.restore(p.state(), ks).devices[he.eui(1, "ESME")].keys, FleetDeviceKeys)
    h.close()
