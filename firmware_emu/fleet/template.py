"""Installer commissioning: a premises materialised directly in its commissioned state from a per-kind template.

Theory of operation
-------------------
Commissioning a premises through the use cases (CCS01 per HAN device, the HAN joins, the CS03 joins: what
`Premises.commission` does) costs milliseconds of protocol work per premises, the same work for every premises
of one kind. `commissioning.method = "installer"` does it once per kind and stamps the result into every other
premises of that kind, as an SMI installer who commissioned the premises before the fleet met its head end:

1. **Template.** The first premises of a kind that needs materialising is commissioned through the real use
   cases, `INSTALL_LEAD` simulated seconds in the past, then *settled*: its clock runs until what the
   installation set off has happened (the hub's CS14 whitelist alert, HAN traffic), at most `SETTLE` seconds.
   Its state, as JSON text, is the kind's template; that premises itself keeps it (it is exactly its state).
2. **Stamp.** Another premises of the kind is the template's text with its own identity substituted: the EUIs
   (`<prefix><index>` is one 14-digit run in every EUI of a premises), the install codes (with and without
   CRC, seeded per premises and EUI as `Premises` makes them) and the hub's hashed link keys derived from them,
   the premises seed, the wake phase (and the sleepy devices' next wakes by their own rule, `finish`). The
   prepayment consumption baselines are cleared (the meter starts charging at its first tick). What it shares with the
   template: the simulated HAN's parameters (PAN id, network key, short addresses, random state), the alert
   and head-end counters, the logs' times (it was installed at the same moment).
3. **Check.** Before a template is used, a second premises of the kind (`probe`) is commissioned through the
   use cases at the same time and compared with its stamp; any difference outside the shared HAN parameters
   disables the template for that kind (every premises of it is then commissioned through the use cases) and
   is logged with the paths that differ. So a device type whose commissioned state depends on something the
   stamp does not know falls back to the full protocol instead of producing a wrong premises.

A template ages: the premises stamped from it start at its time and catch up on their first frame (a GSME's
idle wakes cost about 1 ms each), so a template older than `max_age` simulated seconds is replaced by a new
one. A stored row is the stamped premises' own full state: a restart needs no template.
"""
from __future__ import annotations

import json
import logging
import random

from firmware_emu.core import jsonio
from firmware_emu.chf.network import install_code_link_key, mmo_hash

log = logging.getLogger(__name__)

__all__ = ["PremisesTemplate", "TemplateMismatch", "INSTALL_LEAD", "SETTLE", "SHARED_PATHS", "settle",
           "compare_states"]

#: The template is installed this many simulated seconds before it is first needed.
INSTALL_LEAD = 10.0
#: ... and its clock runs at most this long after the installation (device schedules, HAN traffic).
SETTLE = 9.0
#: Prepayment consumption baselines a stamp clears (the meter starts charging at its first tick).
BASELINES = ("last_register_wh", "last_volume")
#: State paths a stamped premises shares with its template (the simulated HAN's draws), as prefixes.
SHARED_PATHS = (("han", "rng"), ("han", "pan_id"), ("han", "network_key"), ("han", "nodes", "*", "network_key"),
                ("han", "nodes", "*", "short"), ("han", "log"))


class TemplateMismatch(Exception):
    """A stamp differs from the same premises commissioned through the use cases (paths in `paths`)."""

    def __init__(self, paths: list[str]):
        self.paths = paths
        super().__init__(", ".join(paths[:8]) + (" ..." if len(paths) > 8 else ""))


def settle(p, until: float) -> None:
    """Run a premises' clock over what is due up to `until` (device schedules, HAN frames); frames dropped."""
    for _ in range(10_000):
        due = [p.net.next_due()] + [d.next_wakeup() for d in p.devices.values()]
        due = [t for t in due if t is not None and t <= until]
        if not due:
            break
        p.tick(max(min(due), p.now))


def _crc(code_hex: str) -> str:
    from firmware_emu.han.install_code import with_crc
    return with_crc(bytes.fromhex(code_hex)).hex().upper()


def _hashed_link_key(code_hex: str) -> str:
    return mmo_hash(install_code_link_key(bytes.fromhex(code_hex))).hex().upper()


