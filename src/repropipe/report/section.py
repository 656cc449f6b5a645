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
from typing import Any, Sequence

from repropipe.io import atomic_write_json


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[Any]]
    anchor: str = ""


NOT_RUN = "not run"
ANCHOR_TITLE = "Anchor systems: measured here vs published"


@dataclass(frozen=True)
class AnchorRow:
    """One anchor system: what this run measured beside the number its authors published.

    Why one shape: a published number read next to a demo number invites a comparison the data may not
    support, so every branch says the same four things about it: which system (as registered here),
    what this run measured (with its interval), what was published, and on which data with which
    statistic (best run, mean over seeds, a leaderboard score).
    """

    system: str  # as registered here (model name), with what distinguishes it from the published one
    metric: str  # with its unit, e.g. "eval EER (%)"
    measured: float | str | None  # None: the system is not in this run's model list; str: why there is no number
    measured_ci: tuple[float, float] | None  # 95 % interval where evaluate computed one
    published: float | str | None  # None: no published number is quoted for this system
    published_on: str  # the data the published number was measured on, e.g. "real LA eval"
    source: str  # who published it
    statistic: str  # which statistic, e.g. "best of six runs; range 1.92-3.10 %"
    digits: int = 2  # decimals of the measured number
    measured_as: str = ""  # how the measured number was formed, e.g. "mean of 3 seeds"


def anchor_table(rows: list[AnchorRow], *, synthetic: bool, data: str, caveats: Sequence[str] = (),
                 anchor: str = "") -> Table:
    """The "Anchor systems: measured here vs published" table every branch's section carries.

    ``data`` names this run's data; when it is synthetic the caption says the two columns are on
    different data. ``caveats`` (e.g. a non-standard feature extractor) go into the caption too.
    """
    if synthetic:
        where = (f"Measured numbers: this run, on {data} (SYNTHETIC). Published numbers: on the real data each row "
                 "names. Different data: the two columns are not comparable")
    else:
        where = (f"Measured numbers: this run, on {data}. Published numbers: as published, on the data each row "
                 "names (compare only where that is the same data and protocol)")
    title = ". ".join([ANCHOR_TITLE, where, *caveats])
    return Table(title=title, columns=["system (as run here)", "metric", "measured in this run [95 % CI]",
                                       "published (not measured here)", "published on", "published statistic",
                                       "published by"],
                 rows=[[r.system, r.metric, _measured_cell(r), _published_cell(r.published), r.published_on,
                        r.statistic, r.source] for r in rows],
                 anchor=anchor)


def _measured_cell(r: AnchorRow) -> str:
    if r.measured is None:
        return NOT_RUN
    if isinstance(r.measured, str):
        return r.measured
    cell = f"{r.measured:.{r.digits}f}"
    if r.measured_ci is not None:
        cell += f" [{r.measured_ci[0]:.{r.digits}f}, {r.measured_ci[1]:.{r.digits}f}]"
    return cell + (f" ({r.measured_as})" if r.measured_as else "")


def _published_cell(published: float | str | None) -> str:
    if published is None:
        return "none quoted here"
    return f"published: {published:g}" if isinstance(published, (int, float)) else f"published: {published}"


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
