"""The documentation site (docs/conf.py: Sphinx, MyST-NB, sphinx-autoapi, Furo), built by Sphinx from a copy of the
real sources plus one planted notebook, then opened in headless Chromium: the home page, the notebook pages (figures,
math, hidden and removed cells), the API reference from the docstrings, full-text search, the "on this page" outline,
and a 400-px-wide window that needs no horizontal scrolling."""
import ast
import base64
import html
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("docs", "nbs", "soundscaper")     # everything the site is built from (see include_patterns in docs/conf.py)
PAGES = ("nbs/[0-9]*.ipynb", "nbs/tutorial*.ipynb", "nbs/figures/*.ipynb")
PLANTED = "nbs/tutorial_zz_docs_check.ipynb"  # a notebook with every feature the pages rely on, added to the copy


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome"):
        if p := shutil.which(name): return p
    return None


CHROMIUM = find_chromium()
browser = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"),
    reason="Chromium is not installed on this machine (Debian/Ubuntu: apt-get install chromium). CI installs it in "
           ".ci/run, so the browser checks run there; under CI=true a missing Chromium fails instead of skipping.")


def _png() -> bytes:
    from PIL import Image
    im = Image.new("RGB", (480, 240), "white")
    im.paste((31, 119, 180), (0, 0, 240, 240))
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def planted_notebook():
    "A notebook with a figure, math, MyST-NB cell tags and nbdev directives, each marked by a unique word."
    v4 = nbformat.v4
    nb = v4.new_notebook(metadata={"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}})
    plot = v4.new_code_cell("plot()", execution_count=1, outputs=[
        v4.new_output("display_data", data={"image/png": base64.b64encode(_png()).decode(), "text/plain": "<Figure>"})])
    hidden = v4.new_code_cell("solution_zqhidden = 42", metadata={"tags": ["hide-input"]}, execution_count=2,
                              outputs=[v4.new_output("stream", name="stdout", text="output_zqshown\n")])
    nb.cells = [
        v4.new_markdown_cell("# Planted page zqplanted\n\nInline math $N_{5} = \\sqrt{x_{zq}}$ and a display:\n\n"
                             "$$L_N = 40 + 10 \\log_2 N$$\n\n## First section zqone"),
        v4.new_code_cell("#| default_exp zqmodule"),
        plot, hidden,
        v4.new_code_cell("removed_zqcell = 1", metadata={"tags": ["remove-cell"]}),
        v4.new_code_cell("#| hide\nnbdev_zqhidden = 1"),
        v4.new_code_cell("#| export\ndef exported_zqshown(): pass"),
        v4.new_markdown_cell("## Second section zqtwo\n\nThe end."),
    ]
    return nb


def _copy_ignore(folder, names):
    "Leave out checkpoints, caches, and API sources a broken build may have left in docs/api."
    return [n for n in names if n in (".ipynb_checkpoints", "__pycache__") or (Path(folder).name, n) == ("docs", "api")]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("docs")
    src = tmp / "src"
    for name in SOURCES: shutil.copytree(ROOT / name, src / name, ignore=_copy_ignore)
    nbformat.write(planted_notebook(), src / PLANTED)
    # the README's command: sphinx-build -M html . site -c docs
    r = subprocess.run([sys.executable, "-m", "sphinx", "-M", "html", str(src), str(tmp / "site"),
                        "-c", str(src / "docs"), "-q"], capture_output=True, text=True, encoding="utf-8", timeout=900)
    assert r.returncode == 0, f"sphinx-build failed:\n{r.stderr[-4000:]}"
    assert not (src / "docs" / "api").exists()                     # the generated API sources are cleaned up
    return SimpleNamespace(src=src, out=tmp / "site" / "html", warnings=r.stderr)


def page_of(rel: str) -> str:
    "Site path of a source notebook: nbs/figures/radar.ipynb -> nbs/figures/radar.html."
    return Path(rel).with_suffix(".html").as_posix()


def title_of(rel: str) -> str:
    "A notebook's title: its first Markdown heading."
    cells = nbformat.read(ROOT / rel, as_version=4).cells
    return next(c.source.splitlines()[0].lstrip("# ").strip() for c in cells if c.cell_type == "markdown")


def text_of(fragment: str) -> str:
    "Visible text of an HTML fragment, with typographic quotes made plain and whitespace collapsed."
    text = html.unescape(re.sub(r"<[^>]+>", "", fragment))
    return " ".join(text.translate(str.maketrans("‘’“”", "''\"\"")).split())


def plain(doc: str) -> str:
    return " ".join(re.sub(r"\*\*|`", "", doc).split())


def test_every_notebook_and_module_has_a_page(site):
    assert "nonexisting document" not in site.warnings and "isn't included in any toctree" not in site.warnings, \
        site.warnings
    notebooks = sorted({p.relative_to(ROOT).as_posix() for pat in PAGES for p in ROOT.glob(pat)} | {PLANTED})
    assert "nbs/tutorial.ipynb" in notebooks and "nbs/00_labels.ipynb" in notebooks and len(notebooks) >= 20
    built = sorted(p.relative_to(site.out).with_suffix(".ipynb").as_posix() for p in (site.out / "nbs").rglob("*.html"))
    assert built == notebooks
    home = (site.out / "docs" / "index.html").read_text(encoding="utf-8")
    for rel in notebooks:                                             # each one in the sidebar of the home page
        assert f'href="../{page_of(rel)}"' in home, rel
    assert 'url=docs/index.html"' in (site.out / "index.html").read_text(encoding="utf-8")   # site/index.html: home
    assert (site.out / "_images" / "tour.png").stat().st_size > 10_000 and "In this park" in home
    modules = [p.relative_to(ROOT).with_suffix("") for p in (ROOT / "soundscaper").rglob("*.py")
               if not p.name.startswith("_") or p.name == "__init__.py"]
    for mod in modules:                                               # every public module has an API page
        parts = mod.parts[:-1] if mod.name == "__init__" else mod.parts
        assert (site.out / "docs" / "api" / Path(*parts) / "index.html").exists(), ".".join(parts)
    assert len(modules) >= 12


def test_api_page_shows_the_docstrings(site):
    tree = ast.parse((ROOT / "soundscaper" / "labels.py").read_text(encoding="utf-8"))
    page = text_of((site.out / "docs" / "api" / "soundscaper" / "labels" / "index.html").read_text(encoding="utf-8"))
    docs = [ast.get_docstring(tree)] + [ast.get_docstring(f) for f in tree.body if isinstance(f, ast.FunctionDef)
                                        and not f.name.startswith("_") and ast.get_docstring(f)]
    assert len(docs) >= 3
    for doc in docs:
        first = plain(doc.split("\n\n")[0])
        assert first in page, first


def test_notebook_pages_render_outputs_math_and_tags(site):
    page = (site.out / page_of(PLANTED)).read_text(encoding="utf-8")
    img = re.findall(r'<img[^>]+src="([^"]+\.png)"', page)
    assert len(img) == 1 and (site.out / "nbs" / img[0]).resolve().stat().st_size > 100
    assert re.search(r'<span class="math[^"]*">\\\(N_\{5\} = \\sqrt\{x_\{zq\}\}\\\)</span>', page)   # $…$ -> MathJax
    assert re.search(r'<div class="math[^"]*">\s*\\\[L_N = 40', page) and "mathjax" in page.lower()
    assert "removed_zqcell" not in page and "nbdev_zqhidden" not in page          # remove-cell, nbdev's #| hide
    assert "exported_zqshown" in page and "zqmodule" not in page                  # directive lines are dropped
    hidden = page.index("solution_zqhidden")                                      # hide-input: in a closed <details>
    assert page.rfind("<details", 0, hidden) > page.rfind("</details>", 0, hidden)
    for rel in sorted({p.relative_to(ROOT).as_posix() for pat in PAGES for p in ROOT.glob(pat)}):
        nb, body = nbformat.read(ROOT / rel, as_version=4), (site.out / page_of(rel)).read_text(encoding="utf-8")
        assert "#|" not in body, f"{rel}: an nbdev directive is shown"
        shown = [c for c in nb.cells if c.cell_type == "code" and not {"remove-cell", "remove-output"}
                 & set(c.metadata.get("tags", [])) and not re.search(r"^#\|\s*(hide|include:\s*false)\s*$",
                                                                     c.source, re.M)]
        figures = sum("image/png" in o.get("data", {}) for c in shown for o in c.outputs)
        assert len(re.findall(r'<img[^>]+src="[^"]*_images/', body)) >= figures, f"{rel}: figures missing"
        if any(re.search(r"\$[^$\n]+\$", c.source) for c in nb.cells if c.cell_type == "markdown"):
            assert 'class="math notranslate nohighlight"' in body, f"{rel}: math not rendered"


PROBE = """<script>
window.addEventListener("load", () => setTimeout(() => {
  const shown = el => !!el && el.getClientRects().length > 0 && getComputedStyle(el).visibility !== "hidden";
  const toc = document.querySelector(".toc-drawer .toc-tree");
  const r = {innerWidth: window.innerWidth, scrollWidth: document.documentElement.scrollWidth,
             images: [...document.images].map(i => [i.getAttribute("src"), i.complete && i.naturalWidth > 0]),
             toc: toc ? [...toc.querySelectorAll("a")].map(a => a.getAttribute("href")) : [],
             tocShown: shown(toc), text: document.body.innerText, cut: []};
  // text wider than the window: allowed only inside a scroll box of its own (a code block, a wide table), not by
  // the whole article sliding sideways or being cut off
  const article = document.querySelector("article");
  const boxed = el => { for (; el && el !== article; el = el.parentElement)
    if (["auto", "scroll"].includes(getComputedStyle(el).overflowX)) return true; return false; };
  for (const el of article ? article.querySelectorAll("*") : [])
    if (shown(el) && el.getBoundingClientRect().right > window.innerWidth + 2 && !boxed(el.parentElement))
      r.cut.push(el.tagName + "." + el.className + ": " + (el.textContent || "").trim().slice(0, 40));
  const pre = document.createElement("pre"); pre.id = "zqprobe"; pre.textContent = JSON.stringify(r);
  document.body.appendChild(pre);
  if (window.parent !== window) window.parent.postMessage(pre.textContent, "*");
}, 300));
</script>"""


def chromium_dom(url: str, width: int, height: int = 900) -> str:
    "The DOM of `url` after it loaded (and its scripts ran) in headless Chromium with a `width` x `height` window."
    with tempfile.TemporaryDirectory(prefix="zq-chromium-") as profile:
        r = subprocess.run([CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                            "--no-first-run", "--disable-background-networking", "--hide-scrollbars",
                            f"--user-data-dir={profile}", f"--window-size={width},{height}",
                            "--virtual-time-budget=5000", "--dump-dom", url],
                           capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=120)
    assert r.returncode == 0 and "<html" in r.stdout, r.stderr[-2000:]
    return r.stdout


FRAME = """<!DOCTYPE html><html><body style="margin:0">
<iframe src="{src}" style="width:{width}px; height:900px; border:0"></iframe>
<script>addEventListener("message", e => {{
  const pre = document.createElement("pre"); pre.id = "zqprobe"; pre.textContent = e.data;
  document.body.appendChild(pre);
}});</script></body></html>"""


def probe(site, page: str, width: int) -> dict:
    """Open a copy of `page` (same folder, so every relative link holds) that reports what the browser laid out.
    Headless Chromium's window is at least 500 px wide, so narrower viewports are an iframe of that width."""
    src = site.out / page
    copy = src.with_name(f"{src.stem}.zqprobe.html")
    frame = src.with_name(f"{src.stem}.zqframe.html")
    copy.write_text(src.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    narrow = width < 500
    if narrow: frame.write_text(FRAME.format(src=copy.name, width=width), encoding="utf-8")
    try:
        dom = chromium_dom((frame if narrow else copy).as_uri(), 800 if narrow else width)
    finally:
        copy.unlink(); frame.unlink(missing_ok=True)
    m = re.search(r'<pre id="zqprobe">(.*?)</pre>', dom, re.S)
    assert m, f"{page}: the page did not finish loading"
    return json.loads(html.unescape(m.group(1)))


MAIN_PAGES = ["docs/index.html", page_of(PLANTED), "nbs/tutorial.html", "nbs/03_loudness.html",
              "docs/api/soundscaper/labels/index.html"]


@browser
@pytest.mark.parametrize("page", MAIN_PAGES)
def test_page_in_a_desktop_browser(site, page):
    r = probe(site, page, 1440)
    assert all(ok for _, ok in r["images"]), r["images"]                        # every image is displayed
    if page in ("docs/index.html", page_of(PLANTED)): assert r["images"]       # the tour picture, the planted plot
    assert "soundscaper" in r["text"] and title_of("nbs/00_labels.ipynb") in r["text"]       # sidebar navigation
    if page != "docs/index.html":                                               # "on this page", beside the text
        assert r["tocShown"] and len(r["toc"]) >= 2 and all(h.startswith("#") for h in r["toc"]), r["toc"]
    if page == page_of(PLANTED):
        assert len(r["images"]) >= 1 and "output_zqshown" in r["text"] and "exported_zqshown" in r["text"]
        assert "solution_zqhidden" not in r["text"]                             # hide-input: closed until clicked
        assert any("first-section-zqone" in h for h in r["toc"]), r["toc"]


@browser
@pytest.mark.parametrize("page", MAIN_PAGES + ["docs/api/soundscaper/train/index.html"])   # long signatures
def test_page_fits_a_400px_window(site, page):
    r = probe(site, page, 400)
    assert r["innerWidth"] == 400
    assert r["scrollWidth"] <= 402, f"{page} scrolls sideways at 400 px: {r['scrollWidth']} px wide"
    assert r["cut"] == [], f"{page}: content cut off at 400 px"
    assert len(r["text"]) > 200


@browser
def test_search(site):
    for word, expected in [("loudness", "nbs/03_loudness.html"), ("zqplanted", page_of(PLANTED)),
                           ("paq_to_iso", "docs/api/soundscaper/labels/index.html")]:
        dom = chromium_dom((site.out / "search.html").as_uri() + f"?q={word}", 1280)
        results = re.search(r'<ul[^>]*class="search"[^>]*>(.*?)</ul>', dom, re.S)
        assert results, f"search for {word!r} gave no result list"
        hrefs = [h.split("#")[0] for h in re.findall(r'<a href="([^"]+)"', results.group(1))]
        assert expected in hrefs, (word, hrefs)
