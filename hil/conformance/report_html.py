"""`conformance rtds --html FILE`: one self-contained HTML page (inline CSS, no script, no external resource) for
a person reading a run: the summary, a table per device type, then every case with its status, its failure
lines and the decoded JSON of the expected messages (RTDS files) beside the emitted ones.

Everything that comes from a file or a device (case names, failure lines, decoded values, error texts) goes
through `html.escape`, so a hostile device or file name cannot inject markup. Expected and emitted messages are
paired as the runner compares them: the response first, then alerts in order; a message without a partner is
shown beside an empty cell. Each decoded message is cut at `MAX_JSON` characters to bound the page.
"""
from __future__ import annotations

import html
import json
from collections import Counter, defaultdict
from datetime import datetime, timezone
from itertools import zip_longest
from pathlib import Path

from protocols.errors import GbcsEmuError, guarded
from protocols.gbcs.message import decode

__all__ = ["render_html", "write_html", "MAX_JSON"]

MAX_JSON = 200_000

_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.5em}
table.s{border-collapse:collapse}table.s td,table.s th{border:1px solid #bbb;padding:.2em .6em;text-align:right}
table.s th:first-child,table.s td:first-child{text-align:left}
.passed{color:#176117}.failed{color:#b00020}.skipped{color:#7a6a00}
details{border:1px solid #ddd;border-radius:4px;margin:.3em 0;padding:.2em .5em}
details.failed{border-color:#e0a0a8;background:#fff6f7}
summary{cursor:pointer}summary .st{display:inline-block;width:5.5em;font-weight:bold}
ul.f{font-family:monospace;font-size:.9em}
table.m{width:100%;table-layout:fixed;border-collapse:collapse}
table.m th{text-align:left;background:#f0f0f0}table.m td{vertical-align:top;border-top:1px solid #eee}
pre{white-space:pre-wrap;word-break:break-all;font-size:.8em;max-height:30em;overflow:auto;margin:.2em}
"""


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _json(data: bytes | None, path: Path | None = None) -> str:
    """The decoded JSON of one message (or the decode error), escaped."""
    try:
        if data is None and path is not None:
            from hil.conformance.codec import read_message_file
            data = read_message_file(path)
        text = json.dumps(guarded(decode, data), indent=1, default=str)
    except (GbcsEmuError, OSError, ValueError) as e:
        text = f"(cannot decode: {type(e).__name__}: {e})"
        if data is not None:
            text += "\n" + data.hex().upper()
    if len(text) > MAX_JSON:
        text = text[:MAX_JSON] + f"\n… ({len(text) - MAX_JSON} more characters)"
    return _e(text)


def _cra(frame: bytes) -> int | None:
    from hil.conformance.rtds import _cra
    return _cra(frame)


def _messages(result) -> list[tuple[str, str, str, str]]:
    """(expected label, expected JSON, emitted label, emitted JSON) rows: response first, then alerts."""
    case = result.case
    expected: list[tuple[str, Path]] = []
    if case.response is not None:
        expected.append(("response", case.response))
    expected += [("alert", p) for p in case.alerts]
    emitted_resp = [f for f in result.frames if _cra(f) == 2]
    emitted_other = [f for f in result.frames if _cra(f) != 2]
    exp_resp = [e for e in expected if e[0] == "response"]
    exp_other = [e for e in expected if e[0] != "response"]
    rows = []
    for group_exp, group_got in ((exp_resp, emitted_resp), (exp_other, emitted_other)):
        for exp, got in zip_longest(group_exp, group_got):
            rows.append((f"{exp[0]}: {exp[1].name}" if exp else "", _json(None, exp[1]) if exp else "",
                         {2: "response", 3: "alert"}.get(_cra(got), "frame") if got is not None else "",
                         _json(got) if got is not None else ""))
    return rows


def render_html(report, *, target: str = "inproc:", keystore=None, title: str = "RTDS conformance") -> str:
    """The page as a string (see the module docstring). `keystore` is accepted for future decryption."""
    del keystore
    results = report.results
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
           f"<h1>{_e(title)}</h1>",
           f"<p>Target <code>{_e(target)}</code> · {len(results)} cases · generated {_e(now)}</p>",
           '<p class="sum">'
           f'<span class="passed">{report.passed} passed</span>, '
           f'<span class="failed">{report.failed} failed</span>, '
           f'<span class="skipped">{report.skipped} skipped</span></p>']
    if report.skipped:
        groups = ", ".join(f"{_e(k)}: {n}" for k, n in sorted(report.skipped_by.items(), key=lambda kv: (-kv[1], kv[0])))
        out.append(f"<p>Skipped by reason: {groups}</p>")

    by_type: dict[str, Counter] = defaultdict(Counter)
    for r in results:
        by_type[r.device_type or "unknown"][r.status] += 1
    out.append("<h2>By device type</h2>")
    out.append('<table class="s"><tr><th>device type</th><th>passed</th><th>failed</th><th>skipped</th>'
               "<th>total</th></tr>")
    for dtype in sorted(by_type):
        c = by_type[dtype]
        out.append(f"<tr><td>{_e(dtype)}</td><td class=\"passed\">{c['passed']}</td>"
                   f"<td class=\"failed\">{c['failed']}</td><td class=\"skipped\">{c['skipped']}</td>"
                   f"<td>{sum(c.values())}</td></tr>")
    out.append("</table>")

    fields = report.failures_by_field()
    if fields:
        out.append("<h2>Failures by field</h2><table class=\"s\"><tr><th>field</th><th>lines</th></tr>")
        for f, n in fields.most_common(30):
            out.append(f"<tr><td><code>{_e(f)}</code></td><td>{n}</td></tr>")
        out.append("</table>")

    out.append("<h2>Cases</h2>")
    for r in results:
        st = r.status
        head = (f'<summary><span class="st {st}">{st.upper()}</span> <code>{_e(r.case.name)}</code>'
                f" · {_e(r.device_type or '?')} {_e(r.eui or '')} · {r.seconds * 1000:.0f} ms</summary>")
        out.append(f'<details class="{st}"{" open" if st == "failed" else ""}>{head}')
        if st == "skipped":
            out.append(f"<p>{_e(r.reason)}</p>")
        if r.failures:
            out.append('<ul class="f">' + "".join(f"<li>{_e(f)}</li>" for f in r.failures) + "</ul>")
        if st != "skipped":
            rows = _messages(r)
            if rows:
                out.append('<table class="m"><tr><th>expected (RTDS)</th><th>emitted (device)</th></tr>')
                for el, ej, gl, gj in rows:
                    out.append(f"<tr><td><b>{_e(el)}</b><pre>{ej}</pre></td>"
                               f"<td><b>{_e(gl)}</b><pre>{gj}</pre></td></tr>")
                out.append("</table>")
        out.append("</details>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def write_html(report, path: Path, *, target: str = "inproc:", keystore=None,
               title: str = "RTDS conformance") -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(report, target=target, keystore=keystore, title=title), encoding="utf-8")
