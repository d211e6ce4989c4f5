"""The head-end side: build GBCS commands as a supplier, network operator, ACB or other remote party would.

`RemoteParty(keystore, eui, role=None, counter_store=None)` turns the JSON form of a command (as
`gbcs-emu decode` prints it; security fields are ignored) into wire bytes:

1. **Counter.** The originator counter comes from a `CounterStore`: a small JSON file, one counter per
   originator EUI, that only goes up. Every assignment is written before the command is returned (temp file +
   fsync + `os.replace`, under an advisory lock), so counters stay strictly increasing across restarts and
   processes. A new EUI starts at `initial_counter`, by default the milliseconds since 2000-01-01 (so even a
   lost file keeps counters above those already sent, as long as the clock goes forward).
2. **Routing.** CRA flag `command`, originator = this party, the recipient and message code from the JSON.
   ACB-originated commands may carry a supplementary remote party (`on_behalf_of`, with its own counter, and
   for URP commands its KA certificate).
3. **Payload.** DLMS: invoke id = `0x20 ‖ low 24 bits of the counter`; the protection parameters of
   `get_protected_attributes` (transaction id, originator and recipient titles) follow the counter and the
   routing (they are *not* encrypted in commands, RTDS ECS17b). ASN.1: a top-level `originator_counter`
   (CS06) follows the counter. GBZ: a component marked `encrypted` whose `zcl` holds a plain `payload` is
   encrypted (KDF mode 04, AAD `31`, IV originator ‖ 00000000) for the recipient.
4. **Signature.** Critical commands (`REGISTRY.get(code).critical`) are signed by the originator's DS key over
   the pre-command minus `DF`, appended as `40 ‖ r ‖ s`; others get the `00` byte. `precommand=True` returns
   the `DF…` part without the signature byte (what DUIS hands to the user for signing).
5. **MAC.** The General-Signing APDU is wrapped in the `DD` MAC header; the MAC key is ACB KA × device KA with
   KDF PartyU = the grouping-header originator, mode 01 (brief §3.3).

`verify_response(data)` checks what comes back with `hil.verify`. Nothing here logs or reprs key material.
"""
from __future__ import annotations

import copy
import json
import logging
import os
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from protocols.errors import EncodeError, GbcsEmuError
from protocols.gbcs.message import decode, encode_grouping_header, encode_payload, wrap_mac_header
from protocols.gbcs.registry import REGISTRY
from protocols.security import ecc
from protocols.security.errors import KeystoreError, SecurityError
from protocols.security.eui import EuiLike, as_eui, eui_hex
from protocols.security.kdf import KdfMode
from protocols.security.keystore import Keystore, Role, Usage
from protocols.security.mac import encrypt_payload, message_mac

from hil.verify import acb_euis, encryption_parties, verify_message

try:  # advisory locking between processes sharing a counter file (POSIX)
    import fcntl
except ImportError:  # pragma: no cover - non-POSIX
    fcntl = None

__all__ = ["RemoteParty", "CounterStore", "CounterError", "ROLE_NAMES", "parse_role", "clock_counter",
           "default_counter_file"]

log = logging.getLogger(__name__)

_U64 = 1 << 64
_EPOCH_2000 = 946684800
_FORMAT = "gbcs-emu originator counters 1"

#: CLI/JSON names of remote-party roles.
ROLE_NAMES: dict[str, Role] = {
    "recovery": Role.RECOVERY,
    "supplier": Role.SUPPLIER,
    "network-operator": Role.NETWORK_OPERATOR,
    "acb": Role.ACCESS_CONTROL_BROKER,
    "transitional-cos": Role.TRANSITIONAL_COS,
    "wan-provider": Role.WAN_PROVIDER,
    "load-controller": Role.LOAD_CONTROLLER,
}
_ROLE_ALIASES = {"no": "network-operator", "access-control-broker": "acb", "transcos": "transitional-cos",
                 "trans-cos": "transitional-cos", "wan": "wan-provider", "lc": "load-controller"}


class CounterError(GbcsEmuError):
    """A counter file that cannot be used, or a requested counter that would not go up."""


def parse_role(value: Role | str | int | None) -> Role | None:
    """A Role from a Role, its number, its 2-hex-digit OU, or a name such as `supplier` / `network-operator`."""
    if value is None or isinstance(value, Role):
        return value
    if isinstance(value, int):
        return Role(value)
    text = str(value).strip().lower().replace("_", "-")
    text = _ROLE_ALIASES.get(text, text)
    if text in ROLE_NAMES:
        return ROLE_NAMES[text]
    try:
        return Role(int(text, 16))
    except ValueError:
        raise SecurityError(f"unknown role {value!r} (one of {', '.join(ROLE_NAMES)})") from None


