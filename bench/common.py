"""What every benchmark does last: write its JSON and Markdown under --out and print the Markdown."""

from __future__ import annotations

import json
from pathlib import Path


def write_results(out: Path, stem: str, report: dict, md: list[str]) -> None:
    """`<out>/<stem>.json` (the full report) and `<out>/<stem>.md` (md plus the machine line)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    text = "\n".join(md + ["", f"Machine: {json.dumps(report['machine'])}", ""])
    (out / f"{stem}.md").write_text(text)
    print(text)
