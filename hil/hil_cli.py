"""`gbcs-emu hil serve|bridge`: hardware in the loop over serial lines (docs/hil.md, docs/cli.md).

Both commands run until SIGINT/SIGTERM (or `--duration` seconds), then print their counters as one JSON line.
Bad options are one line on stderr, exit 2."""
from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import click

from protocols.errors import GbcsEmuError

EXIT_USAGE = 2

_port = click.option("--port", "port", required=True,
                     help="Serial URL: /dev/ttyUSB0, a pty, socket://HOST:PORT, rfc2217://HOST:PORT, loop://")
_framing = click.option("--framing", type=click.Choice(["gfi", "hdlc", "raw"], case_sensitive=False),
                        default="gfi", show_default=True, help="Framing on the serial line (raw = A5 len CRC)")
_baud = click.option("--baud", "baudrate", type=click.IntRange(50, 4_000_000), default=115200, show_default=True)
_parity = click.option("--parity", type=click.Choice(["N", "E", "O"], case_sensitive=False), default="N",
                       show_default=True)
_capture = click.option("--capture", type=click.Path(dir_okay=False, path_type=Path),
                        help="Write every frame to FILE.pcapng (Wireshark) or FILE.jsonl")
_duration = click.option("--duration", type=click.FloatRange(min=0), default=None,
                         help="Stop after this many seconds (default: until SIGINT/SIGTERM)")
_hdlc_client = click.option("--hdlc-client", type=click.IntRange(0, 0x7F), default=0x10, show_default=True,
                            help="HDLC client address")
_hdlc_server = click.option("--hdlc-server", type=click.IntRange(0, 0x3FFF), default=0x01, show_default=True,
                            help="HDLC server address")


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(EXIT_USAGE)


def _check_capture(path: Path | None) -> None:
    if path is not None and path.suffix.lower() not in (".pcapng", ".jsonl", ".ndjson"):
        _fail(f"--capture {path}: the extension must be .pcapng or .jsonl")


async def _until_signalled(run, duration: float | None):
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - non-POSIX
            pass
    if duration is not None:
        loop.call_later(duration, stop.set)
    return await run(stop)


@click.group("hil")
def hil() -> None:
    """Hardware in the loop: emulated devices on serial lines, and real devices bridged to a head end."""


@hil.command("serve")
@_port
@_framing
@click.option("--device", type=click.Choice(["esme", "gsme", "hub"], case_sensitive=False), default="esme",
              show_default=True, help="Device to emulate (hub = the CHF)")
@click.option("--eui", required=True, help="The device's EUI-64 (16 hex digits)")
@click.option("--keystore", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@_baud
@_parity
@_capture
@click.option("--start", default=None, help="Device clock start, ISO 8601 (default: now)")
@click.option("--speed", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Device time rate (0 = frozen)")
@click.option("--state", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="SQLite state file: a restart carries on")
@click.option("--certs", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where to write the device's certificates (default: a new temporary directory)")
@click.option("--seed", type=int, default=1, show_default=True, help="Seed of the self-issued DS key")
@click.option("--control", metavar="HOST:PORT", default=None,
              help="Also serve the JSON-lines control channel (hil/control.py) for a conformance runner "
                   "(port 0: any free port, printed)")
@_hdlc_client
@_hdlc_server
@_duration
def serve_command(port, framing, device, eui, keystore, baudrate, parity, capture, start, speed, state, certs, seed,
                  control, hdlc_client, hdlc_server, duration) -> None:
    """An emulated device answering GBCS on a serial line."""
    from hil.conformance.rtds import parse_start
    from hil.serial_link import HdlcParams
    from hil.serve import ServeConfig, serve
    _check_capture(capture)
    t0 = None
    if start is not None:
        try:
            t0 = parse_start(start)
        except ValueError:
            _fail(f"--start wants an ISO 8601 date-time, not {start!r}")
    cfg = ServeConfig(port=port, eui=eui, keystore=keystore, device=device.lower(), framing=framing.lower(),
                      baudrate=baudrate, parity=parity.upper(), capture=capture, start=t0, speed=speed, state=state,
                      certs=certs, seed=seed, hdlc=HdlcParams(client=hdlc_client, server=hdlc_server, role="server"),
                      control=control)
    if control is not None:
        from hil.control import parse_hostport
        try:
            parse_hostport(control)
        except GbcsEmuError as e:
            _fail(f"--control: {e}")
    try:
        asyncio.run(_until_signalled(lambda stop: serve(cfg, stop=stop, out=click.echo), duration))
    except (GbcsEmuError, ValueError) as e:
        _fail(str(e))
    except OSError as e:          # the control port taken
        _fail(f"--control {control}: {e.strerror or e}")


@hil.command("bridge")
@_port
@click.option("--to", "to", required=True, help="tcp://HOST:PORT (a head end's GBCS listener) or "
                                                "mqtt://HOST:PORT/<hub EUI> (the fleet's topic pair of that hub)")
@_framing
@click.option("--to-framing", type=click.Choice(["gfi", "lencrc"], case_sensitive=False), default="gfi",
              show_default=True, help="Framing towards a TCP head end")
@click.option("--mqtt-prefix", default="gbcs", show_default=True)
@_baud
@_parity
@_capture
@_hdlc_client
@_hdlc_server
@_duration
def bridge_command(port, to, framing, to_framing, mqtt_prefix, baudrate, parity, capture, hdlc_client, hdlc_server,
                   duration) -> None:
    """A real device on a serial line joins a head end or the fleet."""
    from hil.bridge import BridgeConfig, bridge, parse_to
    from hil.serial_link import HdlcParams
    _check_capture(capture)
    try:
        parse_to(to)
    except GbcsEmuError as e:
        _fail(str(e))
    cfg = BridgeConfig(port=port, to=to, framing=framing.lower(), to_framing=to_framing.lower(), baudrate=baudrate,
                       parity=parity.upper(), capture=capture, mqtt_prefix=mqtt_prefix,
                       hdlc=HdlcParams(client=hdlc_client, server=hdlc_server, role="client"))
    try:
        asyncio.run(_until_signalled(lambda stop: bridge(cfg, stop=stop, out=click.echo), duration))
    except (GbcsEmuError, ValueError) as e:
        _fail(str(e))
