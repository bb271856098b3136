"""ISO 532-1 loudness: parity with the paper's reference executable output and with mosqito, and synthesised test
signals with known loudness."""
import warnings

import numpy as np
import pytest
import soundfile as sf

from soundscaper.data import fetch
from soundscaper.features import load_audio
from soundscaper.loudness import (BARK, P_REF, PAPER_PA_PER_FS, calibration_factor, loudness, loudness_stats,
                                  loudness_times, specific_loudness)

FS = 48000
DEMO = "fold_1_participant_00056_stimulus_13"
FRAME_TOL = 0.0065    # sone, every one of the 15 000 frames: the claimed 0.0064 (measured 0.00644); mosqito: 0.026
STAT_TOL = 1e-4       # sone, Nmax / N5 / N10 (measured 4.4e-5 / 1.3e-5 / 6.2e-5)


def tone(level_db, f=1000.0, seconds=1.0, sr=FS):
    "A sine at `level_db` dB SPL (RMS), in pascals."
    t = np.arange(int(seconds * sr)) / sr
    return np.sqrt(2) * P_REF * 10 ** (level_db / 20) * np.sin(2 * np.pi * f * t)


def noise(level_db, kind="white", seconds=2.0, sr=FS, seed=0):
    "White or pink Gaussian noise at `level_db` dB SPL, in pascals."
    rng = np.random.default_rng(seed)
    x = rng.normal(size=int(seconds * sr))
    if kind == "pink":
        X = np.fft.rfft(x)
        f = np.arange(len(X), dtype=float)
        f[0] = 1
        x = np.fft.irfft(X / np.sqrt(f), len(x))
    return x / np.sqrt(np.mean(x**2)) * P_REF * 10 ** (level_db / 20)


@pytest.fixture(scope="module")
def demo():
    wav, sr = sf.read(fetch(f"reference/{DEMO}.wav"))
    with warnings.catch_warnings():          # the reference .npy was written by Python 2
        warnings.simplefilter("ignore")
        ref = np.load(fetch(f"reference/{DEMO}_loudness_iso532_1.npy"))[:, 0]
    return wav, sr, ref


@pytest.mark.parity
def test_demo_clip_matches_reference_executable(demo):
    wav, sr, ref = demo
    N = loudness(wav, sr)                     # paper's calibration, free field
    assert N.shape == (15000,) and N.dtype == np.float64
    err = np.abs(N - ref)
    assert err.max() <= FRAME_TOL, err.max()
    assert err.mean() < 2e-4, err.mean()                          # measured 1.6e-4
    ours, theirs = loudness_stats(N), loudness_stats(ref)
    for k in ("Nmax", "N5", "N10"):
        assert abs(ours[k] - theirs[k]) <= STAT_TOL, (k, ours[k], theirs[k])
    assert N[0] == 0.0 and abs(theirs["Nmax"] - 11.1983) < 1e-9
    np.testing.assert_allclose(loudness_times(3), [0, 0.002, 0.004])


@pytest.mark.parity
def test_mosqito_would_fail_the_frame_tolerance(demo):
    """The tolerance tells the two apart: on the clip's first second mosqito is 0.02 sone off at the onset (frames
    1-6; 0.026 on the whole clip), this module 0.0009. (1 s keeps mosqito's pure-Python loop to a few seconds.)"""
    import mosqito.sq_metrics as mosqito
    wav, sr, ref = demo
    x = wav[:sr]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Nm = mosqito.loudness_zwtv(x * PAPER_PA_PER_FS, sr, field_type="free")[0]
    ours = loudness(x, sr)
    assert len(ours) == len(Nm) == 500
    assert np.abs(ours - ref[:500]).max() <= FRAME_TOL
    err = np.abs(Nm - ref[:500])
    assert err[1:7].max() > 2 * FRAME_TOL and err[25:].max() <= FRAME_TOL, err[:8]


@pytest.mark.parity
def test_reference_is_free_field(demo):
    wav, sr, ref = demo
    n = 5 * sr
    diffuse = loudness(wav[:n], sr, field="diffuse")
    assert np.abs(diffuse - ref[:2500]).max() > 0.3          # diffuse field is clearly not what upstream used


@pytest.mark.parity
def test_paper_calibration_constant():
    assert calibration_factor(fetch("reference/calibration_signal_sine_1kHz_60dB.wav"), 60.0) == pytest.approx(
        PAPER_PA_PER_FS, rel=1e-12)
    assert PAPER_PA_PER_FS == pytest.approx(2.8357977, abs=1e-7)
    # a plain Pa-per-full-scale number is the same as the paper's default when equal to it
    x = tone(60, seconds=0.5) / PAPER_PA_PER_FS
    np.testing.assert_array_equal(loudness(x, FS), loudness(x, FS, pa_per_fs=PAPER_PA_PER_FS))


