"""`gbcs-emu fleet …`: run a fleet of virtual premises against a head end, report and export its inventory.

The main CLI adds this group with `from firmware_emu.fleet.cli import fleet`. Errors in the configuration or
the state directory are one line naming the key (exit 2), never a traceback. See docs/fleet.md.
"""
from __future__ import annotations

import asyncio
import json
import logging
import sys
import time

import click

from protocols.errors import GbcsEmuError

__all__ = ["fleet"]

EXIT_USAGE = 2

fleet = click.Group("fleet", help="Virtual fleets: premises of hub + meters + HAN devices served over TCP/MQTT.")


def _config(path: str, shard: str | None = None, speed: float | None = None):
    from firmware_emu.fleet.config import load_config, parse_shard
    try:
        cfg = load_config(path)
        return cfg.with_overrides(shard=parse_shard(shard, "--shard") if shard else None, speed=speed)
    except GbcsEmuError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(EXIT_USAGE)


def _premises_range(text: str, total: int) -> range:
    try:
        if "-" in text:
            a, b = text.split("-", 1)
            r = range(int(a), int(b) + 1)
        else:
            r = range(int(text), int(text) + 1)
    except ValueError:
        raise click.BadParameter(f"expected N or N-M, got {text!r}", param_hint="--premises") from None
    if not r or r.start < 0 or r.stop > total:
        raise click.BadParameter(f"premises indices must lie in 0..{total - 1}", param_hint="--premises")
    return r


@fleet.command("run")
@click.argument("config", type=click.Path(exists=True, dir_okay=False))
@click.option("--shard", metavar="k/K", help="Serve only premises i with i % K == k (overrides fleet.shard).")
@click.option("--speed", type=float, help="Simulated seconds per wall second (overrides time.speed).")
@click.option("--duration", type=float, help="Stop after this many wall seconds (default: until SIGINT/SIGTERM).")
@click.option("--verbose", "-v", is_flag=True, help="Log what the fleet does.")
def run(config: str, shard: str | None, speed: float | None, duration: float | None, verbose: bool) -> None:
    """Run the fleet of CONFIG: provision (lazily) on first run, carry on from the state directory after."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = _config(config, shard, speed)
    from firmware_emu.fleet.host import FleetHost, FleetRunner

    async def main() -> dict:
        t0 = time.perf_counter()
        host = FleetHost(cfg)
        runner = FleetRunner(host)
        await runner.start()
        click.echo(f"fleet {cfg.name} shard {cfg.shard}: {cfg.shard.size(cfg.premises)} premises, ready in "
                   f"{time.perf_counter() - t0:.2f} s; TCP {runner.tcp_ports or '-'}, MQTT "
                   f"{[f'{m.host}:{m.port}' for m in cfg.mqtt] or '-'}, metrics "
                   f"{cfg.metrics_port if cfg.metrics_port is not None else '-'}; speed {cfg.speed:g}x", err=True)
        await runner.run(duration, handle_signals=True)
        c = host.counters
        return {"frames_in": c.frames_in, "responses": c.responses, "alerts": c.alerts,
                "materialised": c.materialised, "errors": c.errors, "simulated_time": host.sim_now}

    try:
        summary = asyncio.run(main())
    except GbcsEmuError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(EXIT_USAGE)
    except OSError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(EXIT_USAGE)
    click.echo(json.dumps(summary, sort_keys=True))


@fleet.command("status")
@click.argument("config", type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
def status(config: str, as_json: bool) -> None:
    """Devices per SMI inventory state and per device type (every shard of the state directory)."""
    cfg = _config(config)
    from firmware_emu.fleet.host import fleet_status
    try:
        st = fleet_status(cfg)
    except GbcsEmuError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(EXIT_USAGE)
    if as_json:
        click.echo(json.dumps(st, indent=2, sort_keys=True))
        return
    from rich.console import Console
    from rich.table import Table
    states = [s for s, n in st["by_state"].items() if n]
    table = Table(title=f"fleet {st['fleet']}: {st['premises']} premises ({st['premises_materialised']} "
                        f"materialised, {st['shards']} shard files), {st['devices']} devices")
    table.add_column("device type")
    for s in states:
        table.add_column(s, justify="right")
    for t, per in st["by_type"].items():
        table.add_row(t, *(str(per.get(s, 0)) for s in states))
    table.add_row("all", *(str(st["by_state"][s]) for s in states), style="bold")
    Console().print(table)


@fleet.command("export")
@click.argument("config", type=click.Path(exists=True, dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv", show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False, allow_dash=True), default="-",
              help="Write here instead of standard output.")
def export(config: str, fmt: str, output: str) -> None:
    """The fleet's SMI inventory, one record per device (untouched premises as pending)."""
    cfg = _config(config)
    from firmware_emu.fleet.host import export_inventory
    try:
        if output == "-":
            n = export_inventory(cfg, sys.stdout, fmt)
        else:
            with open(output, "w", newline="") as fp:
                n = export_inventory(cfg, fp, fmt)
    except GbcsEmuError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(EXIT_USAGE)
    click.echo(f"{n} devices", err=True)


@fleet.command("export-keys")
@click.argument("config", type=click.Path(exists=True, dir_okay=False))
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--premises", "which", default="0", show_default=True, metavar="N|N-M",
              help="Premises indices whose devices' certificates and keys to write.")
def export_keys(config: str, directory: str, which: str) -> None:
    """Write the organisations' and some devices' certificates and private keys (keystore layout) to DIRECTORY,
    for head ends that do not derive the fleet's keys themselves. A test PKI: never for real meters."""
    cfg = _config(config)
    from firmware_emu.fleet.keys import FleetKeys
    try:
        keys = FleetKeys.from_config(cfg)
        files = keys.export(directory, _premises_range(which, cfg.premises))
    except GbcsEmuError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(EXIT_USAGE)
    click.echo(f"wrote {len(files)} files to {directory}")
