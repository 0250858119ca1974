"""Rendering for tq-admin: aligned tables and key/value blocks for people, JSON for scripts."""

from __future__ import annotations

import json
import sys
import time
from typing import Any, Iterable, TextIO


def to_json(value: Any, stream: TextIO = sys.stdout) -> None:
    json.dump(value, stream, indent=2, ensure_ascii=False, sort_keys=False)
    stream.write("\n")


def json_array(items: Iterable[Any], stream: TextIO = sys.stdout) -> None:
    """A JSON array written item by item as ``items`` produces them (one per line)."""
    separator = "[\n  "
    for item in items:
        stream.write(separator)
        stream.write(json.dumps(item, ensure_ascii=False))
        separator = ",\n  "
    stream.write("[]\n" if separator.startswith("[") else "\n]\n")


def cell(value: Any) -> str:
    """One value as table text: lists joined, None as '-', floats trimmed."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".")
    if isinstance(value, (list, tuple)):
        return ",".join(cell(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def timestamp(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(epoch)) + "Z"


def age(epoch: float | None, now: float | None = None) -> str:
    """``12s ago``: how long since ``epoch``."""
    if epoch is None:
        return "-"
    seconds = max(0.0, (now or time.time()) - epoch)
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.1f}h ago"


def table(headers: list[str], rows: Iterable[Iterable[Any]],
          stream: TextIO = sys.stdout, width: int | None = None,
          shrink: Iterable[int] = ()) -> None:
    """An aligned table; numeric columns are right-aligned.

    With ``width``, the columns in ``shrink`` (indexes, in the order to cut them) are cut
    to make each line fit, each down to MIN_CUT characters, their cut cells ending in '~'.
    """
    text_rows = [[cell(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    numeric = [True] * len(headers)
    for row in text_rows:
        for i, value in enumerate(row):
            widths[i] = max(widths[i], len(value))
            if numeric[i] and not _is_number(value):
                numeric[i] = False
    if width is not None:
        over = sum(widths) + 2 * (len(widths) - 1) - width
        for i in shrink:
            if over <= 0:
                break
            cut = min(over, widths[i] - max(MIN_CUT, len(headers[i])))
            if cut > 0:
                widths[i] -= cut
                over -= cut
                for row in text_rows:
                    if len(row[i]) > widths[i]:
                        row[i] = row[i][:widths[i] - 1] + "~"

    def line(values: list[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w)
                 for v, w, num in zip(values, widths, numeric)]
        return "  ".join(parts).rstrip()

    stream.write(line([h.upper() for h in headers]) + "\n")
    for row in text_rows:
        stream.write(line(row) + "\n")
    if not text_rows:
        stream.write("(none)\n")


MIN_CUT = 8  # a column cut to fit the terminal keeps at least this many characters


def terminal_width(stream: TextIO = sys.stdout) -> int | None:
    """The terminal's width ($COLUMNS first) when ``stream`` is one, else None: a pipe or
    a file gets whole lines."""
    import shutil

    return shutil.get_terminal_size().columns if stream.isatty() else None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return text == "-"
    return True


def key_values(data: dict, stream: TextIO = sys.stdout, flatten: bool = True) -> None:
    """Aligned ``key  value`` lines; nested dicts as ``key.sub`` lines when ``flatten``,
    else as inline JSON (a task's payload reads better whole)."""
    flat = list(_flatten(data, "")) if flatten else list(data.items())
    width = max((len(k) for k, _ in flat), default=0)
    for key, value in flat:
        stream.write(f"{key.ljust(width)}  {cell(value)}\n")


def _flatten(data: dict, prefix: str):
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            yield from _flatten(value, name + ".")
        else:
            yield name, value


class Progress:
    """A one-line progress bar on stderr, drawn only when stderr is a terminal.

    Scripts and pipes (and tests) see nothing; a person sees ``[#####.....] 512/1000``.
    """

    def __init__(self, total: int | None, label: str, stream: TextIO = sys.stderr):
        self.total = total
        self.label = label
        self.stream = stream
        self.enabled = stream.isatty()
        self.started = time.monotonic()

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        elapsed = time.monotonic() - self.started
        if self.total:
            filled = int(30 * done / self.total)
            bar = "#" * filled + "." * (30 - filled)
            text = f"\r{self.label} [{bar}] {done}/{self.total} {elapsed:.1f}s"
        else:
            text = f"\r{self.label} {done} {elapsed:.1f}s"
        self.stream.write(text)
        self.stream.flush()

    def done(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()
