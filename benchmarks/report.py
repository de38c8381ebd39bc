"""What every benchmark prints and appends to docs/BENCHMARKS.md: machine note, header, table."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs" / "BENCHMARKS.md"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine() -> str:
    return f"{platform.machine()} `{cpu_name()}`, {os.cpu_count()} logical CPUs"


def arguments(doc: str, quick_help: str) -> argparse.ArgumentParser:
    """The options every benchmark takes: --quick and --no-write."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--no-write", action="store_true", help="do not append to BENCHMARKS.md")
    return parser


def header(title: str, quick: bool) -> str:
    return f"## {title} ({dt.date.today().isoformat()}{', --quick' if quick else ''})"


def _kind(heading: str) -> str:
    """A section's identity: its title and whether it was --quick, without the date."""
    return re.sub(r" \(\d{4}-\d{2}-\d{2}(, --quick)?\)$", r"\1", heading.strip())


def publish(lines: list[str], write: bool) -> None:
    """Print the section; unless --no-write, put it in docs/BENCHMARKS.md in place of the
    previous run's section of the same benchmark and mode (else at the end)."""
    print("\n".join(lines))
    if not write:
        return
    DOCS.parent.mkdir(exist_ok=True)
    existing = DOCS.read_text(encoding="utf-8") if DOCS.exists() else "# Benchmarks\n"
    sections = re.split(r"(?m)^(?=## )", existing.rstrip("\n") + "\n")
    new = "\n".join(lines).rstrip("\n") + "\n\n"
    same = [i for i, sec in enumerate(sections)
            if sec.startswith("## ") and _kind(sec.splitlines()[0]) == _kind(lines[0])]
    if same:
        sections[same[0]] = new
    else:
        sections[-1] = sections[-1].rstrip("\n") + "\n\n"
        sections.append(new)
    DOCS.write_text("".join(sections).rstrip("\n") + "\n", encoding="utf-8")
