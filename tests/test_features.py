"""Log-mel features: parity with the paper's reference array, the kaiser_best resampler, loading, the length policy and
the normalisation statistics."""
import json
import warnings

import numpy as np
import pytest
import soundfile as sf

from soundscaper.data import fetch
from soundscaper.features import (LOUDNESS_FRAMES, MEL_FRAMES, AudioError, _direct_kernel, _polyphase, _resample_1d,
                                  clip_features, expected_frames, fit_features, kaiser_best_table, load_audio,
                                  load_normalisation, log_mel, mel_filterbank, normalise_log_mel, normalise_loudness,
                                  quantise_16bit, resample)

DEMO = "fold_1_participant_00056_stimulus_13"


@pytest.fixture(scope="module")
def ref_logmel():
    return np.load(fetch(f"reference/{DEMO}_logmel.npy"))


@pytest.fixture(scope="module")
def demo_features():
    return clip_features(fetch(f"reference/{DEMO}.flac"))


def test_demo_logmel_matches_reference(ref_logmel):
    wav, sr = sf.read(fetch(f"reference/{DEMO}.wav"), dtype="float32")
    lm = log_mel(wav, sr)
    assert lm.shape == (3001, 64) and lm.dtype == np.float32
    err = np.abs(lm - ref_logmel)
    assert err.max() <= 0.5, err.max()
    assert err.mean() <= 0.03, err.mean()
    assert abs(float((lm - ref_logmel)[:, :61].mean())) < 0.01      # no systematic offset
    assert err[:, 61:].max() <= 0.5                                   # top bins: the resampler's roll-off is reproduced


def test_clip_features_from_flac_equals_upstream_wav_chain(demo_features, ref_logmel):
    "From the stereo FLAC: mono mean + 16-bit quantisation reproduce upstream's WAV, hence the same features."
    wav, sr = sf.read(fetch(f"reference/{DEMO}.wav"), dtype="float32")
    np.testing.assert_array_equal(demo_features["logmel"], log_mel(wav, sr))
    assert demo_features["loudness"].shape == (LOUDNESS_FRAMES,) and demo_features["loudness"].dtype == np.float64
    assert np.abs(demo_features["logmel"] - ref_logmel).max() <= 0.5


def test_normalised_demo_statistics(demo_features):
    "The spec's numbers for the demo clip after normalisation (mean -1.4766 log-mel, -1.00667 loudness)."
    assert normalise_log_mel(demo_features["logmel"]).mean() == pytest.approx(-1.4766, abs=2e-3)
    assert normalise_loudness(demo_features["loudness"]).mean() == pytest.approx(-1.00667, abs=1e-3)


def test_normalisation_equals_reference_copies():
    st = load_normalisation()
    for key, name in [("log_mel", "norm_log_mel"), ("loudness", "norm_loudness")]:
        ref = json.loads(fetch(f"reference/{name}.json").read_text())
        npz = np.load(fetch(f"reference/{name}.npz"))
        for stat in ("mean", "std"):
            ours = st[key][stat]
            assert ours.dtype == np.dtype(ref[stat]["dtype"]) and list(ours.shape) == ref[stat]["shape"]
            np.testing.assert_array_equal(ours, np.array(ref[stat]["values"], dtype=ours.dtype))
            np.testing.assert_array_equal(ours, npz[stat])
    assert st["loudness"]["mean"][0] == 10.16057545757302 and st["loudness"]["std"][0] == 4.710876453113385
    x = np.zeros((5, 64), np.float32)
    np.testing.assert_array_equal(normalise_log_mel(x), (x - st["log_mel"]["mean"]) / st["log_mel"]["std"])


def test_mel_filterbank_equals_librosa():
    librosa = pytest.importorskip("librosa")
    m = librosa.filters.mel(sr=16000, n_fft=512, n_mels=64, fmin=50, fmax=8000)
    np.testing.assert_allclose(mel_filterbank(), m, atol=1e-7, rtol=1e-6)


def test_kaiser_best_table_parameters():
    half, per_zero = kaiser_best_table()
    assert per_zero == 512 and half.shape == (64 * 512 + 1,)
    assert half[0] == pytest.approx(0.9475937167399596)
    # zero crossings of the stretched sinc at multiples of 1/rolloff zero crossings
    k = np.arange(1, 60)
    pos = k / 0.9475937167399596 * 512
    assert np.abs(np.interp(pos, np.arange(len(half)), half)).max() < 2e-5


@pytest.mark.parametrize("sr_in,sr_out", [(44100, 16000), (48000, 16000), (22050, 16000), (8000, 16000),
                                          (11025, 16000), (44100, 48000)])
