"""`gbcs-emu`: the one console script. Every command reports bad input as a line, never a traceback.

Commands and output lines that users script against (docs/cli.md): `decode [--jsonl]`, `encode`,
`conformance codec DIR` ending in `N passed, M failed`, `registry`, `keys init`.
"""
from __future__ import annotations

import json
import sys
from importlib import metadata
from pathlib import Path

import click

from protocols.errors import DecodeError, GbcsEmuError, guarded

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 2, 2


def _codec_backend() -> str:
    """"c" or "python": which codec path protocols.fast selected (issue 8)."""
    from protocols.fast import backend
    return backend()


def _version() -> str:
    try:
        return metadata.version("gbcs-emu")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0.0.0+source"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(_version(), prog_name="gbcs-emu", message="%(prog)s %(version)s (codec backend: " + _codec_backend() + ")")
def main() -> None:
    """Device-level emulator for GB smart metering, speaking real GBCS."""


def _inputs(items: tuple[str, ...]):
    """(label, bytes | error) per message: a file's lines of hex (or its raw bytes), `-` for stdin, or hex."""
    for item in items:
        if item == "-":
            for n, line in enumerate(sys.stdin, 1):
                if line.strip():
                    yield f"<stdin>:{n}", line.strip()
            continue
        path = Path(item)
        if path.is_file():
            try:
                raw = path.read_bytes()
            except OSError as e:
                yield item, DecodeError(f"cannot read file: {e.strerror}")
                continue
            try:
                text = raw.decode("ascii")
            except UnicodeDecodeError:
                yield item, raw
                continue
            lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
            if len(lines) <= 1:
                yield item, "".join(text.split())
            else:
                for n, line in enumerate(lines, 1):
                    yield f"{item}:{n}", line
            continue
        yield item, item


def _to_bytes(value) -> bytes:
    if isinstance(value, Exception):
        raise value
    if isinstance(value, bytes):
        return value
    text = "".join(value.split())
    if text[:2].lower() == "0x":
        text = text[2:]
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise DecodeError("input is neither a readable file nor hex", "input", None) from None


def _verifier(keystore: str | None):
    if not keystore:
        return None
    from hil.verify import make_verifier  # issue 3: MAC, signature and decryption checks
    return make_verifier(Path(keystore))


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("--jsonl", is_flag=True, help="one JSON object per input line (decoded message or error)")
@click.option("--keystore", type=click.Path(file_okay=False), help="verify MACs/signatures, decrypt payloads")
def decode(inputs: tuple[str, ...], jsonl: bool, keystore: str | None) -> None:
    """Decode GBCS messages (files of hex, raw files, or hex on the command line) to JSON."""
    from protocols.gbcs.message import decode as decode_message

    try:
        verifier = _verifier(keystore)
    except GbcsEmuError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(EXIT_USAGE)
    failed = 0
    for label, value in _inputs(inputs):
        try:
            data = _to_bytes(value)
            msg = guarded(decode_message, data)
            if verifier is not None:
                msg["security"] = guarded(verifier, data, msg)
        except GbcsEmuError as e:
            failed += 1
            err = e.as_dict() if hasattr(e, "as_dict") else {"type": type(e).__name__, "field": "",
                                                               "offset": None, "message": str(e)}
            if jsonl:
                click.echo(json.dumps({"file": label, "error": err}))
            else:
                click.echo(f"{label}: {err['type']}: {e}", err=True)
            continue
        if jsonl:
            click.echo(json.dumps({"file": label, **msg}))
        else:
            click.echo(json.dumps(msg, indent=2))
    sys.exit(EXIT_FAILED if failed else EXIT_OK)


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, allow_dash=True))
def encode(files: tuple[str, ...]) -> None:
    """Encode JSON messages (as `decode` prints them; a file may hold one object or JSON lines) to hex."""
    from protocols.gbcs.message import encode as encode_message

    failed = 0
    for name in files:
        try:
            text = sys.stdin.read() if name == "-" else Path(name).read_text()
        except (OSError, UnicodeDecodeError) as e:
            click.echo(f"{name}: cannot read: {e}", err=True)
            failed += 1
            continue
        try:
            objs = [json.loads(text)]
        except json.JSONDecodeError:
            try:
                objs = [json.loads(line) for line in text.splitlines() if line.strip()]
            except json.JSONDecodeError as e:
                click.echo(f"{name}: not JSON: {e}", err=True)
                failed += 1
                continue
        for obj in objs:
            if isinstance(obj, dict) and "error" in obj and "grouping_header" not in obj:
                failed += 1
                click.echo(f"{name}: skipping an error record", err=True)
                continue
            try:
                click.echo(encode_message(obj).hex().upper())
            except GbcsEmuError as e:
                failed += 1
                click.echo(f"{name}: {type(e).__name__}: {e}", err=True)
    sys.exit(EXIT_FAILED if failed else EXIT_OK)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="print the registry as JSON")
@click.argument("names", nargs=-1)
def registry(as_json: bool, names: tuple[str, ...]) -> None:
    """List GBCS message codes (all, or the given use-case names / 0x codes)."""
    from protocols.gbcs.registry import REGISTRY

    entries = REGISTRY.entries
    if names:
        wanted = {n.upper() for n in names}
        entries = [e for e in entries if e.name.upper() in wanted or e.code_hex.upper() in
                   {w.replace("0X", "0x").upper() for w in wanted}]
    if as_json:
        click.echo(json.dumps([e.as_dict() for e in entries], indent=1))
        return
    for e in entries:
        crit = {True: "critical", False: "non-critical", None: "-"}[e.critical]
        click.echo(f"{e.code_hex}  {e.name:<38} {crit:<12} {','.join(e.payload_families):<9} "
                   f"{','.join(e.target_devices):<10} {e.title}")


