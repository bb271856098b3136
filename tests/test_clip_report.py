"""The clip report picture (soundscaper.clip_report): what it plots is the clip's numbers and the listeners' quartiles,
files are written atomically, and bad rows give one clear error."""
import os

import numpy as np
import pandas as pd
import pytest

from soundscaper import clip_report as cr
from soundscaper.captions import TemplateCaptioner, inputs_from_predictions
from soundscaper.base import SoundscaperError
from soundscaper.data import fetch, load_araus
from soundscaper.labels import EVENTS, ISO_COLUMNS, PAQS, SOUNDSCAPY_PAQ_ORDER

CLIP = "fold_1_participant_00056_stimulus_13"



@pytest.fixture(scope="module")
def demo() -> pd.DataFrame:
    "The demo clip's predictions row, read straight from upstream's two output files (not through read_predictions)."
    lines = fetch("demo_scene_paq").read_text().splitlines()
    probs = [float(v) for v in fetch("demo_event").read_text().split()]
    iso = [float(v) for v in lines[1].split("\t")]
    paq = [float(v) for v in lines[2].split("\t")]
    assert len(probs) == len(EVENTS) and len(paq) == len(PAQS)
    return pd.DataFrame([{"clip": CLIP, "scene": lines[0].strip(), **dict(zip(EVENTS, probs)),
                          **dict(zip(ISO_COLUMNS, iso)), **dict(zip(PAQS, paq))}])


@pytest.fixture(scope="module")
def park() -> pd.DataFrame:
    araus = load_araus("test")
    return araus[araus.scene == "park"]


@pytest.fixture(scope="module")
def fig(demo):
    return cr.plot_clip(demo)


def _by_gid(ax, gid):
    return [a for a in (*ax.lines, *ax.collections) if a.get_gid() == gid]


def test_radar_line_is_the_clips_eight_ratings(fig, demo):
    (line,) = _by_gid(fig.axes[0], "clip-paq")
    want = demo.iloc[0][list(SOUNDSCAPY_PAQ_ORDER)].to_numpy(float)
    np.testing.assert_allclose(line.get_ydata(), np.r_[want, want[0]], rtol=0, atol=1e-12)
    # Soundscapy's circumplex angles: pleasant 0°, vibrant 45°, ..., calm 315°
    np.testing.assert_allclose(np.rad2deg(line.get_xdata()[:8]), [0, 45, 90, 135, 180, 225, 270, 315], atol=1e-9)
    assert fig.axes[0].get_ylim() == (1, 5)


def test_band_and_median_are_the_listeners_quartiles(fig, park):
    ax = fig.axes[0]
    q = park[list(SOUNDSCAPY_PAQ_ORDER)].quantile([0.25, 0.5, 0.75]).to_numpy()
    (median,) = _by_gid(ax, "reference-median")
    np.testing.assert_allclose(median.get_ydata()[:8], q[1], atol=1e-12)
    (band,) = _by_gid(ax, "reference-iqr")
    verts = band.get_paths()[0].vertices                       # (theta, r): the q75 edge and the q25 edge
    theta = np.deg2rad(np.arange(0, 360, 45))
    for k, t in enumerate(theta):
        r = verts[np.isclose(verts[:, 0], t), 1]
        assert np.isclose(r, q[0, k]).any() and np.isclose(r, q[2, k]).any(), (SOUNDSCAPY_PAQ_ORDER[k], r)
        assert r.min() >= q[0, k] - 1e-12 and r.max() <= q[2, k] + 1e-12


def test_circumplex_point_and_reference(fig, demo, park):
    ax = fig.axes[1]
    (star,) = _by_gid(ax, "clip-iso")
    np.testing.assert_allclose(star.get_offsets()[0], [0.42336637, -0.10498028], atol=1e-12)   # the reference file
    assert ax.get_xlim() == (-1, 1) and ax.get_ylim() == (-1, 1)
    # Soundscapy's scatter layer under the density holds exactly the park listeners' points
    pts = [c.get_offsets() for c in ax.collections if c.get_gid() != "clip-iso" and len(c.get_offsets()) == len(park)]
    assert len(pts) == 1
    np.testing.assert_allclose(np.sort(pts[0][:, 0]), np.sort(park[ISO_COLUMNS[0]].to_numpy()), atol=1e-12)
    assert any(t.get_text() == "(calm)" for t in ax.texts)      # Soundscapy's quadrant names


def test_caption_and_title(fig, demo):
    want = TemplateCaptioner()(inputs_from_predictions(demo)[0]).caption
    (cap,) = [t for t in fig.texts if t.get_gid() == "caption"]
    assert " ".join(cap.get_text().split()) == f"“{want}”"
    assert CLIP in fig._suptitle.get_text() and "park" in fig._suptitle.get_text()


@pytest.mark.parametrize("change, message", [
    (lambda d: d.drop(columns=[ISO_COLUMNS[1]]), "lacks the columns ['ISOEventful']"),
    (lambda d: d.drop(columns=["scene"]), "lacks the columns ['scene']"),
    (lambda d: d.assign(annoying=np.nan), "annoying is nan, not a number"),
    (lambda d: pd.concat([d, d]), "table of 2 rows"),
])
def test_bad_row_is_one_clear_error(demo, change, message):
    with pytest.raises(cr.ClipReportError) as err:
        cr.plot_clip(change(demo))
    assert message in str(err.value) and isinstance(err.value, SoundscaperError)


def test_save_is_atomic(demo, tmp_path, monkeypatch):
    out = tmp_path / "r" / f"{CLIP}.png"
    assert cr.save_clip_report(demo, out, dpi=40) == out
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    before = out.read_bytes()

    def broken(self, f, **kw):                                   # writes half a file, then fails
        f.write(b"\x89PNG half")
        raise OSError("disk full")
    monkeypatch.setattr(cr.Figure, "savefig", broken)
    with pytest.raises(OSError, match="disk full"):
        cr.save_clip_report(demo, out, dpi=40)
    assert out.read_bytes() == before                           # the old report is kept
    assert os.listdir(out.parent) == [out.name]                  # and no temporary file is left


def test_batch_goes_on_past_a_bad_row(demo, tmp_path):
    table = pd.concat([demo.assign(clip="a/b"), demo.assign(clip="bad", calm="x"), demo.assign(clip="own")],
                      ignore_index=True)
    res = cr.save_clip_reports(table, tmp_path, captions={"own": "My own words."}, dpi=40)
    assert res["clip"].tolist() == ["a/b", "bad", "own"]
    assert res["error"].tolist()[0] == res["error"].tolist()[2] == ""
    assert "clip bad: calm is 'x', not a number" in res["error"][1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_b.png", "own.png"]


def test_predict_and_caption_draw_reports_from_the_command_line(tmp_path, mirror):
    "`soundscaper predict --report DIR` and `soundscaper caption --report DIR` write one picture per clip."
    from soundscaper.cli import main
    audio = fetch("reference/fold_1_participant_00056_stimulus_13.flac")
    assert main(["predict", str(audio), "--out", str(tmp_path / "pred"), "--report", str(tmp_path / "r1")]) == 0
    png = tmp_path / "r1" / f"{CLIP}.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    table = tmp_path / "pred" / "predictions.csv"
    assert main(["caption", str(table), "--out", str(tmp_path / "c.csv"), "--report", str(tmp_path / "r2")]) == 0
    assert (tmp_path / "r2" / f"{CLIP}.png").stat().st_size > 20_000
    (tmp_path / "file").write_text("x")
    assert main(["predict", str(audio), "--out", str(tmp_path / "p2"), "--report", str(tmp_path / "file")]) == 2
