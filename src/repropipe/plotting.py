"""Figure saving shared by every branch: PNG, fixed DPI, written atomically."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from repropipe.io import atomic_path


def save_figure(fig: Any, path: str | os.PathLike[str], dpi: int = 110) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    return Path(path)
