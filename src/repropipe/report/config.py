"""The report stage's params, typed (``report`` in params.yaml; tests/test_config.py keeps it in step with the schema)."""

from __future__ import annotations

from dataclasses import dataclass

from repropipe.config import params_section


@params_section("report")
@dataclass(frozen=True)
class ReportConfig:
    """What the assembled HTML report is called."""

    title: str
