"""The report's stage-cost tables: what each stage cost in this run, and a projection to the full datasets.

The costs come from ``results/costs/<stage>.json`` (written by ``run_stage`` for every stage under
either tool). The projection multiplies a measured wall time per unit by the unit counts of the
full releases (:mod:`repropipe.report.full_datasets`): it assumes the cost grows linearly with the
count, on this machine with the threads this run had, and is labelled as a projection wherever shown.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from repropipe.costs import Cost
from repropipe.report import full_datasets as full
from repropipe.report.section import Table

COST_COLUMNS = ["stage", "wall s", "CPU s", "max RSS MB", "threads", "units", "seconds per unit"]
PROJECTION_COLUMNS = ["stage", "full dataset", "unit", "measured units", "measured s per unit", "full count",
                      "projected wall h", "source"]
NOT_PROJECTED = "not projected"


def read_costs(paths: Iterable[str | os.PathLike[str]]) -> list[Cost]:
    """Every cost file, in the order given; the first malformed or missing one stops the report, named."""
    return [Cost.read(Path(p)) for p in paths]


def _units(cost: Cost) -> str:
    return "; ".join(f"{n:,} {k}" for k, n in cost.units.items()) or "none recorded"


def _per_unit(cost: Cost) -> str:
    return "; ".join(f"{s:.4g} s/{k}" for k, s in cost.per_unit().items()) or "n/a"


def cost_table(costs: list[Cost]) -> Table:
    rows = [[c.stage, c.wall_s, c.cpu_s, c.max_rss_mb,
             c.threads if c.world_size == 1 else f"{c.threads} x {c.world_size} ranks", _units(c), _per_unit(c)]
            for c in costs]
    return Table(
        title="What each stage cost (measured in this run, on this machine)", columns=COST_COLUMNS, rows=rows,
        anchor="Wall time of the stage function, including the imports it does (not the interpreter's start-up); CPU = user + system of the stage's process "
               "and its children (worker pools, data loaders); max RSS = the largest single process; threads = the "
               "CPU budget the stage was given (repropipe.resources). Seconds per unit = wall time / units the stage "
               "recorded. Timings vary from run to run and with the machine's load. The report stage's own cost is "
               "not shown (it is measured while this page is written).")


def _data_rows(c: Cost) -> list[list[object]]:
    rows: list[list[object]] = []
    for ds in full.DATA[c.stage]:
        n = c.units.get(ds.unit, 0)
        if n <= 0:
            rows.append([c.stage, ds.name, ds.unit, 0, NOT_PROJECTED, ds.count,
                         f"{NOT_PROJECTED}: the run recorded no {ds.unit}", ds.source])
            continue
        per = c.wall_s / n
        rows.append([c.stage, ds.name, ds.unit, n, per, ds.count, per * ds.count / 3600, ds.source])
    return rows


def _train_rows(c: Cost) -> list[list[object]]:
    recipe = full.TRAIN[c.stage]
    rows: list[list[object]] = []
    for unit, target in (("steps", recipe.steps()), ("examples", recipe.examples())):
        n = c.units.get(unit, 0)
        if n <= 0:
            rows.append([c.stage, recipe.name, unit, 0, NOT_PROJECTED, target,
                         f"{NOT_PROJECTED}: the run recorded no {unit}", recipe.source])
            continue
        per = c.wall_s / n
        rows.append([c.stage, recipe.name, unit, n, per, target, per * target / 3600, recipe.source])
    return rows


def _why_not(c: Cost) -> str:
    if c.stage.endswith("_train"):
        return f"{NOT_PROJECTED}: no published recipe in conf/ defines its steps"
    return f"{NOT_PROJECTED}: its work is not a count of items in a full release"


def projection_table(costs: list[Cost]) -> Table:
    rows: list[list[object]] = []
    for c in costs:
        if c.stage in full.DATA:
            rows += _data_rows(c)
        elif c.stage in full.TRAIN:
            rows += _train_rows(c)
        else:
            rows.append([c.stage, "", "", "", "", "", _why_not(c), ""])
    return Table(
        title="Projection to the full datasets (a PROJECTION from this run's costs, not a measurement)",
        columns=PROJECTION_COLUMNS, rows=rows,
        anchor="PROJECTION: measured wall seconds per unit in this run x the unit count of the full real release "
               "(data stages) or of the published recipe (train stages), on this machine with the threads shown "
               "above, assuming the cost grows linearly with the count. Fixed costs (imports, set-up, evaluation "
               "passes) are divided over the units too, so a small run projects too high. It ignores what changes "
               "with scale: a real "
               "download is bound by the network, real utterances and images differ in size from the stand-ins, and "
               "a training step's cost grows with its batch (compare the rows per step and per example: the recipe's "
               "batches are 64 and 24).")


def tables(cost_files: Iterable[str | os.PathLike[str]]) -> list[Table]:
    costs = read_costs(cost_files)
    return [cost_table(costs), projection_table(costs)]
