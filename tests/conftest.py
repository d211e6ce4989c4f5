"""Shared fixtures. RTDS data is read, never copied: `--rtds DIR` (or GBCS_EMU_RTDS) names the folder holding
`RTDS-4.5.0` and `keystore`; it defaults to ../shared/rtds beside the checkout when that exists."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

DEFAULT_RTDS = Path(__file__).resolve().parents[2] / "shared" / "rtds"


def pytest_addoption(parser):
    parser.addoption("--rtds", action="store", default=os.environ.get("GBCS_EMU_RTDS"),
                     help="folder holding the DCC RTDS (RTDS-4.5.0/ and keystore/); default ../shared/rtds")


def _rtds_root(config) -> Path | None:
    opt = config.getoption("--rtds")
    root = Path(opt) if opt else DEFAULT_RTDS
    return root if root.is_dir() else None


@pytest.fixture(scope="session")
def rtds_dir(request) -> Path:
    """Root holding RTDS-4.5.0/ and keystore/ (skips when absent)."""
    root = _rtds_root(request.config)
    if root is None:
        pytest.skip("RTDS not available (pass --rtds DIR)")
    return root


@pytest.fixture(scope="session")
def rtds(rtds_dir) -> Path:
    """The RTDS message folder (RTDS-4.5.0) below the RTDS root."""
    return rtds_dir / "RTDS-4.5.0"


@pytest.fixture(scope="session")
def rtds_messages(rtds_dir) -> list[tuple[Path, bytes]]:
    """Every RTDS message below the RTDS root: (path, bytes)."""
    out = []
    for p in sorted(rtds_dir.rglob("*.HEX")):
        out.append((p, bytes.fromhex(p.read_text().strip())))
    if not out:
        pytest.skip("no .HEX files under the RTDS folder")
    return out


@pytest.fixture(scope="session")
def keystore_dir(rtds_dir) -> Path:
    ks = rtds_dir / "keystore"
    if not ks.is_dir():
        pytest.skip("RTDS keystore not available")
    return ks


# CI runs a fixed, reproducible set of hypothesis examples (a red CI must be reproducible from its log);
# developers get fresh random examples on every run. GBCS_EMU_HYPOTHESIS=long widens the search.
from hypothesis import settings  # noqa: E402

settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("long", max_examples=20000, deadline=None)
if os.environ.get("GBCS_EMU_HYPOTHESIS"):
    settings.load_profile(os.environ["GBCS_EMU_HYPOTHESIS"])
elif os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture(scope="session")
def own_pki(tmp_path_factory):
    """A test PKI of our own (every organisation role, two devices with their private keys): (summary, Keystore).
    Session-wide: devices built on it never write to it."""
    from protocols.security.keystore import Keystore
    from protocols.security.pki import init_pki
    d = tmp_path_factory.mktemp("own-pki")
    summary = init_pki(d, devices=2, seed=23)
    return summary, Keystore(d)


@pytest.fixture
def ks(own_pki):
    """The keystore of `own_pki`."""
    return own_pki[1]


@pytest.fixture
def esme(own_pki):
    """A factory-fresh ESME (the first device of `own_pki`) at 2015-01-01T00:00:00Z, trusting every role."""
    from firmware_emu.core.provisioning import default_anchors, device_keys
    from firmware_emu.esme.device import Esme
    summary, keystore = own_pki
    return Esme(device_keys(keystore, summary.devices[0]), anchors=default_anchors(keystore), now=1420070400.0)


@pytest.fixture
def supplier(own_pki, tmp_path):
    """The supplier of `own_pki` as a head end, its counters starting at 1000 in a per-test file."""
    from hil.remote_party import RemoteParty
    from protocols.security.keystore import Role
    summary, keystore = own_pki
    return RemoteParty(keystore, summary.organisations[Role.SUPPLIER], counter_store=tmp_path / "counters.json",
                       initial_counter=1000)
