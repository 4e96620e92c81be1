"""``hal watch``: one live view of every device of every backend (memory, use, power, processes).

A terminal gets a rich live table refreshed every ``--interval`` seconds (``q`` or Ctrl-C
quits and restores the terminal); ``--once`` prints one snapshot; ``--json`` streams one object
per tick (schema ``hal.watch/1``); ``--csv`` logs rows for ``--plot``.  Output to a pipe never
carries terminal control codes: without ``--json`` it is a plain ``--once`` snapshot.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import os
import select
import sys
import time
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TextIO

from hal.commands import completes_path

if TYPE_CHECKING:
    from rich.console import RenderableType

    from hal.telemetry import DeviceReading, Sampler

#: Columns of the ``--csv`` log, in order (``--plot`` reads them back).
CSV_FIELDS = ("time", "device", "name", "memory_used", "memory_total", "utilization", "power",
              "power_limit", "temperature", "clock", "memory_clock", "error")
SPARKS = "▁▂▃▄▅▆▇█"
HISTORY_SECONDS = 60.0
TOP_PROCESSES = 3
#: Probes may import torch and a vendor runtime once: allow them longer than a sample.
DISCOVERY_TIMEOUT = 60.0


def add_parser(sub: Any) -> None:
    """Register the ``watch`` command."""
    p = sub.add_parser("watch", help="live memory, utilisation, power and processes of every device")
    p.add_argument("--interval", default="1", metavar="SECONDS",
                   help="seconds between samples (default 1; more than 0, at most 3600)")
    p.add_argument("--once", action="store_true", help="print one snapshot and exit")
    p.add_argument("--json", action="store_true",
                   help="stream one JSON object per tick (schema hal.watch/1)")
    p.add_argument("--count", metavar="N", help="stop after N samples")
    completes_path(p.add_argument("--csv", metavar="FILE",
                                  help="append one row per device and sample to FILE"))
    completes_path(p.add_argument("--plot", metavar="PNG",
                                  help="draw the --csv FILE log into PNG and exit (needs matplotlib)"))
    p.add_argument("--timeout", default="2", metavar="SECONDS",
                   help="how long a backend's telemetry may take before its row says so (default 2)")
    p.set_defaults(run=run)


# -- rendering ------------------------------------------------------------------------------


def _fmt_bytes(n: int | None) -> str:
    from hal.units import format_bytes

    return format_bytes(n) if n is not None else "n/a"


def _num(value: float | None, unit: str, digits: int = 0) -> str:
    return "n/a" if value is None else f"{value:.{digits}f} {unit}"


def sparkline(values: Sequence[float | None]) -> str:
    """Utilisation history (0..1 values, None for gaps) as block characters."""
    out = []
    for v in values:
        out.append(" " if v is None else SPARKS[min(len(SPARKS) - 1, int(v * len(SPARKS)))])
    return "".join(out)


def _bar(fraction: float | None, width: int = 12) -> str:
    if fraction is None:
        return "n/a".ljust(width + 6)
    filled = round(fraction * width)
    return "█" * filled + "░" * (width - filled) + f" {fraction * 100:3.0f}%"


def _pct(fraction: float | None) -> str:
    return "n/a" if fraction is None else f"{fraction * 100:3.0f}%"


GAP = 2  # spaces between columns


class _Column:
    """One column of a fitted table: its header, its cells in each variant (widest first), and
    how far it has been narrowed (a cut width, a narrower variant, or dropped)."""

    def __init__(self, header: str, variants: list[list[Any]] | None = None,
                 keep: str = "start") -> None:
        self.header = header
        self.variants = variants or [[]]
        self.keep = keep  # the end a cut keeps: "start" (ellipsis at the end) or "end" (newest)
        self.variant = 0
        self.cut: int | None = None
        self.dropped = False

    def natural(self, key_cells: Sequence[Any] = ()) -> int:
        from rich.cells import cell_len

        cells = [*self.variants[self.variant], *key_cells]
        return int(max([cell_len(self.header), *(cell.cell_len for cell in cells)]))

    def width(self, key_cells: Sequence[Any] = ()) -> int:
        natural = self.natural(key_cells)
        return 0 if self.dropped else natural if self.cut is None else min(natural, self.cut)

    def fit(self, cell: Any, width: int, ellipsis: str = "…") -> Any:
        """``cell`` (a rich Text) cut to ``width`` from the end this column keeps, padded."""
        cell = cell.copy()
        if cell.cell_len > width:
            if self.keep == "end":
                cell = cell[len(cell) - width:]
            else:
                cell.truncate(max(0, width - len(ellipsis)))
                cell.append(ellipsis[:width])
        cell.pad_right(width - cell.cell_len)
        return cell


class FittedTable:
    """Rows of text columns laid out for the width rich renders them at: when they do not
    fit, ``steps`` narrow them in order (least important first), so the key column, first,
    is the last to shrink.  A note row is a key and one text spanning the other columns."""

    def __init__(self, headers: Sequence[str], steps: Sequence[tuple[str, str, int]],
                 keep_end: Sequence[str] = ()) -> None:
        self.headers = list(headers)
        self.steps = list(steps)  # (column, "cut" to at least N | "variant" N | "drop", N)
        self.keep_end = set(keep_end)
        self.rows: list[list[Any]] = []  # per row, a cell (or a list of variants) per column
        self.notes: list[tuple[int, Any, Any]] = []  # (position among rows, key, text)

    def add_row(self, *cells: Any) -> None:
        """One row: per column a Text (or str), or a list of them, widest variant first."""
        self.rows.append(list(cells))

    def add_note(self, key: str, text: Any) -> None:
        self.notes.append((len(self.rows), key, text))

    @property
    def row_count(self) -> int:
        return len(self.rows) + len(self.notes)

    def _columns(self) -> list[_Column]:
        from rich.text import Text

        def text(cell: Any) -> Text:
            return cell if isinstance(cell, Text) else Text(str(cell))

        columns = []
        for i, header in enumerate(self.headers):
            cells = [row[i] if isinstance(row[i], list) else [row[i]] for row in self.rows]
            depth = max((len(c) for c in cells), default=1)
            variants = [[text(c[min(v, len(c) - 1)]) for c in cells] for v in range(depth)]
            columns.append(_Column(header, variants, "end" if header in self.keep_end
                                   else "start"))
        return columns

    def layout(self, width: int, ellipsis: str = "…") -> list[Any]:
        """The table's lines, none wider than ``width`` (while the key column fits at all);
        ``ellipsis`` marks a cut (``...`` where the output's encoding lacks the character)."""
        from rich.text import Text

        columns = self._columns()
        by_name = {c.header: c for c in columns}
        keys = [Text(key) for _, key, _ in self.notes]

        def total() -> int:
            widths = [c.width(keys if c is columns[0] else ()) for c in columns]
            shown = [w for w, c in zip(widths, columns) if not c.dropped]
            return sum(shown) + GAP * (len(shown) - 1)

        for name, action, n in self.steps:
            excess = total() - width
            if excess <= 0:
                break
            col = by_name[name]
            if col.dropped:
                continue
            if action == "cut":
                now = col.width(keys if col is columns[0] else ())
                col.cut = max(min(n, now), now - excess)
            elif action == "variant":
                col.variant = max(col.variant, min(n, len(col.variants) - 1))
            elif action == "drop" and col is not columns[0]:
                col.dropped = True
        # What later steps freed goes back to the cut columns, the most important first.
        for name, action, _ in reversed(self.steps):
            col = by_name[name]
            slack = width - total()
            if action == "cut" and col.cut is not None and not col.dropped and slack > 0:
                col.cut += slack
        shown = [c for c in columns if not c.dropped]
        widths = [c.width(keys if c is columns[0] else ()) for c in shown]
        gap = " " * GAP

        def line(cells: list[Any]) -> Text:
            out = Text(gap).join(cells)
            out.rstrip()
            return out

        header = line([_Column("").fit(Text(c.header, style="bold"), w, ellipsis)
                       for c, w in zip(shown, widths)])
        lines: list[Text] = [header]
        notes = list(self.notes)
        for r in range(len(self.rows) + 1):
            while notes and notes[0][0] == r:
                _, key, text = notes.pop(0)
                lines.extend(self._note(key, text, widths[0], width))
            if r < len(self.rows):
                lines.append(line([c.fit(c.variants[c.variant][r], w, ellipsis)
                                   for c, w in zip(shown, widths)]))
        return lines

    def _note(self, key: str, text: Any, key_width: int, width: int) -> list[Any]:
        """A note row: the key, then its text wrapped in the width left (under itself)."""
        import textwrap

        from rich.text import Text

        indent = key_width + GAP
        room = max(10, width - indent)
        plain = text.plain if isinstance(text, Text) else str(text)
        style = text.style if isinstance(text, Text) else ""
        out = []
        for i, part in enumerate(textwrap.wrap(plain, room) or [""]):
            head = _Column("").fit(Text(key if i == 0 else ""), key_width)
            out.append(Text.assemble(head, " " * GAP, Text(part, style=style)))
        return out

    def __rich_console__(self, console: Any, options: Any) -> Iterator[Any]:
        try:
            "…".encode(options.encoding or "utf-8")
            ellipsis = "…"
        except (UnicodeError, LookupError):
            ellipsis = "..."
        yield from self.layout(options.max_width, ellipsis)


#: How the device table narrows, least important first: the sparkline keeps its newest
#: samples, names are cut, bars give way to their percentages, then whole columns go.
DEVICE_STEPS = (("last minute", "cut", 5), ("name", "cut", 10), ("use", "variant", 1),
                ("memory", "variant", 1), ("last minute", "drop", 0), ("clock", "drop", 0),
                ("temp", "drop", 0), ("power", "drop", 0), ("name", "drop", 0),
                ("use", "drop", 0), ("memory", "cut", 4), ("device", "cut", 3))
#: The process table: the command first, device, pid, user and memory kept longest.
PROCESS_STEPS = (("command", "cut", 12), ("user", "cut", 8), ("command", "drop", 0),
                 ("memory", "drop", 0), ("user", "drop", 0), ("pid", "drop", 0),
                 ("device", "cut", 3))


class View:
    """What the watcher shows: the latest readings plus a minute of utilisation per device."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.depth = max(2, min(120, math.ceil(HISTORY_SECONDS / interval)))
        self.history: dict[str, deque[float | None]] = {}
        self.readings: list[DeviceReading] = []
        self.unavailable: dict[str, str] = {}

    def update(self, readings: list[DeviceReading]) -> None:
        self.readings = readings
        for r in readings:
            key = f"{r.backend}:{r.index}"
            hist = self.history.setdefault(key, deque(maxlen=self.depth))
            hist.append(r.telemetry.utilization if r.telemetry is not None else None)

    def table(self) -> RenderableType:
        """The rich renderable: one row per device, its top processes beneath it, both fitted
        to the width they are rendered at."""
        from rich.console import Group
        from rich.text import Text

        table = FittedTable(("device", "name", "memory", "use", "last minute", "power", "temp",
                             "clock"), DEVICE_STEPS, keep_end=("last minute",))
        for r in self.readings:
            key = f"{r.backend}:{r.index}"
            t = r.telemetry
            if t is None:
                table.add_note(key, Text(r.error or "no reading", style="red"))
                continue
            if t.source.startswith("none:"):  # the backend says why it has no figures
                name = f"{t.name}: " if t.name else ""
                table.add_note(key, Text(name + t.source[5:].strip(), style="yellow"))
                continue
            figures = ""
            if t.memory_total is not None:
                figures = f" {_fmt_bytes(t.memory_used)}/{_fmt_bytes(t.memory_total)}"
            elif t.memory_used is not None:  # total unknown (some sysfs sources): show the used
                figures = f" {_fmt_bytes(t.memory_used)} used"
            memory = [_bar(t.memory_fraction) + figures, _pct(t.memory_fraction) + figures]
            power = _num(t.power, "W")
            if t.power_limit is not None:
                power += f"/{t.power_limit:.0f}"
            spark = sparkline(list(self.history.get(key, ())))
            table.add_row(key, t.name or "", memory, [_bar(t.utilization, 8), _pct(t.utilization)],
                          Text(spark, style="green"), power, _num(t.temperature, "C"),
                          _num(t.clock, "MHz"))
        procs = FittedTable(("device", "pid", "user", "memory", "command"), PROCESS_STEPS)
        for r in self.readings:
            for p in ((r.telemetry.processes or ()) if r.telemetry else ())[:TOP_PROCESSES]:
                procs.add_row(f"{r.backend}:{r.index}", str(p.pid), p.user or "?",
                              _fmt_bytes(p.memory), p.command or "?")
        parts: list[RenderableType] = [table]
        if procs.row_count:
            parts.extend([Text(""), procs])
        if self.unavailable:
            gone = "; ".join(f"{k}: {v}" for k, v in sorted(self.unavailable.items()))
            parts.append(Text(f"not watched (unavailable): {gone}", style="dim"))
        return Group(*parts)


# -- output sinks ---------------------------------------------------------------------------


def _tick_json(tick: int, readings: list[DeviceReading], unavailable: dict[str, str]) -> str:
    from hal.telemetry import SCHEMA

    return json.dumps({"schema": SCHEMA, "tick": tick,
                       "time": round(readings[0].time if readings else time.time(), 3),
                       "devices": [r.as_dict() for r in readings],
                       "unavailable": unavailable}, separators=(",", ":"))


def _csv_rows(readings: list[DeviceReading]) -> Iterator[list[Any]]:
    for r in readings:
        t = r.telemetry
        yield [round(r.time, 3), f"{r.backend}:{r.index}", t.name if t else "",
               *(("" if t is None or getattr(t, f) is None else getattr(t, f))
                 for f in CSV_FIELDS[3:-1]), r.error or ""]


class CsvLog:
    """The ``--csv`` log: rows appended under hal's header, never into a file that holds something
    else, and its own write errors kept apart from stdout's (the snapshot is still printed)."""

    def __init__(self, path: str) -> None:
        from hal.errors import ConfigError

        self.path = path
        #: why the log stopped (a full disk, say); the command fails with it after its output
        self.error: str | None = None
        try:
            self._header = self._needs_header()
            self._file: TextIO | None = open(path, "a", newline="", encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            raise ConfigError(f"--csv {path!r} cannot be written: {exc.strerror or exc}") from None
        self._writer = csv.writer(self._file)

    def _needs_header(self) -> bool:
        """True for a new or empty file (or a device, a pipe); ConfigError for a regular file whose
        first line is not hal's header: appending rows to notes or another tool's CSV corrupts it."""
        import stat

        from hal.errors import ConfigError

        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return True
        if not stat.S_ISREG(st.st_mode) or st.st_size == 0:
            return True
        with open(self.path, "rb") as f:
            first = f.readline(4096).rstrip(b"\r\n")
        if first != ",".join(CSV_FIELDS).encode():
            raise ConfigError(
                f"--csv {self.path!r} already holds something that is not a `hal watch --csv` "
                f"log (its first line is not {','.join(CSV_FIELDS[:3])},...); give a new file "
                "or one this command wrote")
        return False

    def write(self, readings: list[DeviceReading]) -> None:
        """Append one row per reading; a write error stops the log and is kept in ``error``."""
        if self._file is None:
            return
        try:
            if self._header:
                self._writer.writerow(CSV_FIELDS)
                self._header = False
            self._writer.writerows(_csv_rows(readings))
            self._file.flush()
        except OSError as exc:
            self.error = f"--csv {self.path!r} cannot be written: {exc.strerror or exc}"
            self.close()

    def check(self) -> None:
        """Fail (one HalError line) once the log could not be written: after the tick's output."""
        from hal.errors import HalError

        if self.error is not None:
            raise HalError(self.error)

    def close(self) -> None:
        """Close the file; a flush that fails again changes nothing (the error is kept)."""
        file, self._file = self._file, None
        if file is not None:
            with contextlib.suppress(OSError):
                file.close()


@contextmanager
def _keys(stream: TextIO) -> Iterator[int | None]:
    """cbreak mode on a terminal stdin (keys arrive unbuffered); always restored; None if no tty."""
    try:
        fd = stream.fileno()
        interactive = os.isatty(fd)
    except (OSError, ValueError, AttributeError):
        interactive = False
    if not interactive:
        yield None
        return
    import termios
    import tty

    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield fd
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _wait(fd: int | None, seconds: float) -> bool:
    """Sleep up to ``seconds``; True when the user pressed q (or stdin closed)."""
    deadline = time.monotonic() + seconds
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        if fd is None:
            time.sleep(left)
            return False
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            data = os.read(fd, 64)
            if not data or b"q" in data.lower():
                return True


# -- plotting -------------------------------------------------------------------------------


def plot(log: str, png: str) -> int:
    """Draw a ``--csv`` log into a PNG: memory use and utilisation per device over time."""
    from hal.errors import ConfigError

    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        from hal.console import install_hint

        sys.stderr.write(f"hal: error: --plot needs matplotlib: {install_hint('plot')}\n")
        return 2
    series: dict[str, list[tuple[float, float | None, float | None]]] = {}
    try:
        with open(log, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                def num(key: str, row: dict[str, str] = row) -> float | None:
                    try:
                        return float(row[key]) if row.get(key) else None
                    except ValueError:
                        return None

                t = num("time")
                if t is None or not row.get("device"):
                    continue
                used, total = num("memory_used"), num("memory_total")
                frac = used / total if used is not None and total else None
                series.setdefault(row["device"], []).append((t, frac, num("utilization")))
    except OSError as exc:
        raise ConfigError(f"--csv {log!r} cannot be read: {exc.strerror or exc}") from None
    if not series:
        raise ConfigError(f"--csv {log!r} holds no samples written by `hal watch --csv`")
    start = min(p[0] for pts in series.values() for p in pts)
    fig, (ax_mem, ax_use) = plt.subplots(2, 1, sharex=True, figsize=(9, 5))
    for device, pts in sorted(series.items()):
        xs = [p[0] - start for p in pts]
        ax_mem.plot(xs, [p[1] * 100 if p[1] is not None else math.nan for p in pts], label=device)
        ax_use.plot(xs, [p[2] * 100 if p[2] is not None else math.nan for p in pts], label=device)
    ax_mem.set_ylabel("memory used %")
    ax_use.set_ylabel("utilisation %")
    ax_use.set_xlabel("seconds")
    ax_mem.legend(loc="upper right", fontsize="small")
    fig.tight_layout()
    fig.savefig(png)
    sys.stdout.write(f"wrote {png}\n")
    return 0


# -- the command ----------------------------------------------------------------------------


def _sampler(timeout: float) -> Sampler:
    from hal.selection import list_backends
    from hal.telemetry import Sampler

    # Once, here: probes in parallel threads must not race on torch's first import.  Not
    # installed or broken: each backend's probe says so in its row.
    with contextlib.suppress(Exception):
        import torch  # noqa: F401
    sampler = Sampler(list_backends(), timeout=timeout)
    sampler.discover(timeout=max(timeout, DISCOVERY_TIMEOUT))
    return sampler


def run(args: argparse.Namespace) -> int:
    """Watch every device; exit 0 on q, Ctrl-C, --count or --once; 2 on a bad flag; 130 when a
    backend's telemetry raises KeyboardInterrupt (cli.py)."""
    from hal.errors import ConfigError
    from hal.parse import parse_float, parse_int
    from hal.validate import PluginInterrupt

    interval = parse_float("--interval", args.interval, lo=0.0, hi=3600.0, lo_inclusive=False)
    timeout = parse_float("--timeout", args.timeout, lo=0.0, hi=600.0, lo_inclusive=False)
    count = parse_int("--count", args.count, lo=1, hi=10**9) if args.count is not None else None
    if args.plot:
        if not args.csv:
            raise ConfigError("--plot PNG draws a log: give the log with --csv FILE")
        return plot(args.csv, args.plot)
    out = sys.stdout
    live = out.isatty() and not args.json and not args.once
    once = args.once or (not live and not args.json and count is None)
    log = CsvLog(args.csv) if args.csv else None
    sampler = _sampler(timeout)
    try:
        sampler.sample()  # primes rate figures (utilisation, energy) so the first row is real
        time.sleep(min(interval, 0.25))  # so the first printed rate spans a real interval
        view = View(interval)
        view.unavailable = dict(sampler.unavailable)
        if live:
            return _live(sampler, view, interval, count, log)
        tick = 0
        while True:
            readings = _step(sampler, view, log)
            tick += 1
            if args.json:
                out.write(_tick_json(tick, readings, view.unavailable) + "\n")
                out.flush()
            elif once or count is not None:
                _print(view, out)
            if log is not None:
                log.check()
            if once or (count is not None and tick >= count):
                return 0
            time.sleep(interval)
    except PluginInterrupt:
        raise  # a telemetry reader raised it: hal stops (exit 130), as for any plugin call
    except KeyboardInterrupt:
        return 0
    finally:
        sampler.close()
        if log is not None:
            log.close()


def _step(sampler: Sampler, view: View, log: CsvLog | None) -> list[DeviceReading]:
    """One tick of either view: sample every backend, update the view, log the rows to --csv."""
    readings = sampler.sample()
    view.update(readings)
    if log is not None:
        log.write(readings)
    return readings


def _print(view: View, out: TextIO) -> None:
    """One plain snapshot: rich without colour or cursor codes when ``out`` is not a terminal."""
    from hal.console import console as hal_console

    # A pipe or a file has no width: wide enough that no column is cut (a log is read later),
    # unless COLUMNS asks for one.
    width = _columns() if out.isatty() else _env_columns() or 200
    console = hal_console(file=out, width=width, soft_wrap=False)
    console.print(view.table())


def _env_columns() -> int | None:
    """COLUMNS when it holds a usable width (at least 10 columns), else None."""
    value = os.environ.get("COLUMNS", "")
    return int(value) if value.isascii() and value.isdigit() and 10 <= int(value) <= 10000 else None


def _columns() -> int:
    """The terminal's width: COLUMNS first (as rich and shutil read it), then the terminal."""
    try:
        return _env_columns() or os.get_terminal_size().columns
    except OSError:
        return 120


def _live(sampler: Sampler, view: View, interval: float, count: int | None,
          log: CsvLog | None) -> int:
    """The refreshing terminal view; q or Ctrl-C ends it and the terminal is restored."""
    from rich.console import Group
    from rich.live import Live
    from rich.text import Text

    from hal.console import console as hal_console
    from hal.validate import PluginInterrupt

    console = hal_console()
    header = Text(f"hal watch: every {interval:g} s; q or Ctrl-C quits", style="bold")
    tick = 0
    with _keys(sys.stdin) as fd, Live(console=console, auto_refresh=False,
                                       transient=False) as live:
        try:
            while True:
                _step(sampler, view, log)
                tick += 1
                live.update(Group(header, view.table()), refresh=True)
                if log is not None:
                    log.check()
                if count is not None and tick >= count:
                    return 0
                if _wait(fd, interval):
                    return 0
        except PluginInterrupt:
            raise  # a telemetry reader raised it: hal stops (exit 130), the terminal is restored
        except KeyboardInterrupt:
            return 0