def clock_counter() -> int:
    """Milliseconds since 2000-01-01 UTC: the default first counter of a new originator."""
    return max(1, int((time.time() - _EPOCH_2000) * 1000))


def default_counter_file() -> Path:
    """$GBCS_EMU_COUNTERS, else $XDG_STATE_HOME (or ~/.local/state)/gbcs-emu/counters.json."""
    env = os.environ.get("GBCS_EMU_COUNTERS")
    if env:
        return Path(env)
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "gbcs-emu" / "counters.json"


# ---------------------------------------------------------------------------------------------------------------
# counters


class CounterStore:
    """Strictly increasing originator counters per EUI, persisted in a JSON file (or in memory when `path` is
    None). `next(eui)` returns max(last + 1, floor); `take(eui, n)` uses an explicit `n` that must be above the
    last one. The file is rewritten atomically (temp + fsync + os.replace + directory fsync) under an exclusive
    lock on `<path>.lock`, so concurrent processes never hand out the same counter."""

    def __init__(self, path: str | os.PathLike | None = None, initial_counter: int | None = None):
        self.path = Path(path) if path is not None else None
        self.initial_counter = initial_counter
        self._memory: dict[str, int] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<CounterStore {self.path or 'in memory'}>"

    # -- file ---------------------------------------------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with self._lock:
            if self.path is None or fcntl is None:
                yield
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)

    def _read(self) -> dict[str, int]:
        if self.path is None:
            return dict(self._memory)
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return {}
        except OSError as e:
            raise CounterError(f"cannot read counter file {self.path}: {e.strerror}") from None
        try:
            data = json.loads(text)
            counters = data["counters"]
            out = {}
            for k, v in counters.items():
                if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < _U64:
                    raise ValueError(k)
                out[eui_hex(k)] = v
            return out
        except (ValueError, KeyError, TypeError, AttributeError, SecurityError):
            raise CounterError(f"counter file {self.path} is not a {_FORMAT!r} JSON file") from None

    def _write(self, counters: dict[str, int]) -> None:
        if self.path is None:
            self._memory = dict(counters)
            return
        directory = self.path.parent
        directory.mkdir(parents=True, exist_ok=True)
        text = json.dumps({"format": _FORMAT, "counters": dict(sorted(counters.items()))}, indent=1) + "\n"
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        try:  # make the rename itself durable
            dfd = os.open(directory, os.O_RDONLY)
        except OSError:  # pragma: no cover - e.g. platforms without directory fds
            return
        try:
            os.fsync(dfd)
        except OSError:  # pragma: no cover
            pass
        finally:
            os.close(dfd)

    # -- API ----------------------------------------------------------------------------------------------------

    def last(self, eui: EuiLike) -> int | None:
        """The last counter handed out for `eui`, or None."""
        with self._locked():
            return self._read().get(eui_hex(eui))

    def next(self, eui: EuiLike) -> int:
        """A new counter for `eui`, above every one handed out before (persisted before it is returned)."""
        return self._assign(eui, None)

    def take(self, eui: EuiLike, counter: int) -> int:
        """Use `counter` for `eui`; CounterError unless it is above the last one."""
        if isinstance(counter, bool) or not isinstance(counter, int) or not 0 <= counter < _U64:
            raise CounterError(f"a counter is a uint64, got {counter!r}")
        return self._assign(eui, counter)

    def _assign(self, eui: EuiLike, wanted: int | None) -> int:
        key = eui_hex(eui)
        with self._locked():
            counters = self._read()
            last = counters.get(key)
            if wanted is not None:
                if last is not None and wanted <= last:
                    raise CounterError(f"counter {wanted} for {key} is not above the last one used ({last})")
                value = wanted
            else:
                floor = self.initial_counter if self.initial_counter is not None else clock_counter()
                value = floor if last is None else max(last + 1, floor)
            if value >= _U64:
                raise CounterError(f"the originator counter of {key} is exhausted")
            counters[key] = value
            self._write(counters)
        return value


# ---------------------------------------------------------------------------------------------------------------
# the remote party


def _invoke_id(counter: int) -> str:
    return f"20{counter & 0xFFFFFF:06X}"


