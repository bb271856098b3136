"""The parity guard of tests/conftest.py: with SOUNDSCAPER_REQUIRE_PARITY=1 a skipped parity test fails, and so does a
session in which no parity test ran; without it they are ordinary skips."""
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

CONFTEST = (Path(__file__).parent / "conftest.py").read_text()
TESTS = """
import pytest

@pytest.mark.parity
def test_needs_the_weights():
    pytest.skip("official SoundAQnet weights unavailable (test)")

@pytest.fixture
def official():
    pytest.skip("no weights in a fixture either")

@pytest.mark.parity
def test_needs_them_through_a_fixture(official):
    pass

def test_ordinary():
    pytest.skip("not a parity test")
"""


@pytest.fixture
def suite(pytester, monkeypatch):
    monkeypatch.delenv("SOUNDSCAPER_REQUIRE_PARITY", raising=False)
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_suite=TESTS)
    return pytester


def test_parity_skips_are_skips_by_default(suite):
    r = suite.runpytest("-p", "no:cacheprovider")
    r.assert_outcomes(skipped=3)
    assert r.ret == 0


def test_parity_skips_fail_when_required(suite, monkeypatch):
    monkeypatch.setenv("SOUNDSCAPER_REQUIRE_PARITY", "1")
    r = suite.runpytest("-p", "no:cacheprovider", "-rA")
    r.assert_outcomes(failed=1, errors=1, skipped=1)        # the fixture's skip is an error in setup
    r.stdout.fnmatch_lines(["*parity test skipped, but SOUNDSCAPER_REQUIRE_PARITY=1 requires it to run*weights*",
                            "*parity tests: 0 passed, 2 failed, 0 skipped*"])
    assert r.ret == pytest.ExitCode.TESTS_FAILED


def test_a_session_without_parity_tests_fails_when_required(pytester, monkeypatch):
    monkeypatch.setenv("SOUNDSCAPER_REQUIRE_PARITY", "1")
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_other="def test_fine():\n    assert True\n")
    r = pytester.runpytest("-p", "no:cacheprovider")
    r.assert_outcomes(passed=1)
    r.stdout.fnmatch_lines(["*no parity test ran*"])
    assert r.ret == pytest.ExitCode.TESTS_FAILED
    pytester.makepyfile(test_other="import pytest\n@pytest.mark.parity\ndef test_fine():\n    assert True\n")
    assert pytester.runpytest("-p", "no:cacheprovider").ret == 0
