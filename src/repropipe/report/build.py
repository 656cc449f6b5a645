"""Render sections into one self-contained HTML file (CSS inline, figures as data: URIs)."""

from __future__ import annotations

import base64
import html
import json
import math
import os
from pathlib import Path
from typing import Any

from repropipe.io import atomic_write_text
from repropipe.report.section import Section

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;
color:#1d1d1f;line-height:1.45;padding:0 1rem}
h1{font-size:1.8rem;margin-bottom:.2rem} h2{margin-top:2.5rem;border-bottom:2px solid #ddd;padding-bottom:.3rem}
table{border-collapse:collapse;margin:.8rem 0;font-size:.85rem} caption{text-align:left;font-weight:600;padding:.3rem 0}
th,td{border:1px solid #ccc;padding:.25rem .5rem;text-align:right} th{background:#f3f3f6}
td:first-child,th:first-child{text-align:left}
.banner{background:#fff4ce;border:1px solid #e0b400;padding:.5rem .8rem;border-radius:4px;font-weight:600}
.anchor{color:#555;font-size:.85rem;margin:-.3rem 0 1rem} figure{margin:1rem 0} figcaption{font-size:.85rem;color:#444}
img{max-width:100%;border:1px solid #eee} details{margin:.8rem 0;font-size:.82rem} code{font-size:.8rem}
nav a{margin-right:1rem}
"""


def fmt(value: Any) -> str:
    """Numbers short enough to read, exact enough to compare."""
    if isinstance(value, bool) or value is None:
        return "n/a" if value is None else str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "n/a"
        return f"{value:.4g}"
    return str(value)


def _table(t: Any) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in t.columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(fmt(v))}</td>" for v in row) + "</tr>" for row in t.rows)
    out = f"<table><caption>{html.escape(t.title)}</caption><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    if t.anchor:
        out += f'<p class="anchor">{html.escape(t.anchor)}</p>'
    return out


def _figure(branch_dir: Path, fig: Any) -> str:
    path = branch_dir / fig.path
    if not path.exists():
        raise FileNotFoundError(f"{path}: figure listed in {branch_dir / 'section.json'} is missing")
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure><img alt="{html.escape(fig.caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(fig.caption)}</figcaption></figure>")


def _provenance(prov_path: Path) -> str:
    prov = json.loads(prov_path.read_text()) if prov_path.exists() else {}
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td><code>{html.escape(json.dumps(v, sort_keys=True))}</code></td></tr>"
                   for k, v in sorted(prov.items()))
    return (f"<details><summary>Provenance of every number above ({html.escape(str(prov_path))})</summary>"
            f'<table class="provenance">{rows}</table></details>')


def render_section(branch_dir: Path) -> str:
    sec = Section.read(branch_dir / "section.json")
    parts = [f'<section id="{html.escape(sec.branch)}"><h2>{html.escape(sec.title)}</h2>']
    if sec.synthetic:
        parts.append('<p class="banner">SYNTHETIC DATA: every number in this section was computed on the '
                     f"synthetic stand-in dataset ({html.escape(sec.data_source)}), not on the real one. "
                     "It shows the pipeline works; it is not comparable to the published anchors.</p>")
    parts.append(f"<p>{html.escape(sec.summary)}</p><p><b>Data source:</b> {html.escape(sec.data_source)}</p>")
    parts += [_table(t) for t in sec.tables]
    parts += [_figure(branch_dir, f) for f in sec.figures]
    parts += [f"<p>{html.escape(n)}</p>" for n in sec.notes]
    parts.append(_provenance(branch_dir / "provenance.json"))
    parts.append("</section>")
    return "\n".join(parts)


def render_costs(tables: list[Any]) -> str:
    """The stage-cost section (tables from :mod:`repropipe.report.costs`, which only the report stage imports)."""
    return "\n".join(['<section id="costs"><h2>What each stage cost</h2>', *(_table(t) for t in tables), "</section>"])


def build_report(branch_dirs: list[str | os.PathLike[str]], out: str | os.PathLike[str], title: str,
                 cost_tables: list[Any] = ()) -> Path:
    """``cost_tables`` (:func:`repropipe.report.costs.tables`) become a last section, "What each stage cost"."""
    dirs = [Path(d) for d in branch_dirs]
    links = [(d.name, d.name) for d in dirs] + ([("costs", "stage costs")] if cost_tables else [])
    nav = "".join(f'<a href="#{html.escape(a)}">{html.escape(t)}</a>' for a, t in links)
    body = "\n".join([render_section(d) for d in dirs] + ([render_costs(list(cost_tables))] if cost_tables else []))
    doc = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
           f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head>'
           f"<body><h1>{html.escape(title)}</h1><nav>{nav}</nav>\n{body}\n</body></html>\n")
    return atomic_write_text(out, doc)
