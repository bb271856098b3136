"""Run every notebook in nbs/ top to bottom, so the test cells that follow each function run in CI."""
from pathlib import Path

import pytest
from nbdev import test as nbdev_test

NBS = sorted((Path(__file__).resolve().parents[1] / "nbs").glob("[0-9]*.ipynb"))


@pytest.mark.parametrize("nb", NBS, ids=[p.stem for p in NBS])
def test_notebook(nb):
    ok, secs = nbdev_test.test_nb(nb, do_print=False)
    if not ok:
        pytest.fail(f"{nb.name} failed (see the traceback above)")
