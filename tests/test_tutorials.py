"""The tutorials (the un-numbered notebooks in nbs/): each runs top to bottom with papermill as a class would run
it, keeps its papermill parameters, has a hidden solution after every exercise, and is committed executed.

`python tests/test_tutorials.py [NAME...]` re-executes the tutorials and writes them back with their outputs (audio
players left out, they would add megabytes); run `nbdev-clean` afterwards."""
import re
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT / "nbs"
TUTORIALS = sorted(NBS.glob("tutorial*.ipynb"))
SOLUTION_TAGS = {"solution", "hide-cell"}
AUDIO_NOTE = "<p><em>(audio player: run the notebook to listen)</em></p>"


def _exercises(nb) -> dict[str, list]:
    "Cells of each '### Exercise ...' section, up to the next heading of level 2 or 3."
    out, current = {}, None
    for c in nb.cells:
        if c.cell_type == "markdown":
            m = re.search(r"^#{2,3} (.*)$", c.source, flags=re.M)
            if m:
                current = m.group(1) if m.group(1).startswith("Exercise") else None
                if current: out[current] = []
        if current: out[current].append(c)
    return out


def test_the_tutorials_are_there():
    assert {p.stem for p in TUTORIALS} >= {"tutorial", "tutorial_expert_evaluation"}


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_every_exercise_has_a_hidden_solution(path):
    nb = nbformat.read(path, as_version=4)
    exercises = _exercises(nb)
    assert len(exercises) >= 3, list(exercises)
    for name, cells in exercises.items():
        sol = [c for c in cells if c.cell_type == "code" and SOLUTION_TAGS <= set(c.metadata.get("tags", []))]
        assert sol, f"{path.name}: '{name}' has no code cell tagged {sorted(SOLUTION_TAGS)}"
        hint = [c for c in cells if c.cell_type == "markdown" and "<summary>Solution</summary>" in c.source]
        assert hint and all(h.source.rstrip().endswith("</details>") for h in hint), f"{path.name}: '{name}'"
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and params[0].cell_type == "code", f"{path.name}: one cell tagged 'parameters'"


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_committed_with_outputs(path):
    "Read on GitHub as documentation: every code cell that shows something was run, figures included."
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code" and "parameters" not in c.metadata.get("tags", [])]
    silent = [c for c in code if not c.outputs]
    assert len(silent) <= len(code) // 3, f"{path.name}: {len(silent)} of {len(code)} code cells have no output"
    assert not [o for c in code for o in c.outputs if o.output_type == "error"], f"{path.name} was saved with an error"
    images = sum("image/png" in o.get("data", {}) for c in code for o in c.outputs)
    assert images >= 3, f"{path.name}: {images} figures in the saved outputs"


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_runs(path, tmp_path):
    from soundscaper.reproduce import run_notebook
    done = nbformat.read(run_notebook(path, tmp_path / path.name, timeout=900), as_version=4)
    errors = [o for c in done.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors


def strip_audio(nb):
    "Replace embedded audio players (megabytes of base64) by a short note."
    for c in nb.cells:
        for o in c.get("outputs", []):
            html = o.get("data", {}).get("text/html", "")
            if "<audio" in html:
                o["data"] = {"text/html": AUDIO_NOTE, "text/plain": "<audio player>"}
    return nb


def write_executed(path: Path) -> None:
    "Execute tutorial `path` with its default parameters and save it in place with its outputs."
    import tempfile

    from soundscaper.base import atomic_write
    from soundscaper.reproduce import run_notebook
    with tempfile.TemporaryDirectory() as d:
        done = nbformat.read(run_notebook(path, Path(d) / path.name, timeout=900), as_version=4)
    done.metadata.pop("papermill", None)
    for c in done.cells:
        c.metadata.pop("papermill", None); c.metadata.pop("execution", None)
        if not c.metadata.get("tags", True): del c.metadata["tags"]       # papermill adds empty tag lists
    with atomic_write(path, "w", encoding="utf-8") as f:
        nbformat.write(strip_audio(done), f)


if __name__ == "__main__":
    names = set(sys.argv[1:])
    for p in TUTORIALS:
        if not names or p.stem in names:
            write_executed(p)
            print(f"executed and saved {p.relative_to(ROOT)}")
