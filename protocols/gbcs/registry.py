"""The message-code registry: every GBCS message code with its spec name (`ECS17b`), title, criticality,
target device types and payload family.

The data (`registry.json`) is generated from the GBCS use-case appendix and its companion lists by
`tools/gen_registry.py`, never typed by hand; `tests/test_registry.py` checks it still matches the spec files.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources

__all__ = ["UseCaseEntry", "Registry", "REGISTRY"]


@dataclass(frozen=True, slots=True)
class UseCaseEntry:
    code: int
    name: str
    title: str
    message_type: str | None = None
    critical: bool | None = None
    future_dated_capable: bool | None = None
    replay_protection: bool | None = None
    target_devices: tuple[str, ...] = ()
    payload_families: tuple[str, ...] = ()
    roles: tuple[str, ...] | None = None
    service_reference: str | None = None
    sources: tuple[str, ...] = field(default=(), compare=False)

    @property
    def code_hex(self) -> str:
        return f"0x{self.code:04X}"

    def as_dict(self) -> dict:
        return {
            "code": self.code_hex, "name": self.name, "title": self.title, "message_type": self.message_type,
            "critical": self.critical, "future_dated_capable": self.future_dated_capable,
            "replay_protection": self.replay_protection, "target_devices": list(self.target_devices),
            "payload_families": list(self.payload_families),
            "roles": None if self.roles is None else list(self.roles),
            "service_reference": self.service_reference, "sources": list(self.sources),
        }


class Registry:
    """Look-ups by code and by spec name. Some codes carry several names (CS02b variants share none, but
    CS08 and CS06 share 0x0012 in one list); `get` returns the primary entry, `names_for` all of them."""

    def __init__(self, entries: list[UseCaseEntry], aliases: dict[str, int]):
        self._by_code: dict[int, UseCaseEntry] = {}
        self._by_name: dict[str, UseCaseEntry] = {}
        self._names: dict[int, tuple[str, ...]] = {}
        for e in entries:
            self._by_code.setdefault(e.code, e)
            self._by_name[e.name.upper()] = e
            self._names[e.code] = self._names.get(e.code, ()) + (e.name,)
        for alias, code in aliases.items():
            if code in self._by_code:
                self._by_name.setdefault(alias.upper(), self._by_code[code])
        self.entries = entries

    def get(self, code: int) -> UseCaseEntry | None:
        return self._by_code.get(code)

    def by_name(self, name: str) -> UseCaseEntry | None:
        return self._by_name.get(name.upper())

    def names_for(self, code: int) -> list[str]:
        return list(self._names.get(code, ()))

    def __iter__(self):
        return iter(self._by_code.values())

    def __len__(self) -> int:
        return len(self._by_code)

    def __contains__(self, code: int) -> bool:
        return code in self._by_code


def _load() -> Registry:
    try:
        text = resources.files("protocols.gbcs").joinpath("registry.json").read_text()
    except FileNotFoundError:
        return Registry([], {})
    data = json.loads(text)
    entries = [
        UseCaseEntry(
            code=int(e["code"], 16), name=e["name"], title=e["title"], message_type=e.get("message_type"),
            critical=e.get("critical"), future_dated_capable=e.get("future_dated_capable"),
            replay_protection=e.get("replay_protection"), target_devices=tuple(e.get("target_devices") or ()),
            payload_families=tuple(e.get("payload_families") or ()),
            roles=None if e.get("roles") is None else tuple(e["roles"]),
            service_reference=e.get("service_reference"), sources=tuple(e.get("sources") or ()),
        )
        for e in data["entries"]
    ]
    return Registry(entries, data.get("aliases", {}))


REGISTRY = _load()
