"""The HTML report: one self-contained file assembled from the sections branches write."""

from repropipe.report.build import build_report
from repropipe.report.section import Figure, Section, Table

__all__ = ["Figure", "Section", "Table", "build_report"]
