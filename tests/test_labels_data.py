"""Label files and ISO coordinates on the whole of ARAUS; the expert-evaluation spreadsheet."""
import numpy as np
import pandas as pd
import pytest

from soundscaper.base import DataError
from soundscaper.data import load_araus, load_expert_evaluation
from soundscaper.labels import EVENTS, ISO_COLUMNS, PAQS, SCENES, SOUNDSCAPY_PAQ, iso_coordinates, paq_to_iso


@pytest.fixture(scope="module")
def araus():
    return load_araus("all")


def test_split_sizes(araus):
    assert [len(load_araus(s)) for s in ("train", "validation", "test")] == [19152, 2520, 3576]
    assert len(araus) == 25248 and araus["clip"].is_unique


def test_iso_recomputed_on_all_clips(araus):
    # ISOP/ISOE recomputed from the 8 PAQs equal the label files' values on all 25,248 clips.
    iso = iso_coordinates(araus[list(PAQS)])
    err = np.abs(iso[list(ISO_COLUMNS)].to_numpy() - araus[list(ISO_COLUMNS)].to_numpy())
    assert err.max() <= 1e-12, err.max()
    assert araus[list(ISO_COLUMNS)].min().min() == pytest.approx(-1) and araus[list(ISO_COLUMNS)].max().max() == pytest.approx(1)


def test_iso_matches_soundscapy(araus):
    # An independent implementation (Soundscapy, PAQ1..PAQ8 naming) agrees once columns are mapped by name.
    from soundscapy.surveys import calculate_iso_coords
    sub = araus.sample(500, random_state=0)
    sc = sub[list(PAQS)].rename(columns={v: k for k, v in SOUNDSCAPY_PAQ.items()})
    isop, isoe = calculate_iso_coords(sc, val_range=(1, 5))
    ours = paq_to_iso(sub[list(PAQS)].to_numpy())
    np.testing.assert_allclose(np.asarray(isop), ours[:, 0], atol=1e-12)
    np.testing.assert_allclose(np.asarray(isoe), ours[:, 1], atol=1e-12)


def test_counts_match_spec(araus):
    test = araus[araus.split == "test"]
    assert test.scene.value_counts()[list(SCENES)].tolist() == [793, 1279, 1504]
    assert test[list(EVENTS)].sum().tolist() == [118, 2396, 356, 1396, 1535, 1137, 2361, 2245, 1360, 326, 2202, 2396,
                                                   1597, 1964, 2349]
    assert araus.groupby("split").participant.nunique().to_dict() == {"test": 85, "train": 456, "validation": 60}


def test_bad_label_files_are_refused(tmp_path, mirror, monkeypatch):
    import shutil
    lab = tmp_path / "araus_labels"
    shutil.copytree(mirror / "araus_labels", lab)
    manifest = tmp_path / "manifest.tsv"
    # a manifest whose sizes/hashes follow the edited files, so the edits reach the parser
    from soundscaper.base import sha256sum
    from soundscaper.data import manifest as real_manifest, _read_manifest
    rows = ["name\tpath\turl\tsha256\tsize"]
    f = lab / "test_set_acoustic_scene_labels.txt"
    f.write_bytes(f.read_bytes().replace(b"park\r\n", b"parc\r\n", 1))
    for e in real_manifest().values():
        p = tmp_path / e.path
        if p.exists():
            rows.append(f"{e.name}\t{e.path}\t\t{sha256sum(p)}\t{p.stat().st_size}")
    manifest.write_text("\n".join(rows) + "\n")
    monkeypatch.setenv("SOUNDSCAPER_MANIFEST", str(manifest))
    monkeypatch.setenv("SOUNDSCAPER_DATA", str(tmp_path))
    with pytest.raises(DataError, match=r"test_set_acoustic_scene_labels.txt, line \d+: unknown scene 'parc'"):
        load_araus("test")
    g = lab / "validation_set_ISOP_ISOE.txt"
    g.write_bytes(g.read_bytes()[: g.read_bytes().rfind(b"\r\n", 0, -2) + 2])     # drop the last line
    rows = [r for r in rows if not r.startswith("validation_set_ISOP_ISOE\t")]
    rows.append(f"validation_set_ISOP_ISOE\t{g.relative_to(tmp_path)}\t\t{sha256sum(g)}\t{g.stat().st_size}")
    manifest.write_text("\n".join(rows) + "\n")
    _read_manifest.cache_clear()
    with pytest.raises(DataError, match="different line counts"):
        load_araus("validation")
    _read_manifest.cache_clear()


def test_expert_evaluation_means():
    ev = load_expert_evaluation()
    means = ev.groupby(["dataset", "source"])["overall"].mean().round(3)
    assert means[("D1", "expert")] == 3.506 and means[("D1", "SoundSCaper")] == 3.292
    assert means[("D2", "expert")] == 3.168 and means[("D2", "SoundSCaper")] == 2.912
