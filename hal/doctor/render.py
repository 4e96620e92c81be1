"""Render a doctor report: rich on a terminal, plain text when piped, markdown, or JSON.

Every format is made from the same redacted report dict, so what one shows the others show.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from hal.units import format_bytes

FORMATS = ("rich", "plain", "markdown", "json")
_MARK = {"ok": "ok", "info": "info", "warn": "WARN", "error": "ERROR"}
_RICH_STYLE = {"ok": "green", "info": "cyan", "warn": "yellow", "error": "bold red"}


def _summary(report: Mapping[str, Any]) -> str:
    s = report["summary"]
    verdict = "problems found" if s["error"] else ("warnings" if s["warn"] else "all good")
    return (f"hal doctor: {verdict}: {s['error']} error(s), {s['warn']} warning(s), "
            f"{s['info']} note(s), {s['ok']} check(s) ok ({report.get('seconds', 0):.1f} s)")


def _system_lines(report: Mapping[str, Any]) -> list[str]:
    sysd = report.get("system") or {}
    py = sysd.get("python") or {}
    lines = [f"OS: {sysd.get('os')} ({sysd.get('machine')})",
             f"Python: {py.get('version')} {py.get('implementation', '')} at "
             f"{py.get('executable')}{' (virtualenv)' if py.get('virtualenv') else ''}",
             f"hal: {(sysd.get('hal') or {}).get('version')} at "
             f"{(sysd.get('hal') or {}).get('path')}"]
    cpu = sysd.get("cpu")
    if cpu:
        lines.append(f"CPU: {cpu['model']} ({cpu.get('architecture')}), "
                     f"{cpu.get('physical_cores')} physical / {cpu.get('logical_cores')} logical "
                     f"cores, {cpu.get('usable_cores')} usable; flags: "
                     f"{', '.join(cpu.get('flags') or []) or 'none of note'}")
    mem = sysd.get("memory")
    if mem:
        limit = mem.get("cgroup_limit")
        lines.append(f"RAM: {format_bytes(mem['total'])} total, {format_bytes(mem['available'])} "
                     f"available; cgroup limit: {format_bytes(limit) if limit else 'none'}")
    shm = sysd.get("shm")
    lines.append(f"/dev/shm: {format_bytes(shm['total'])} ({format_bytes(shm['free'])} free)"
                 if shm else "/dev/shm: missing")
    return lines


def _torch_lines(report: Mapping[str, Any]) -> list[str]:
    t = report.get("torch")
    if t is None:
        return ["not examined: the probe process did not report"]
    if not t.get("installed"):
        return ["not installed"]
    lines = []
    if t.get("imports"):
        lines.append(f"torch {t['version']}, {t['build']} build, imports in "
                     f"{t.get('import_seconds') or 0:.2f} s from {t.get('path')}")
    else:
        err = t.get("error") or {}
        lines.append(f"torch {t.get('distribution_version')} is installed but `import torch` "
                     f"fails: {err.get('type')}: {err.get('message')}")
        chain = err.get("chain") or []
        lines.extend(f"  caused by {c['type']}: {c['message']}" for c in chain[1:])
        off = t.get("autoload_disabled")
        if off:
            state = (f"imports (torch {off.get('version')}, {off.get('build')} build)"
                     if off.get("imports") else "fails too")
            lines.append(f"with TORCH_DEVICE_BACKEND_AUTOLOAD=0 it {state}")
    runtimes = t.get("runtimes") or {}
    if runtimes:
        lines.append("built for: " + ", ".join(f"{k} {v}" for k, v in runtimes.items()))
    auto = t.get("autoload") or {}
    exts = auto.get("extensions") or []
    lines.append("autoloaded device extensions: " + (", ".join(
        f"{e['name']} = {e['value']} ({e.get('distribution')} {e.get('version')})"
        for e in exts) or "none") + ("" if auto.get("enabled", True) else " (autoload off)"))
    return lines


def _backend_lines(b: Mapping[str, Any]) -> list[str]:
    state = "available" if b["available"] else "not available"
    lines = [f"{b['name']} (priority {b['priority']}, device type {b['device_type']}, "
             f"collectives {b['dist_backend']}): {state}: {b['reason']}"]
    for d in b.get("devices", []):
        mem = d.get("memory") or {}
        cap = f", {d['capability']}" if d.get("capability") else ""
        lines.append(f"  [{d['index']}] {d['name']}{cap}: {format_bytes(d['total_memory'])} "
                     f"total, {format_bytes(mem.get('free'))} free; native dtypes: "
                     f"{', '.join(d.get('dtypes', [])) or '?'}")
    versions = b.get("versions") or {}
    if versions:
        lines.append("  versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    if b.get("visible_devices_env"):
        lines.append("  visible-devices variables: " + ", ".join(b["visible_devices_env"]))
    return lines


def _plugin_line(p: Mapping[str, Any]) -> str:
    dist = f"{p['distribution']} {p['version']}" if p.get("distribution") else "no distribution"
    line = f"{p['name']}: {p['status']} [{dist}]"
    if p.get("backends"):
        line += f" backends: {', '.join(p['backends'])}"
    if p.get("error"):
        line += f"; {p['error']}"
    return line


def _selection_lines(report: Mapping[str, Any]) -> list[str]:
    sel, err = report.get("selection"), report.get("selection_error")
    if err:
        return [f"hal.get_device() fails: {err['message']}"]
    if not sel:
        return ["unknown: the probe process did not get that far"]
    from hal.commands.devices import why_line

    lines = [f"hal.get_device() -> {sel['device']} (backend {sel['backend']})",
             why_line(sel["reason"], report.get("backends") or [])]
    if (report.get("torch") or {}).get("autoload_disabled"):
        lines.append("(probed with TORCH_DEVICE_BACKEND_AUTOLOAD=0: import torch fails otherwise)")
    return lines


def _smoke_lines(report: Mapping[str, Any]) -> list[str]:
    smoke = report.get("smoke")
    if not smoke:
        return []
    return [f"{'ok' if s['ok'] else 'FAILED'} {s['name']}: "
            f"{s['detail'] if s['ok'] else s['error']} ({s['seconds'] * 1000:.1f} ms)"
            for s in smoke["steps"]]


def _sections(report: Mapping[str, Any]) -> list[tuple[str, list[str]]]:
    """The report as titled groups of lines, in reading order (findings come separately)."""
    env = report.get("environment") or {}
    out = [
        ("Selection", _selection_lines(report)),
        ("System", _system_lines(report)),
        ("torch", _torch_lines(report)),
        ("Hardware seen without torch", [
            f"{h['backend']}: {h['vendor']} {h['kind']}: {h['detail']}"
            + (f" ({h['path']})" if h.get("path") else "")
            for h in report.get("hardware", [])] or ["none"]),
        ("Backends", [line for b in report.get("backends", []) for line in _backend_lines(b)]),
        ("Plugins", [_plugin_line(p) for p in report.get("plugins", [])]),
        ("Environment", [f"{k}={v}" for k, v in env.items()]
         or ["none of the relevant variables is set"]),
    ]
    smoke = _smoke_lines(report)
    if smoke:
        out.append(("Smoke test", smoke))
    return out


def render_plain(report: Mapping[str, Any]) -> str:
    """Plain text, for pipes and logs."""
    lines: list[str] = []
    for title, body in _sections(report):
        lines.append(title)
        lines.extend(f"  {line}" for line in body)
        lines.append("")
    lines.append("Findings")
    for f in report["findings"]:
        lines.append(f"  [{_MARK[f['severity']]}] {f['id']} ({f['source']}): {f['message']}")
        if f.get("fix"):
            lines.append(f"      fix: {f['fix']}")
    lines.append("")
    lines.append(_summary(report))
    return "\n".join(lines) + "\n"


def _md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(report: Mapping[str, Any]) -> str:
    """Markdown for pasting into a bug report: findings table first, details after."""
    lines = [f"## hal doctor report (`{report['schema']}`)", "", f"**{_summary(report)}**", "",
             "| severity | id | source | message | fix |", "|---|---|---|---|---|"]
    for f in report["findings"]:
        lines.append(f"| {f['severity']} | `{f['id']}` | {_md(f['source'])} | "
                     f"{_md(f['message'])} | {_md(f.get('fix') or '')} |")
    for title, body in _sections(report):
        lines += ["", f"### {title}", "", "```text", *body, "```"]
    return "\n".join(lines) + "\n"


def render_json(report: Mapping[str, Any]) -> str:
    """The report as indented JSON (schema ``hal.doctor/1``)."""
    return json.dumps(report, indent=2, default=str) + "\n"


def render_rich(report: Mapping[str, Any], console: Any = None) -> str:
    """Coloured sections and a findings table on ``console`` (default: recorded into a string,
    width 120); returns the text without colour when recorded."""
    import io

    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    con = console or Console(file=io.StringIO(), highlight=False, record=True, width=120)
    for title, body in _sections(report):
        con.print(f"[bold]{escape(title)}[/bold]")
        for line in body:
            con.print(f"  {escape(line)}")
        con.print()
    table = Table(title="Findings", show_lines=False, expand=True)
    for col in ("severity", "id", "message", "fix"):
        table.add_column(col, overflow="fold")
    for f in report["findings"]:
        style = _RICH_STYLE[f["severity"]]
        table.add_row(f"[{style}]{_MARK[f['severity']]}[/{style}]", escape(f["id"]),
                      escape(f["message"]), escape(f.get("fix") or ""))
    con.print(table)
    style = "bold red" if report["summary"]["error"] else "bold green"
    con.print(f"[{style}]{escape(_summary(report))}[/{style}]")
    exported: str = con.export_text() if getattr(con, "record", False) else ""
    return exported


RENDERERS: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "plain": render_plain,
    "markdown": render_markdown,
    "json": render_json,
}


def render(report: Mapping[str, Any], fmt: str) -> str:
    """The report as text in format ``fmt`` (one of FORMATS; rich is returned uncoloured)."""
    if fmt == "rich":
        return render_rich(report)
    return RENDERERS[fmt](report)