@main.group()
def conformance() -> None:
    """Conformance runs against messages and devices."""


@conformance.command("codec")
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@click.option("--keystore", type=click.Path(exists=True, file_okay=False),
              help="also verify MACs and signatures; an invalid one is a failure")
@click.option("--verbose", "-v", is_flag=True, help="a line per message, not only per failure")
def conformance_codec(directory: str, keystore: str | None, verbose: bool) -> None:
    """Decode, re-encode and compare every *.HEX below DIRECTORY byte for byte."""
    from hil.conformance.codec import run_codec_conformance

    try:
        verifier = _verifier(keystore)
    except GbcsEmuError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(EXIT_USAGE)

    def show(res):
        if not res.passed:
            click.echo(f"FAIL {res.path}: {res.reason}")
        elif verbose:
            extra = " ".join(f"{k}={v}" for k, v in res.verdicts.items() if isinstance(v, str))
            click.echo(f"ok   {res.path} {extra}".rstrip())

    report = run_codec_conformance(Path(directory), verifier, show)
    click.echo(report.summary())
    sys.exit(EXIT_OK if report.failed == 0 else 1)


@conformance.command("rtds")
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@click.option("--keystore", required=True, type=click.Path(exists=True, file_okay=False),
              help="the RTDS keystore (remote parties' keys, devices' certificates)")
@click.option("--junit", type=click.Path(dir_okay=False), help="write JUnit XML (one testcase per case)")
@click.option("--save", type=click.Path(file_okay=False),
              help="write every emitted frame as hex, and the emulated devices' certificates in SAVE/keystore/")
@click.option("--device-type", "device_types", multiple=True, metavar="EUI=TYPE",
              help="the device type of a recipient EUI (ESME, GSME, CHF, GPF, PPMID, HCALCS); repeatable")
@click.option("--start", metavar="ISO", help="the devices' clock at the start of each case "
                                             "(default 2015-01-01T00:00:00Z)")
@click.option("--target", "target", default="inproc:", show_default=True, metavar="URL",
              help="the device under test: inproc: (emulated here), tcp://HOST:PORT (GFI), "
                   "serial:///dev/ttyX?framing=gfi&baud=115200, socket://HOST:PORT, rfc2217://HOST:PORT "
                   "(any: &eui=EUI)")
@click.option("--control", metavar="HOST:PORT", default=None,
              help="the device under test's control channel (hil serve --control): fresh device per case, "
                   "faults, clock, stimuli")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=5.0, show_default=True, metavar="S",
              help="per-case deadline of a --target outside the process")
@click.option("--html", type=click.Path(dir_okay=False), help="write a self-contained HTML report")
@click.option("--verbose", "-v", is_flag=True, help="also a line per passing and skipped case")
def conformance_rtds(directory: str, keystore: str, junit: str | None, save: str | None,
                     device_types: tuple[str, ...], start: str | None, target: str, control: str | None,
                     timeout: float, html: str | None, verbose: bool) -> None:
    """Replay every RTDS command below DIRECTORY against a fresh emulated device (or a device under test,
    --target) and compare its response and alerts with the RTDS ones, by form."""
    from hil.conformance.rtds import parse_start, run_rtds_conformance
    from hil.targets import split_target_url
    from protocols.security.eui import as_eui, eui_hex

    types: dict[str, str] = {}
    for item in device_types:
        eui, sep, dtype = item.partition("=")
        try:
            if not sep or not dtype.strip():
                raise ValueError(item)
            types[eui_hex(as_eui(eui.strip()))] = dtype.strip().upper()
        except (ValueError, GbcsEmuError):
            click.echo(f"error: --device-type wants EUI=TYPE with a 16-hex-digit EUI, not {item!r}", err=True)
            sys.exit(EXIT_USAGE)
    try:
        if start is not None:
            parse_start(start)
    except ValueError:
        click.echo(f"error: --start wants an ISO 8601 date-time, not {start!r}", err=True)
        sys.exit(EXIT_USAGE)
    try:
        kind = split_target_url(target)[0]
        if control is not None:
            from hil.control import parse_hostport
            parse_hostport(control)
            if kind == "inproc":
                raise GbcsEmuError("--control goes with a --target outside the process (tcp://, serial://)")
    except GbcsEmuError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(EXIT_USAGE)
    try:
        report = run_rtds_conformance(Path(directory), Path(keystore), junit=junit, save=save,
                                      device_types=types, start=start, verbose=verbose, out=click.echo,
                                      target=None if kind == "inproc" else target, control=control,
                                      timeout=timeout, html=html)
    except GbcsEmuError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(EXIT_USAGE)
    sys.exit(EXIT_OK if report.failed == 0 else 1)


def _register_optional_commands() -> None:
    """Command groups that live in their own modules."""
    from firmware_emu.keys_cli import keys
    main.add_command(keys)
    from firmware_emu.fleet.cli import fleet
    main.add_command(fleet)
    from hil.hil_cli import hil
    main.add_command(hil)
    from firmware_emu.fleet.demo import demo_command
    main.add_command(demo_command)
    try:
        from firmware_emu.command_cli import command
    except ImportError:  # pragma: no cover - added by the remote-party work
        return
    main.add_command(command)


_register_optional_commands()


if __name__ == "__main__":  # pragma: no cover
    main()
