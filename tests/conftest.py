"""Shared test set-up: point the data layer at the read-only reference mirror (downloads such as the official
weights go to the normal per-user cache, so they are fetched once per machine)."""
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_default_mirror = ROOT.parent / "shared" / "data"
if not os.environ.get("SOUNDSCAPER_DATA") and _default_mirror.is_dir():
    os.environ["SOUNDSCAPER_DATA"] = str(_default_mirror)
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def mirror() -> Path:
    "The reference data mirror (../shared/data or $SOUNDSCAPER_DATA)."
    p = Path(os.environ.get("SOUNDSCAPER_DATA", _default_mirror))
    if not p.is_dir():
        pytest.fail(f"reference data mirror not found at {p}; set SOUNDSCAPER_DATA")
    return p
