"""Shared test set-up: point the data layer at the read-only reference mirror (downloads such as the official
weights go to the normal per-user cache, so they are fetched once per machine).

Parity tests (`@pytest.mark.parity`: comparisons with the paper's reference outputs, the official weights or the
reference loudness library) skip when what they compare against cannot be had (no network, nothing cached). With
`SOUNDSCAPER_REQUIRE_PARITY=1` (CI sets it) such a skip is a failure, and a session in which no parity test ran
fails too, so CI cannot go green without them."""
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_default_mirror = ROOT.parent / "shared" / "data"
if not os.environ.get("SOUNDSCAPER_DATA") and _default_mirror.is_dir():
    os.environ["SOUNDSCAPER_DATA"] = str(_default_mirror)
os.environ.setdefault("MPLBACKEND", "Agg")

_PARITY = pytest.StashKey[dict]()


def _require_parity() -> bool:
    return os.environ.get("SOUNDSCAPER_REQUIRE_PARITY", "").strip().lower() not in ("", "0", "false", "no")


def pytest_configure(config):
    config.addinivalue_line("markers", "parity: compares with the paper's reference outputs, the official weights or "
                                       "the reference library; with SOUNDSCAPER_REQUIRE_PARITY=1 a skip is a failure")
    config.stash[_PARITY] = {"passed": 0, "failed": 0, "skipped": 0}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    rep = (yield).get_result()
    if item.get_closest_marker("parity") is None or hasattr(rep, "wasxfail"):
        return
    counts = item.config.stash[_PARITY]
    if rep.skipped and _require_parity():
        reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
        rep.outcome = "failed"
        rep.longrepr = f"parity test skipped, but SOUNDSCAPER_REQUIRE_PARITY=1 requires it to run: {reason}"
    if rep.skipped:
        counts["skipped"] += 1
    elif rep.failed:
        counts["failed"] += 1
    elif rep.when == "call":
        counts["passed"] += 1


def pytest_terminal_summary(terminalreporter, config):
    c = config.stash.get(_PARITY, None)
    if c is not None and (any(c.values()) or _require_parity()):
        terminalreporter.write_line(f"parity tests: {c['passed']} passed, {c['failed']} failed, {c['skipped']} skipped"
                                    + (" (SOUNDSCAPER_REQUIRE_PARITY=1)" if _require_parity() else ""))


def pytest_sessionfinish(session, exitstatus):
    c = session.config.stash.get(_PARITY, None)
    if _require_parity() and c is not None and c["passed"] == 0 and exitstatus in (0, 5):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        tr = session.config.pluginmanager.get_plugin("terminalreporter")
        if tr is not None:
            tr.write_line("SOUNDSCAPER_REQUIRE_PARITY=1 but no parity test ran: the session fails", red=True)


@pytest.fixture(scope="session")
def mirror() -> Path:
    "The reference data mirror (../shared/data or $SOUNDSCAPER_DATA)."
    p = Path(os.environ.get("SOUNDSCAPER_DATA", _default_mirror))
    if not p.is_dir():
        pytest.fail(f"reference data mirror not found at {p}; set SOUNDSCAPER_DATA")
    return p
