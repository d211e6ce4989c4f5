"""`gbcs-emu keys …`: make and extend a test PKI (see protocols/security/pki.py for what it contains).

The main CLI adds this group with `from firmware_emu.keys_cli import keys`. Output names files, EUIs and roles,
never key material.
"""
from __future__ import annotations

from pathlib import Path

import click

from protocols.security.errors import SecurityError
from protocols.security.eui import as_eui, eui_hex
from protocols.security.keystore import Role
from protocols.security.pki import add_devices, default_device_eui, init_pki

__all__ = ["keys"]


def _parse_euis(values: tuple[str, ...]) -> list[bytes]:
    try:
        return [as_eui(v) for v in values]
    except SecurityError as e:
        raise click.BadParameter(str(e), param_hint="--device-eui") from None


keys = click.Group("keys", help="Test PKI and keystore tools (GBCS keystore layout: <eui>-ds/ka/pp-ka.pem|.key).")


@keys.command("init")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--devices", "-n", "count", type=click.IntRange(0, 0xFFFF), default=None,
              help="Number of devices with default EUIs 00DB00000000nnnn (default 1 unless --device-eui is given).")
@click.option("--device-eui", "device_euis", multiple=True, metavar="EUI",
              help="A device EUI (16 hex digits); repeatable. Combined with --devices N, adds N default ones.")
@click.option("--seed", type=int, default=None,
              help="Make keys, serials and signatures reproducible: the same seed writes identical files.")
@click.option("--force", is_flag=True, help="Overwrite keys already in DIRECTORY.")
def init(directory: Path, count: int | None, device_euis: tuple[str, ...], seed: int | None, force: bool) -> None:
    """Create a test PKI in DIRECTORY: root/issuing CAs, every organisation role (DS+KA, supplier also
    prepayment KA) and device DS+KA key pairs, as a keystore the emulator and tester can load."""
    explicit = _parse_euis(device_euis)
    if count is None:
        count = 0 if explicit else 1
    devices: list[bytes] = list(explicit)
    try:
        index, added = 1, 0
        while added < count:
            candidate = default_device_eui(index)
            if candidate not in devices:
                devices.append(candidate)
                added += 1
            index += 1
        summary = init_pki(directory, devices, seed, overwrite=force)
    except SecurityError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"Test PKI written to {summary.directory} ({len(summary.files)} files; private keys unencrypted, "
               f"for testing only)")
    for role, eui in summary.organisations.items():
        extra = " (+ prepayment KA)" if role is Role.SUPPLIER else ""
        click.echo(f"  {eui_hex(eui)}  {role.ou} {role.name.lower()}{extra}")
    for eui in summary.devices:
        click.echo(f"  {eui_hex(eui)}  device")


@keys.command("add-device")
@click.argument("directory", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--devices", "-n", "count", type=click.IntRange(0, 0xFFFF), default=None,
              help="Number of new default-EUI devices (default 1 unless --device-eui is given).")
@click.option("--device-eui", "device_euis", multiple=True, metavar="EUI", help="A device EUI; repeatable.")
@click.option("--seed", type=int, default=None, help="Reproducible keys for the new devices.")
def add_device(directory: Path, count: int | None, device_euis: tuple[str, ...], seed: int | None) -> None:
    """Issue more devices into a test PKI made by `keys init` (uses DIRECTORY/ca)."""
    explicit = _parse_euis(device_euis)
    try:
        new = add_devices(directory, explicit, seed) if explicit else []
        if count or (count is None and not explicit):
            new += add_devices(directory, count or 1, seed)
    except SecurityError as e:
        raise click.ClickException(str(e)) from None
    for eui in new:
        click.echo(f"  {eui_hex(eui)}  device")
