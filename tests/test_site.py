"""The documentation site, built from the real notebooks and checked in a real headless browser (Chromium): every page
reachable from the index, no broken link, no missing image, no notebook error cell; and the checker itself must catch
each of those problems when they are planted."""
import os
import re
import shutil
from pathlib import Path

import nbformat
import pytest

from soundscaper.cli import main
from soundscaper.site import build_site, check_site, discover_pages, find_chromium

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT / "nbs"

# The fast build executes these notebooks (the tutorial runs nowhere else in the tests; the other two are cheap).
# Every other page is rendered from an up-to-date executed copy (figures/notebooks/, written by `soundscaper reproduce`)
# or, lacking one, without outputs: tests/test_notebooks.py already executes each numbered notebook top to bottom.
EXECUTE = ["tutorial", "00_labels", "90_cli"]

CHROMIUM = find_chromium()
browser = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"),
    reason="Chromium is not installed on this machine (Debian/Ubuntu: apt-get install chromium). CI installs it in "
           ".ci/run, so the browser checks run there; under CI=true a missing Chromium fails instead of skipping.")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site") / "site"
    report = build_site(NBS, out, execute_only=EXECUTE, progress=False)
    return report


def test_site_has_every_notebook(site):
    assert site.failed == {}, "\n".join(f"{k}: {v}" for k, v in site.failed.items())
    expected = [p.href for p in discover_pages(NBS)]
    assert site.pages == expected
    assert len(expected) == len(list(NBS.glob("*.ipynb"))) + len(list((NBS / "figures").glob("*.ipynb")))
    assert expected[0] == "tutorial.html" and "00_labels.html" in expected
    assert {"tutorial.ipynb", "00_labels.ipynb", "90_cli.ipynb"} <= set(site.executed)
    assert not [p for p in site.out.parent.iterdir() if p.name.startswith(".site.")]      # no temporary folder left


def test_index_tour_comes_from_the_tutorial(site):
    html = (site.out / "index.html").read_text()
    assert 'src="assets/tour.png"' in html and (site.out / "assets" / "tour.png").stat().st_size > 10_000
    caption = re.search(r"<blockquote>(.*?)</blockquote>", html, re.S).group(1)
    assert caption.startswith("In this park") and len(caption.split()) > 8
    assert 'href="tutorial.html"' in html and 'href="figures/' in html


def test_tutorial_is_parameterised():
    import papermill as pm
    params = pm.inspect_notebook(str(NBS / "tutorial.ipynb"))
    assert params, ("the tutorial has no cell tagged 'parameters': nbdev-clean strips cell tags unless pyproject.toml "
                    "says allowed_cell_metadata_keys = [\"tags\"] (a list; the string \"tags\" keeps nothing)")
    assert {"clip", "compare_with", "threshold", "model"} <= set(params)
    assert params["clip"]["default"] == '"demo_flac"' and params["threshold"]["default"] == "None"


@browser
def test_site_in_headless_chromium(site):
    chk = check_site(site.out)
    assert chk.ok, "browser check found problems:\n" + "\n".join(chk.problems)
    assert sorted(chk.pages) == sorted(["index.html", *site.pages])               # every page reached from the index
    tutorial_images = len(list((site.out / "tutorial_files").glob("*.png")))
    assert tutorial_images >= 6 and chk.images >= tutorial_images + 1            # the tutorial's plots and the tour
    assert "tutorial.ipynb" in chk.files and "assets/site.css" in chk.files


@browser
def test_checker_catches_planted_problems(site, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(site.out, bad)
    (bad / "assets" / "tour.png").unlink()                                          # a missing image
    page = bad / "90_cli.html"
    page.write_text(page.read_text().replace(
        "</main>", '<p><a href="missing.html">gone</a> <a href="00_labels.html#no-such-anchor">anchor</a> '
                   '<a href="files/nothing.csv">data</a></p></main>'))
    problems = "\n".join(check_site(bad).problems)
    assert "index.html: image not displayed" in problems and "assets/tour.png" in problems
    assert "broken link to page missing.html" in problems
    assert "90_cli.html: link to 00_labels.html#no-such-anchor: no such anchor" in problems
    assert "90_cli.html: broken link to files/nothing.csv (HTTP 404)" in problems


@browser
def test_checker_catches_a_notebook_error(tmp_path):
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": {"display_name": "python3", "language": "python", "name": "python3"}}
    nb.cells = [nbformat.v4.new_markdown_cell("# Fails\n\n> On purpose."), nbformat.v4.new_code_cell("{}['key']")]
    nbformat.write(nb, nbs / "01_fails.ipynb")
    report = build_site(nbs, tmp_path / "site", reuse=[], progress=False)
    assert list(report.failed) == ["01_fails.ipynb"] and "KeyError" in report.failed["01_fails.ipynb"]
    problems = check_site(tmp_path / "site").problems
    assert "01_fails.html: notebook error cell (KeyError)" in problems
    assert any(p.startswith("01_fails.html: Running this notebook failed") for p in problems)


def test_command_line(tmp_path, capsys):
    out = tmp_path / "docs"
    assert main(["site", "--no-execute", "--only", "00_labels", "--only", "tutorial", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.glob("*.html")) == ["00_labels.html", "index.html", "tutorial.html"]
    assert "code without running it" in (out / "tutorial.html").read_text()                  # the page says so
    assert main(["site", "--no-execute", "--only", "00_labels", "--out", str(out)]) == 0      # replaces its own site
    assert not (out / "tutorial.html").exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    capsys.readouterr()
    assert main(["site", "--no-execute", "--only", "00_labels", "--out", str(mine)]) == 2
    assert "not a site built by soundscaper" in capsys.readouterr().err
    assert (mine / "notes.txt").read_text() == "keep me"