def _is_protection_options(node) -> bool:
    """The 5-element options structure of DLMS protection parameters: transaction id, originator and recipient
    system titles, other information, key info (brief §2.1)."""
    if not (isinstance(node, dict) and node.get("type") == "structure"):
        return False
    v = node.get("value")
    if not isinstance(v, list) or len(v) != 5:
        return False
    kinds = [x.get("type") if isinstance(x, dict) else None for x in v]
    if kinds != ["octet-string"] * 4 + ["structure"]:
        return False
    lengths = [len(x.get("value") or "") // 2 for x in v[:3]]
    return lengths == [9, 8, 8]


def _walk_dicts(obj) -> Iterator[dict]:
    if isinstance(obj, dict):
        yield obj
        for v in obj.values():
            yield from _walk_dicts(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _walk_dicts(v)


class RemoteParty:
    """One head-end party: builds, signs and MACs commands with keys from a GBCS keystore."""

    def __init__(self, keystore: Keystore | str | os.PathLike, eui: EuiLike, role: Role | str | int | None = None,
                 counter_store: CounterStore | str | os.PathLike | None = None, *, acb: EuiLike | None = None,
                 initial_counter: int | None = None, deterministic_signatures: bool = False):
        self.keystore = keystore if isinstance(keystore, Keystore) else Keystore(Path(keystore))
        self.eui = as_eui(eui)
        known = self.keystore.role(self.eui)
        role = parse_role(role)
        if role is not None and known is not None and role is not known:
            raise KeystoreError(f"{eui_hex(self.eui)} has role {known.ou} ({known.name.lower()}) in the keystore, "
                                f"not {role.ou} ({role.name.lower()})")
        self.role = role if role is not None else known
        if isinstance(counter_store, CounterStore):
            self.counters = counter_store
        else:
            self.counters = CounterStore(counter_store, initial_counter)
        self._acb = as_eui(acb) if acb is not None else None
        self.deterministic_signatures = deterministic_signatures
        self.last_counter: int | None = None

    def __repr__(self) -> str:
        role = self.role.name.lower() if self.role is not None else "unknown role"
        return f"<RemoteParty {eui_hex(self.eui)} ({role}) counters={self.counters.path or 'in memory'}>"

    # -- keys -----------------------------------------------------------------------------------------------------

    @property
    def acb(self) -> bytes:
        """The ACB whose KA key MACs commands: the one given, this party when it is the ACB, or the keystore's
        role-04 party with a KA private key."""
        if self._acb is not None:
            return self._acb
        if self.role is Role.ACCESS_CONTROL_BROKER:
            return self.eui
        for eui in acb_euis(self.keystore):
            if self.keystore.ka_private(eui) is not None:
                return eui
        raise KeystoreError("no Access Control Broker (role 04) with a KA private key in the keystore: pass acb=")

    def next_counter(self) -> int:
        """Take the next originator counter of this party (persisted)."""
        return self.counters.next(self.eui)

    def sign(self, data: bytes) -> bytes:
        """Raw r||s signature of `data` with this party's DS private key."""
        key = self.keystore.ds_private(self.eui)
        if key is None:
            raise KeystoreError(f"no DS private key for {eui_hex(self.eui)}: cannot sign")
        return ecc.sign(key, data, deterministic=self.deterministic_signatures)

    def command_mac(self, general_signing: bytes, originator: EuiLike, recipient: EuiLike, counter: int) -> bytes:
        """The 12-byte MAC of a command's General-Signing APDU (ACB KA × recipient KA, mode 01)."""
        acb, recipient = self.acb, as_eui(recipient)
        z = self.keystore.shared_secret(acb, recipient)
        if z is None:
            raise KeystoreError(f"cannot MAC for {eui_hex(recipient)}: need the KA key pair of ACB {eui_hex(acb)} "
                                f"(private) and {eui_hex(recipient)}'s KA certificate")
        return message_mac(z, originator, recipient, KdfMode.COMMAND, counter, general_signing)

    # -- building -------------------------------------------------------------------------------------------------

    def build(self, command: dict, *, counter: int | None = None, sign: bool | None = None, mac: bool = True,
              precommand: bool = False, on_behalf_of: EuiLike | None = None,
              remote_party_counter: int | None = None, urp: bool | None = None) -> bytes:
        """Wire bytes of `command` (its JSON form) sent by this party.

        `counter`: use this originator counter (must be above the last one) instead of the next one.
        `sign`: sign or not; default: the registry's criticality (when the registry does not know, a non-empty
        `signature` in the JSON asks for one). `mac=False` leaves the `DD` MAC header off (the DF-only
        signature variants). `precommand=True` returns the unsigned `DF…` part without a signature byte.
        `on_behalf_of`: the supplementary remote party of an ACB-routed command, with `remote_party_counter`
        (default: that party's next counter from the same store); `urp=True` also carries its KA certificate.
        The counter used is left in `last_counter`.
        """
        if not isinstance(command, dict):
            raise EncodeError("a command must be a JSON object")
        obj = copy.deepcopy({k: v for k, v in command.items() if k not in ("mac_header", "security", "file")})
        wanted_signature = obj.pop("signature", None)
        gh = obj.get("grouping_header")
        if not isinstance(gh, dict):
            raise EncodeError("grouping_header missing", "grouping_header")
        if gh.get("recipient") in (None, ""):
            raise EncodeError("recipient missing", "grouping_header.recipient")
        recipient = as_eui(gh["recipient"])
        oi = dict(gh.get("other_information") or {})
        code = self._message_code(oi)
        oi.pop("supplementary_originator_counter", None)  # responses only

        supp = None
        if on_behalf_of is not None:
            supp = as_eui(on_behalf_of)
            oi["supplementary_remote_party_id"] = eui_hex(supp)
            if remote_party_counter is None:
                remote_party_counter = self.counters.next(supp)
            oi["supplementary_remote_party_counter"] = remote_party_counter
        elif oi.get("supplementary_remote_party_id"):
            supp = as_eui(oi["supplementary_remote_party_id"])
            if remote_party_counter is not None:
                oi["supplementary_remote_party_counter"] = remote_party_counter
            elif oi.get("supplementary_remote_party_counter") is None:
                raise EncodeError("supplementary_remote_party_counter missing",
                                  "grouping_header.other_information")
        if urp:
            if supp is None:
                raise EncodeError("a URP command needs a supplementary remote party (on_behalf_of)",
                                  "grouping_header.other_information")
            cert = self.keystore.certificate(supp, Usage.KA)
            if cert is None:
                raise KeystoreError(f"no KA certificate of {eui_hex(supp)} to carry in a URP command")
            oi["supplementary_remote_party_ka_certificate"] = cert.hex().upper()
        elif urp is False:
            oi.pop("supplementary_remote_party_ka_certificate", None)

        if counter is None:
            counter = self.counters.next(self.eui)
        else:
            counter = self.counters.take(self.eui, counter)
        self.last_counter = counter
        gh = {
            "cra_flag": "command",
            "originator_counter": counter,
            "originator": eui_hex(self.eui),
            "recipient": eui_hex(recipient),
            "date_time": gh.get("date_time"),
            "other_information": oi,
        }
        obj["grouping_header"] = gh
        payload = obj.get("payload")
        if not isinstance(payload, dict):
            raise EncodeError("payload missing", "payload")
        self._fill_payload(payload, gh, supp)

        content = encode_payload(payload, cra_flag="command", message_code=code)
        pre = encode_grouping_header(gh, content, None)
        if precommand:
            log.info("remote party %s: pre-command 0x%04X to %s, counter %d", eui_hex(self.eui), code,
                     eui_hex(recipient), counter)
            return pre
        if sign is None:
            entry = REGISTRY.get(code)
            if entry is not None and entry.critical is not None:
                sign = entry.critical
            else:
                sign = isinstance(wanted_signature, str) and wanted_signature != ""
        signing = pre + (b"\x40" + self.sign(pre[1:]) if sign else b"\x00")
        if mac:
            tag = self.command_mac(signing, self.eui, recipient, counter)
            data = wrap_mac_header(signing, tag)
        else:
            data = signing
        log.info("remote party %s: command 0x%04X to %s, counter %d, %s, %s", eui_hex(self.eui), code,
                 eui_hex(recipient), counter, "signed" if sign else "unsigned", "MAC'd" if mac else "no MAC")
        return data

    def complete(self, precommand: bytes, *, sign: bool = True, mac: bool = True) -> bytes:
        """Sign a pre-command (`DF…` without a signature byte, e.g. one built with `precommand=True`) and wrap
        it in the MAC header: the last steps of the DUIS flow."""
        from protocols.gbcs.message import split_payload

        pre = bytes(precommand)
        header, content, _ = split_payload(pre)
        if header.get("signature") is not None or "mac_header" in header or content is None:
            raise EncodeError("not a pre-command (DF… without a signature byte)")
        gh = header["grouping_header"]
        if as_eui(gh["originator"]) != self.eui:
            raise EncodeError(f"the pre-command's originator is {gh['originator']}, not {eui_hex(self.eui)}",
                              "grouping_header.originator")
        signing = pre + (b"\x40" + self.sign(pre[1:]) if sign else b"\x00")
        if not mac:
            return signing
        tag = self.command_mac(signing, self.eui, gh["recipient"], gh["originator_counter"])
        return wrap_mac_header(signing, tag)

    def verify_response(self, data: bytes, msg: dict | None = None) -> dict:
        """MAC, signature and decryption verdicts of a message received from a device (see hil.verify)."""
        if msg is None:
            msg = decode(data)
        return verify_message(data, msg, self.keystore)

    # -- helpers --------------------------------------------------------------------------------------------------

    @staticmethod
    def _message_code(oi: dict) -> int:
        if oi.get("message_code") not in (None, ""):
            value = oi["message_code"]
            try:
                return value if isinstance(value, int) and not isinstance(value, bool) else int(str(value), 0)
            except ValueError:
                raise EncodeError(f"bad message code {value!r}", "grouping_header.other_information.message_code") \
                    from None
        if oi.get("use_case"):
            entry = REGISTRY.by_name(oi["use_case"])
            if entry is None:
                raise EncodeError(f"unknown use case {oi['use_case']!r}", "grouping_header.other_information.use_case")
            oi["message_code"] = entry.code_hex
            return entry.code
        raise EncodeError("message_code missing", "grouping_header.other_information")

    def _fill_payload(self, payload: dict, gh: dict, supp: bytes | None) -> None:
        counter, recipient = gh["originator_counter"], as_eui(gh["recipient"])
        if "dlms" in payload and isinstance(payload["dlms"], dict):
            for apdu in payload["dlms"].values():
                if isinstance(apdu, dict) and "long_invoke_id_and_priority" in apdu:
                    apdu["long_invoke_id_and_priority"] = _invoke_id(counter)
            for node in _walk_dicts(payload["dlms"]):
                if _is_protection_options(node):
                    v = node["value"]
                    v[0]["value"] = v[0]["value"][:2] + f"{counter:016X}"
                    v[1]["value"] = eui_hex(supp or self.eui)
                    v[2]["value"] = eui_hex(recipient)
        elif "asn1" in payload and isinstance(payload["asn1"], dict):
            value = payload["asn1"].get("value")
            if isinstance(value, dict) and "originator_counter" in value:
                value["originator_counter"] = counter
        elif "gbz" in payload and isinstance(payload["gbz"], dict):
            self._encrypt_gbz(payload["gbz"], gh)

    def _encrypt_gbz(self, gbz: dict, gh: dict) -> None:
        """Encrypt components marked `encrypted` that still hold a plain ZCL `payload`."""
        todo = []
        for comp in gbz.get("components") or ():
            if not isinstance(comp, dict) or not isinstance(comp.get("zcl"), dict):
                continue
            ehc = comp.get("extended_header_control") or {}
            if ehc.get("encrypted") and "payload" in comp["zcl"] and comp["zcl"].get("ciphered") is None:
                todo.append(comp)
        if not todo:
            return
        from protocols.zigbee.gbz import encode_zcl_payload

        parties = encryption_parties(gh)
        z = parties.secret(self.keystore)
        if z is None:
            raise KeystoreError(f"cannot encrypt for {eui_hex(parties.device)}: need the KA key pairs of "
                                f"{eui_hex(parties.peer)} (private) and {eui_hex(parties.device)}")
        for comp in todo:
            zh = comp["zcl"]
            plain = encode_zcl_payload(zh["payload"], cluster=int(comp["cluster"]),
                                       frame_control=zh["frame_control"], command_id=int(zh["command_id"]))
            sealed = encrypt_payload(z, parties.party_u, parties.party_v, parties.counter, plain)
            del zh["payload"]
            comp.setdefault("additional_header_control", 0)
            comp.setdefault("frame_counter", 0)
            zh["ciphered"] = {"security_header": {"security_control": 0x31, "invocation_counter": 0},
                              "ciphertext": sealed[:-12].hex().upper(), "tag": sealed[-12:].hex().upper()}
