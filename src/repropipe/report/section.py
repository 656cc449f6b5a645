"""What a branch hands to the report: tables (each beside its published anchor), figures, provenance.

A branch writes ``results/<branch>/section.json`` with :meth:`Section.write`; the report stage reads
it back with :meth:`Section.read`. Keeping this a plain file means the report never imports branch
code and each branch plugs in by writing one more output.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from repropipe.io import atomic_write_json


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[Any]]
    anchor: str = ""


@dataclass
class Figure:
    path: str  # relative to results/<branch>/
    caption: str


@dataclass
class Section:
    branch: str
    title: str
    summary: str
    data_source: str
    synthetic: bool
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def write(self, path: str | os.PathLike[str]) -> Path:
        return atomic_write_json(path, asdict(self))

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> "Section":
        try:
            raw = json.loads(Path(path).read_text())
            return cls(
                branch=raw["branch"], title=raw["title"], summary=raw["summary"],
                data_source=raw["data_source"], synthetic=bool(raw["synthetic"]),
                tables=[Table(**t) for t in raw.get("tables", [])],
                figures=[Figure(**f) for f in raw.get("figures", [])],
                notes=list(raw.get("notes", [])),
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}: not a valid report section ({exc})") from exc