def test_resampler_matrix_path_equals_direct_evaluation(sr_in, sr_out):
    "The polyphase matrix product gives what resampy's per-sample evaluation (the compiled kernel) gives."
    import math
    g = math.gcd(sr_in, sr_out)
    up, down = sr_out // g, sr_in // g
    x = np.random.default_rng(0).normal(size=sr_in // 4)
    fast = _resample_1d(x, sr_in, sr_out, up, down)
    n_out = len(fast)
    times = np.concatenate([[0.0], np.cumsum(np.full(n_out - 1, 1.0 / (float(sr_out) / sr_in)))])
    n = np.floor(times).astype(np.int64)
    slow = np.zeros(n_out)
    _direct_kernel(x, n, times - n, *_polyphase(up, down)[2:], np.arange(n_out), slow)
    np.testing.assert_allclose(fast, slow, atol=1e-7)      # resampy's clock also drifts the phases by ~1e-8
    assert n_out == -(-len(x) * up // down)


def test_resampler_odd_ratio_uses_direct_path():
    "A rate pair with a huge period (44056 -> 16000: 2000/5507) is computed directly instead of by matrix."
    x = np.sin(2 * np.pi * 300 * np.arange(44056) / 44056)
    y = resample(x, 44056, 16000)
    assert _polyphase(2000, 5507)[0] is None
    assert len(y) == 16000
    np.testing.assert_allclose(y[1000:-1000], 1.0027 * np.sin(2 * np.pi * 300 * np.arange(16000) / 16000)[1000:-1000],
                               atol=5e-3)


def test_other_formats_and_rates(tmp_path):
    "A 48 kHz 24-bit stereo WAV and a 22.05 kHz mono WAV: shapes follow the clip length, values are sane."
    for clip in ["assessment_audio/40.wav", "assessment_audio/1.wav"]:
        info = sf.info(fetch(clip))
        y, sr = load_audio(fetch(clip))
        n = 3 * sr
        f = clip_features(y[:n], sr)
        assert (f["logmel"].shape[0], f["loudness"].shape[0]) == expected_frames(n, sr)
        assert np.isfinite(f["logmel"]).all() and (f["loudness"] >= 0).all() and f["loudness"].max() > 0.5
        assert sr == info.samplerate


def test_load_audio_resamples_and_keeps_channels():
    y, sr = load_audio(fetch("assessment_audio/40.wav"), sr=16000)
    assert sr == 16000 and y.dtype == np.float32 and len(y) == 10 * 16000
    st, sr2 = load_audio(fetch("assessment_audio/40.wav"), mono=False)
    assert st.shape == (2, 480000) and sr2 == 48000


def test_quantise_and_fit_length():
    y = np.array([0.25 / 32768, -0.25 / 32768, 2.0, -2.0, 0.5])
    np.testing.assert_array_equal(quantise_16bit(y), [0, -1 / 32768, 32767 / 32768, -1.0, 0.5])
    f = {"logmel": np.arange(10.0)[:, None] * np.ones(64), "loudness": np.arange(20.0)}
    g = fit_features(f)
    assert g["logmel"].shape == (MEL_FRAMES, 64) and g["loudness"].shape == (LOUDNESS_FRAMES,)
    assert g["loudness"][20] == 0 and g["logmel"][13, 0] == 3      # wrapped around
    long = {"logmel": np.zeros((4000, 64)), "loudness": np.zeros(20000)}
    assert fit_features(long)["logmel"].shape == (MEL_FRAMES, 64)


def test_fixed_length_option():
    y = np.random.default_rng(0).normal(0, 0.05, 44100 * 2)
    f = clip_features(y, 44100, fixed_length=True)
    assert f["logmel"].shape == (MEL_FRAMES, 64) and f["loudness"].shape == (LOUDNESS_FRAMES,)


def test_audio_error_is_user_facing(tmp_path):
    from soundscaper.data import SoundscaperError
    p = tmp_path / "x.wav"
    sf.write(p, np.zeros(44100 * 2), 44100)
    with pytest.raises(AudioError, match="silent") as exc:
        load_audio(p)
    assert isinstance(exc.value, SoundscaperError) and str(p) in str(exc.value)
    y, _ = load_audio(p, allow_silence=True)
    assert (y == 0).all()
    with pytest.raises(ValueError, match="mono"):
        log_mel(np.zeros((2, 1000)), 16000)
    with pytest.raises(ValueError, match="too short"):
        log_mel(np.zeros(100), 16000)