@pytest.mark.parity
@pytest.mark.parametrize("clip", ["assessment_audio/10.flac", "assessment_audio/40.wav"])
def test_matches_mosqito_on_real_excerpts(clip):
    import mosqito.sq_metrics as mosqito
    y, sr = load_audio(fetch(clip))
    # 2 s keep mosqito's pure-Python loops short. mosqito's first 2-kHz sample reads the decay state of the signal's
    # *last* sample (we start at rest, like the reference executable: see the demo test); ending the excerpt with
    # 0.5 s of silence makes that state "at rest" too, so every frame is comparable.
    x = np.concatenate([y[5 * sr: 7 * sr], np.zeros(sr // 2)]).astype(np.float64)
    N, spec = specific_loudness(x, sr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Nm, Nsm, bark, _ = mosqito.loudness_zwtv(x * PAPER_PA_PER_FS, sr, field_type="free")
    assert N.shape == Nm.shape and spec.shape == (len(N), 240)
    np.testing.assert_allclose(BARK, bark, atol=1e-9)
    err = np.abs(N - Nm)
    assert err.max() <= 0.01, err.max()
    assert N[:1000].mean() > 1.0                              # the excerpt is not quiet
    # specific loudness: identical except mosqito's occasional one-bin overrun of a slope past a plateau
    d = np.abs(spec - Nsm.T)[25:]
    assert d.mean() < 1e-3 and np.quantile(d, 0.999) < 0.01


def test_one_sone_at_40_db():
    "By definition of the sone: a 1 kHz tone at 40 dB SPL in a free field is 1 sone."
    N = loudness(tone(40), FS, calibration=1.0)
    assert N[250:].mean() == pytest.approx(1.0, rel=0.05)
    assert np.ptp(N[300:]) < 0.01                              # stationary once the filters have settled


@pytest.mark.parametrize("level", [50, 60, 70, 80, 90])
def test_1khz_tone_doubles_per_10_db(level):
    "Above 40 phon, every 10 dB doubles the loudness of a 1 kHz tone: N = 2**((L - 40) / 10) sone."
    N = loudness(tone(level), FS, calibration=1.0)[300:].mean()
    assert N == pytest.approx(2 ** ((level - 40) / 10), rel=0.05)


@pytest.mark.parametrize("field", ["free", "diffuse"])
@pytest.mark.parametrize("kind,level", [("tone100", 60), ("tone250", 60), ("tone4000", 60), ("white", 40),
                                        ("white", 70), ("pink", 50), ("pink", 80)])
@pytest.mark.parity
def test_stationary_signals_match_stationary_method(kind, level, field):
    "For steady sounds the time-varying method settles on the stationary ISO 532-1 loudness (mosqito's zwst)."
    import mosqito.sq_metrics as mosqito
    x = tone(level, float(kind[4:])) if kind.startswith("tone") else noise(level, kind)
    N = loudness(x, FS, field=field, calibration=1.0)[250:].mean()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = mosqito.loudness_zwst(x, FS, field_type=field)[0]
    assert N == pytest.approx(expected, rel=0.05)


def test_low_frequencies_are_softer():
    "Equal-loudness contours: at the same SPL a 100 Hz tone is much softer than a 1 kHz tone."
    n100 = loudness(tone(60, 100), FS, calibration=1.0)[300:].mean()
    n1k = loudness(tone(60), FS, calibration=1.0)[300:].mean()
    assert n100 < 0.6 * n1k


def test_temporal_behaviour_of_tone_bursts():
    "Short bursts are softer than long ones (temporal integration); after the end loudness decays within ~0.2 s."
    peaks = []
    for ms in [5, 10, 20, 50, 100, 200, 500]:
        x = np.zeros(FS)
        x[:int(FS * ms / 1000)] = tone(70, seconds=ms / 1000)
        N = loudness(x, FS, calibration=1.0)
        peaks.append(N.max())
        assert N[int((ms / 1000 + 0.3) * 500):].max() < 0.05 * N.max()
    assert np.all(np.diff(peaks) > 0)
    steady = loudness(tone(70), FS, calibration=1.0)[300:].mean()
    assert peaks[-1] > 0.95 * steady and peaks[0] < 0.7 * steady     # (an abrupt onset adds a click)


def test_output_length_and_silence():
    for sr, n in [(44100, 44100), (48000, 12345), (32000, 32000)]:
        N = loudness(np.zeros(n), sr, calibration=1.0)
        assert len(N) == -(-(-(-int(48000 * n / sr) // 24)) // 4)
        assert (N == 0).all()


def test_input_errors():
    with pytest.raises(ValueError, match="mono"):
        loudness(np.zeros((2, 100)), FS)
    with pytest.raises(ValueError, match="empty"):
        loudness(np.zeros(0), FS)
    with pytest.raises(ValueError, match="free"):
        loudness(np.zeros(100), FS, field="pressure")
    with pytest.raises(ValueError, match="positive"):
        loudness(np.zeros(100), FS, calibration=-1.0)
    with pytest.warns(UserWarning, match="120 dB"):
        loudness(tone(130, 100, seconds=0.3), FS, calibration=1.0)


def test_stream_in_blocks_equals_whole_signal():
    "`LoudnessStream` fed in blocks of any size gives exactly `loudness` of the whole signal (48 kHz: no resampling)."
    from soundscaper.loudness import LoudnessStream
    y, sr = load_audio(fetch("assessment_audio/40.wav"))
    assert sr == FS
    whole = loudness(y, sr)
    p = y.astype(np.float64) * PAPER_PA_PER_FS
    for sizes in ([len(p)], [1, 23, 24, 25, 4800, 100000], [7919] * 60):
        stream, parts, i = LoudnessStream(), [], 0
        for k in sizes:
            parts.append(stream.feed(p[i:i + k]))
            i += k
        parts += [stream.feed(p[i:]), stream.finish()]
        np.testing.assert_array_equal(np.concatenate(parts), whole)


def test_long_file_path_keeps_reference_parity():
    """The demo clip's WAV read in 4-s blocks (its FFT resampling to 48 kHz done in overlapping blocks): within 1e-6
    sone of the whole-file loudness, and as close to the reference executable's output."""
    from soundscaper.features import loudness_file
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = np.load(fetch(f"reference/{DEMO}_loudness_iso532_1.npy"))[:, 0]
    wav, sr = sf.read(fetch(f"reference/{DEMO}.wav"))
    N = loudness_file(fetch(f"reference/{DEMO}.wav"), block_seconds=4)
    assert np.abs(N - loudness(wav, sr)).max() < 1e-6
    assert np.abs(N - ref)[25:].max() <= 0.0065 and np.abs(N - ref).mean() < 1e-3
