"""`gbcs-emu command …`: build GBCS commands as a remote party (supplier, network operator, ACB, …).

The main CLI adds this group with `from firmware_emu.command_cli import command`. Output is the hex of the built
message (or its decoded JSON with security verdicts); never key material. Bad input is one line on stderr and
exit status 2, like the other commands.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from protocols.errors import GbcsEmuError

__all__ = ["command"]

EXIT_FAILED = 2

command = click.Group("command", help="Build GBCS commands as a remote party (head-end side).")


def _objects(name: str) -> list[dict]:
    """The JSON objects of a file (one object, or JSON lines as `decode --jsonl` prints them); `-` is stdin."""
    text = sys.stdin.read() if name == "-" else Path(name).read_text()
    try:
        obj = json.loads(text)
        return obj if isinstance(obj, list) else [obj]
    except json.JSONDecodeError:
        return [json.loads(line) for line in text.splitlines() if line.strip()]


def _pick_originator(keystore, role, originator: str | None, objs: list[dict]):
    """The originator EUI: --originator, else the keystore party of the role (the JSON's originator when several)."""
    from protocols.security.eui import as_eui, eui_hex

    if originator:
        return as_eui(originator)
    if role is None:
        raise click.UsageError("give --as ROLE or --originator EUI")
    candidates = [e for e in keystore.euis() if keystore.role(e) is role
                  and (keystore.ds_private(e) is not None or keystore.ka_private(e) is not None)]
    if not candidates:
        raise click.UsageError(f"no {role.name.lower()} (role {role.ou}) with private keys in the keystore; "
                               "pass --originator")
    if len(candidates) == 1:
        return candidates[0]
    wanted = {(o.get("grouping_header") or {}).get("originator") for o in objs if isinstance(o, dict)}
    for eui in candidates:
        if eui_hex(eui) in {str(w).upper() for w in wanted if w}:
            return eui
    raise click.UsageError(f"several {role.name.lower()} parties in the keystore "
                           f"({', '.join(eui_hex(e) for e in candidates)}): pass --originator")


@command.command("build")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--as", "role", metavar="ROLE",
              help="supplier | network-operator | acb | recovery | transitional-cos | wan-provider | "
                   "load-controller")
@click.option("--keystore", type=click.Path(exists=True, file_okay=False), required=True,
              help="GBCS keystore (<eui>-ds/ka.pem|.key), e.g. one made by `keys init`")
@click.option("--originator", metavar="EUI", help="the sending party (default: the keystore's party of --as)")
@click.option("--counter-file", type=click.Path(dir_okay=False, path_type=Path),
              help="persisted originator counters (default $GBCS_EMU_COUNTERS or "
                   "~/.local/state/gbcs-emu/counters.json)")
@click.option("--counter", type=click.IntRange(0, (1 << 64) - 1),
              help="use this originator counter (must be above the last one in the counter file)")
@click.option("--counter-start", type=click.IntRange(0, (1 << 64) - 1),
              help="first counter of an originator new to the counter file (default: ms since 2000)")
@click.option("--acb", metavar="EUI", help="the ACB whose KA key MACs the command (default: from the keystore)")
@click.option("--precommand", is_flag=True, help="print the unsigned DF… pre-command (no signature byte, no MAC)")
@click.option("--sign/--no-sign", default=None, help="sign or not (default: the registry's criticality)")
@click.option("--no-mac", is_flag=True, help="leave off the DD MAC header (DF-only signature variants)")
@click.option("--on-behalf-of", metavar="EUI", help="supplementary remote party of an ACB-routed command")
@click.option("--remote-party-counter", type=click.IntRange(0, (1 << 64) - 1),
              help="its counter (default: its next counter from the counter file)")
@click.option("--urp", is_flag=True, help="carry the supplementary remote party's KA certificate (URP commands)")
@click.option("--deterministic", is_flag=True, help="RFC 6979 signatures (reproducible output)")
@click.option("--json", "as_json", is_flag=True, help="print the decoded message with security verdicts")
def build(file: str, role: str | None, keystore: str, originator: str | None, counter_file: Path | None,
          counter: int | None, counter_start: int | None, acb: str | None, precommand: bool, sign: bool | None,
          no_mac: bool, on_behalf_of: str | None, remote_party_counter: int | None, urp: bool, deterministic: bool,
          as_json: bool) -> None:
    """Build the command(s) in FILE.json (the JSON form `gbcs-emu decode` prints; security fields, counter and
    originator are filled in) and print the hex, one line per command."""
    from hil.remote_party import RemoteParty, default_counter_file, parse_role
    from protocols.gbcs.message import decode
    from protocols.security.keystore import Keystore

    try:
        objs = _objects(file)
    except (OSError, UnicodeDecodeError) as e:
        click.echo(f"{file}: cannot read: {e}", err=True)
        sys.exit(EXIT_FAILED)
    except json.JSONDecodeError as e:
        click.echo(f"{file}: not JSON: {e}", err=True)
        sys.exit(EXIT_FAILED)
    try:
        ks = Keystore(Path(keystore))
        parsed_role = parse_role(role)
        eui = _pick_originator(ks, parsed_role, originator, objs)
        party = RemoteParty(ks, eui, parsed_role, counter_file or default_counter_file(), acb=acb,
                            initial_counter=counter_start, deterministic_signatures=deterministic)
    except GbcsEmuError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(EXIT_FAILED)
    if counter is not None and len(objs) > 1:
        click.echo("error: --counter needs a file with a single command", err=True)
        sys.exit(EXIT_FAILED)

    failed = 0
    for n, obj in enumerate(objs, 1):
        label = file if len(objs) == 1 else f"{file}:{n}"
        try:
            data = party.build(obj, counter=counter, sign=sign, mac=not no_mac, precommand=precommand,
                               on_behalf_of=on_behalf_of, remote_party_counter=remote_party_counter,
                               urp=True if urp else None)
            if as_json:
                msg = decode(data)
                msg["security"] = party.verify_response(data, msg)
                click.echo(json.dumps(msg, indent=2))
            else:
                click.echo(data.hex().upper())
        except GbcsEmuError as e:
            failed += 1
            click.echo(f"{label}: {type(e).__name__}: {e}", err=True)
        except (TypeError, ValueError, KeyError, AttributeError) as e:  # malformed JSON shapes
            failed += 1
            click.echo(f"{label}: EncodeError: {type(e).__name__}: {e}", err=True)
    sys.exit(EXIT_FAILED if failed else 0)
