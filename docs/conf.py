"""Sphinx configuration of the documentation site (Sphinx + MyST-NB + sphinx-autoapi, Furo theme).

The source folder is the repository root, so that the notebooks in nbs/ are pages without being copied; this file
says which files are pages (`include_patterns`). Build from the repository root:

    .venv/bin/sphinx-build -M html . site -c docs        # the site is then in site/html

The notebooks are not executed here: their committed outputs are rendered (the tests execute the notebooks).
"""
from __future__ import annotations

import json
import re
import sys

import astroid
from astroid.manager import AstroidManager

project = "soundscaper"
author = "SoundSCaper companion developers"
copyright = "the SoundSCaper companion developers"
html_title = "soundscaper"

root_doc = "docs/index"
# Pages: the home page, every numbered notebook, the tutorials, the figure notebooks and the generated API reference.
# New notebooks matching these patterns appear in the site (and in the home page's tables of contents) by themselves.
include_patterns = ["docs/index.md", "nbs/[0-9]*.ipynb", "nbs/tutorial*.ipynb", "nbs/figures/*.ipynb", "docs/api/**"]
exclude_patterns = ["**/.ipynb_checkpoints/**", ".venv/**", "site/**"]

extensions = ["myst_nb", "autoapi.extension"]

# MyST-NB: render the committed outputs; `$…$` / `$$…$$` math through MathJax.
nb_execution_mode = "off"
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
nb_merge_streams = True

# API reference from the docstrings, by static parsing (nothing is imported, so no torch at build time).
autoapi_type = "python"
autoapi_dirs = ["soundscaper"]            # relative to the source folder (the repository root)
autoapi_root = "docs/api"                 # generated during the build, removed afterwards
autoapi_ignore = ["*/_modidx.py"]
autoapi_add_toctree_entry = False         # docs/index.md places it
autoapi_keep_files = False
autoapi_member_order = "bysource"
autoapi_options = ["members", "undoc-members", "show-inheritance", "show-module-summary", "special-members"]
autoapi_python_class_content = "both"
default_role = "code"                     # docstrings are written in Markdown style: `x` is code, not emphasis

# sphinx-autoapi's parser (astroid) follows imports to infer names, which means parsing torch, pandas, scipy... from
# source: two thirds of the build time, for nothing the reference shows (only torch's inherited __init__ docstring).
# The reference needs our own package and the standard library only.
_ast_from_module_name = AstroidManager.ast_from_module_name


def _own_or_stdlib_only(self, modname, *args, **kwargs):
    top = (modname or "").partition(".")[0]
    if top and top != project and top not in sys.stdlib_module_names:
        raise astroid.AstroidImportError(f"{modname} is not parsed for the API reference")
    return _ast_from_module_name(self, modname, *args, **kwargs)

html_theme = "furo"
html_theme_options = {"navigation_with_keys": True}
html_show_sourcelink = False
html_static_path = ["_static"]            # relative to this folder (docs/)
html_css_files = ["soundscaper.css"]
html_copy_source = False

# A notebook quirk is a warning, not a failed build; these are known, harmless ones.
suppress_warnings = ["myst.header", "mystnb.unknown_mime_type", "autoapi.python_import_resolution"]

# nbdev's cell directives (`#| export`, `#| hide`, ...) are instructions for nbdev, not text for readers: remove the
# lines, and map the ones about visibility onto MyST-NB's cell tags.
_DIRECTIVE = re.compile(r"^\s*#\|\s*([\w-]+)\s*:?\s*(.*?)\s*$")
_TAGS = {("hide", ""): "remove-cell", ("include", "false"): "remove-cell", ("echo", "false"): "remove-input",
         ("output", "false"): "remove-output"}


def nbdev_directives_to_tags(cell: dict) -> dict:
    "Drop `#|` directive lines from a code cell, adding the MyST-NB tags they imply; a cell left empty is removed."
    if cell.get("cell_type") != "code": return cell
    src = cell.get("source", "")
    lines = src.splitlines(keepends=True) if isinstance(src, str) else list(src)
    keep, tags = [], list(cell.get("metadata", {}).get("tags", []))
    for line in lines:
        m = _DIRECTIVE.match(line)
        if m is None: keep.append(line); continue
        tag = _TAGS.get((m.group(1), (m.group(2) or "").lower()))
        if tag and tag not in tags: tags.append(tag)
    if not "".join(keep).strip() and "remove-cell" not in tags: tags.append("remove-cell")
    cell["source"] = "".join(keep).lstrip("\n")
    if tags: cell.setdefault("metadata", {})["tags"] = tags
    return cell


def _nbdev_source(app, docname: str, source: list[str]) -> None:
    if not app.env.doc2path(docname).name.endswith(".ipynb"): return
    nb = json.loads(source[0])
    nb["cells"] = [nbdev_directives_to_tags(c) for c in nb.get("cells", [])]
    source[0] = json.dumps(nb)


def _root_redirect(app, exc) -> None:
    "The home page is docs/index.html (the source folder is the repository root): site/index.html leads there."
    if exc is None and app.builder.format == "html":
        (app.outdir / "index.html").write_text(
            '<!DOCTYPE html><html><head><meta charset="utf-8"><title>soundscaper</title>'
            '<meta http-equiv="refresh" content="0; url=docs/index.html"></head>'
            '<body><a href="docs/index.html">soundscaper documentation</a></body></html>\n', encoding="utf-8")


def setup(app):
    AstroidManager.ast_from_module_name = _own_or_stdlib_only
    app.connect("source-read", _nbdev_source)
    app.connect("build-finished", _root_redirect)