class PremisesTemplate:
    """One kind's commissioned, settled premises as JSON text, and the recipe to stamp another identity in.

    `state` is the template premises' `Premises.state()`; `idx` its index; `stem(idx)` gives the 14-hex-digit run
    every EUI of premises idx starts with; `install_code(seed, eui)` the premises' install-code rule;
    `wake_phase(seed, installed_at, interval)` its wake-phase rule; `joins` {sleepy EUI: when it joined}."""

    def __init__(self, tid: str, kind: str, idx: int, state: dict, *, stem, install_code, wake_phase,
                 installed_at: float, joins: dict | None = None):
        self.id, self.kind, self.idx = tid, kind, idx
        self.stem, self.install_code, self.wake_phase = stem, install_code, wake_phase
        self.installed_at = installed_at
        self.made_at = float(state["now"])
        self.joins = dict(joins or {})
        self.seed = state["seed"]
        han = dict(state["han"])
        self.rng = han.pop("rng", None)                 # the HAN generator's state: every stamp starts from it
        self.text = json.dumps(dict(state, han=han), separators=(",", ":"))
        if self.text.count(stem(idx)) == 0 or stem(idx).lower() in self.text:
            raise TemplateMismatch([f"EUI stem {stem(idx)} not found (or in lower case)"])
        self.types = dict(state["types"])                # EUI -> device type (template EUIs)
        self.interval = float(state["wake"]["interval"])
        self.phase = float(state["wake"]["phase"])
        self._codes = {e: (code, _crc(code), _hashed_link_key(code))       # the template's side, made once
                       for e, code in state["install_codes"].items()}
        self.usable = True

    def stamp(self, idx: int, seed: int) -> dict:
        """The state of premises `idx` (seed `seed`) stamped from this template (module docstring)."""
        t_stem, stem = self.stem(self.idx), self.stem(idx)
        subs: list[tuple[str, str]] = []
        for e, (code, code_crc, link) in self._codes.items():
            mine = self.install_code(seed, stem + e[len(t_stem):])
            if mine == code:
                continue
            subs.append((code_crc, _crc(mine)))         # the HAN's form first (it starts with the plain one)
            subs.append((code, mine))
            subs.append((link, _hashed_link_key(mine)))
        phase = self.wake_phase(seed, self.installed_at, self.interval)
        subs.append((f'"phase":{self.phase!r}', f'"phase":{phase!r}'))
        subs.append((f'"poll_phase":{self.phase!r}', f'"poll_phase":{phase!r}'))
        subs.append((f'"seed":{self.seed}', f'"seed":{seed}'))
        text = self.text.replace(t_stem, stem) if stem != t_stem else self.text
        for old, new in subs:
            text = text.replace(old, new)
        st = jsonio.loads(text)
        if self.rng is not None:
            st["han"]["rng"] = self.rng
        for dev in st["devices"].values():           # the prepayment baseline: {type section: {prepayment}}
            for section in dev.values():
                pp = section.get("prepayment") if type(section) is dict else None
                if type(pp) is dict:
                    for key in BASELINES:
                        if key in pp:
                            pp[key] = None
        return st

    def finish(self, p) -> None:
        """The sleepy devices' next wake on the stamped premises' own wake rule (the device's, else the phase
        grid), from when they joined."""
        t_stem = self.stem(self.idx)
        stem = p.chf_eui[:len(t_stem)]
        nxt = p.st["wake"]["next"]
        for e, joined_at in self.joins.items():
            e2 = stem + e[len(t_stem):]
            if e2 in nxt:
                nxt[e2] = p._wake_after(e2, joined_at)


def _walk(a, b, path: tuple, out: list) -> None:
    if type(a) is dict and type(b) is dict:
        for k in a.keys() | b.keys():
            if k not in a or k not in b:
                out.append(path + (k,))
            else:
                _walk(a[k], b[k], path + (k,), out)
    elif type(a) is list and type(b) is list and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            _walk(x, y, path + (i,), out)
    elif a != b or type(a) is not type(b):
        out.append(path)


def _shared(path: tuple) -> bool:
    for pat in SHARED_PATHS:
        if len(path) >= len(pat) and all(p == "*" or p == q for p, q in zip(pat, path)):
            return True
    return False


def compare_states(stamped: dict, real: dict) -> list[str]:
    """Paths where a stamp differs from the real premises, the shared HAN parameters and the prepayment
    baselines (cleared by the stamp) aside."""
    out: list[tuple] = []
    _walk(stamped, real, (), out)
    return ["/".join(map(str, p)) for p in out if not _shared(p) and p[-1] not in BASELINES]


def random_phase(seed: int, installed_at: float, interval: float) -> float:
    """`Premises`' wake phase rule: the first draw of Random(seed), over one interval from the installation."""
    return installed_at + random.Random(seed).random() * interval
