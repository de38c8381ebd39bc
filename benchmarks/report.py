"""What every benchmark prints and appends to docs/BENCHMARKS.md: machine note, header, table."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
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


def publish(lines: list[str], write: bool) -> None:
    """Print the section; append it to docs/BENCHMARKS.md unless --no-write."""
    print("\n".join(lines))
    if write:
        DOCS.parent.mkdir(exist_ok=True)
        existing = DOCS.read_text(encoding="utf-8") if DOCS.exists() else "# Benchmarks\n"
        DOCS.write_text(existing.rstrip("\n") + "\n\n" + "\n".join(lines) + "\n", encoding="utf-8")
