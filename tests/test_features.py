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
    import librosa
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
    fast = _resample_1d(x, sr_in, sr_out)
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
    from soundscaper.base import SoundscaperError
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


# --- long files block by block (bounded memory), the resampler against resampy, the mel filterbank of librosa ---

@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    "Real recordings at three rates: 44.1 kHz stereo FLAC (25 s of the demo clip + 1234 samples: n is not a multiple"
    " of 147), 48 kHz stereo (10 s), 22.05 kHz mono (30 s)."
    st, sr = sf.read(fetch(f"reference/{DEMO}.flac"))
    demo = tmp_path_factory.mktemp("long") / "demo.flac"
    sf.write(demo, st[: 25 * sr + 1234], sr, format="FLAC")
    return {"44.1k": demo, "48k": fetch("assessment_audio/40.wav"), "22.05k": fetch("assessment_audio/1.wav")}


@pytest.mark.parametrize("rate,loudness_tol", [("44.1k", 1e-6), ("48k", 0.0), ("22.05k", 2e-5)])
def test_blockwise_equals_whole_file(recordings, rate, loudness_tol):
    """Read and computed in 2.5-s or 4-s blocks: the log-mel is identical to the whole-file computation, so is the
    loudness at 48 kHz; other rates differ by the FFT resampling's far kernel only (stated in the notebook)."""
    from soundscaper.features import file_features, log_mel_file, loudness_file
    path = recordings[rate]
    whole = clip_features(path)                          # at most 60 s: one block, the whole-file computation
    a = file_features(path, block_seconds=2.5)
    b = file_features(path, block_seconds=4.0)
    np.testing.assert_array_equal(a["logmel"], whole["logmel"])
    np.testing.assert_array_equal(b["logmel"], whole["logmel"])
    np.testing.assert_array_equal(a["loudness"], b["loudness"])        # block sizes never change a value
    assert np.abs(a["loudness"] - whole["loudness"]).max() <= loudness_tol
    assert a["loudness"].shape == whole["loudness"].shape and a["loudness"].dtype == np.float64
    np.testing.assert_array_equal(log_mel_file(path, block_seconds=3), whole["logmel"])
    np.testing.assert_array_equal(loudness_file(path, block_seconds=3), a["loudness"])


def test_streams_accept_any_block_sizes():
    "The 16-kHz resampler and the log-mel stream give the whole-signal output for blocks of 1 sample up to seconds."
    from soundscaper.features import LogMelStream, _KaiserStream
    x = np.random.default_rng(5).normal(0, 0.1, 44100 * 3 + 77)
    sizes = [1, 1, 300, 5000, 1, 44100, 2, 70000]
    for sr_in, sr_out in [(44100, 16000), (44100, 48000), (44056, 16000)]:
        stream, parts, i = _KaiserStream(sr_in, sr_out), [], 0
        for k in sizes:
            parts.append(stream.feed(x[i:i + k]))
            i += k
        parts += [stream.feed(x[i:]), stream.finish()]
        np.testing.assert_array_equal(np.concatenate(parts), resample(x, sr_in, sr_out))
    stream, parts, i = LogMelStream(44100), [], 0
    for k in sizes:
        parts.append(stream.feed(x[i:i + k]))
        i += k
    parts += [stream.feed(x[i:]), stream.finish()]
    np.testing.assert_array_equal(np.concatenate(parts), log_mel(x, 44100))


def test_fft_block_resampling_matches_scipy():
    """The loudness's FFT resampling to 48 kHz in 3-s blocks against scipy.signal.resample of the whole signal, for a
    length that is not a multiple of 147 (outputs off the 160/147 grid): what differs is the far kernel only."""
    import scipy.signal
    from soundscaper.features import _FFTBlockStream
    rng = np.random.default_rng(2)
    n = 44100 * 12 + 1234
    t = np.arange(n) / 44100
    x = np.sin(2 * np.pi * 1000 * t * (1 + t / 12)) * rng.random(n // 4410 + 1).repeat(4410)[:n]   # a sweep up to 2 kHz
    ref = scipy.signal.resample(x, int(48000 * n / 44100))
    stream = _FFTBlockStream(44100, 48000, n, x[-88200:], block_s=3.0)
    y = np.concatenate([stream.feed(x[:100000]), stream.feed(x[100000:]), stream.finish()])
    assert y.shape == ref.shape
    assert np.abs(y - ref).max() < 1e-5, np.abs(y - ref).max()          # measured 3e-6 (amplitude 1)


def test_file_features_memory_does_not_grow_with_length(tmp_path):
    "Peak traced memory for 30 s and 90 s read in 5-s blocks: the longer file costs no more than its larger outputs."
    import tracemalloc
    from soundscaper.features import file_features
    peaks = {}
    for seconds in (30, 90):
        p = tmp_path / f"noise_{seconds}.flac"
        sf.write(p, np.random.default_rng(seconds).normal(0, 0.05, (44100 * seconds, 2)), 44100, format="FLAC")
        file_features(p, block_seconds=5)                # compile and warm up outside the measurement
        tracemalloc.start()
        file_features(p, block_seconds=5)
        peaks[seconds] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    outputs = 60 * (100 * 64 * 4 + 500 * 8)             # the extra 60 s of log-mel and loudness rows
    assert peaks[90] - peaks[30] < outputs + 4 * 2**20, (peaks, outputs)     # measured: 2.7 MiB more
    whole_90 = 90 * 44100 * 8 * 6                        # a whole-file computation holds many float64 copies
    assert peaks[90] < whole_90 / 2, peaks


def test_mel_filterbank_is_librosas_in_float64():
    "`mel_filterbank` is librosa's Slaney filterbank (upstream's call, float32 there) kept in float64."
    import librosa
    fb = mel_filterbank()
    upstream = librosa.filters.mel(sr=16000, n_fft=512, n_mels=64, fmin=50, fmax=8000)
    assert fb.dtype == np.float64 and fb.shape == (64, 257) and not fb.flags.writeable
    np.testing.assert_allclose(fb, upstream, rtol=1e-6, atol=1e-9)


def test_resampler_matches_resampy_0_2():
    """Our kaiser_best resampler against resampy 0.2.2 itself (the version upstream's librosa used; the dev extra pins
    it). resampy >= 0.3 changed its kaiser_best filter and no longer reproduces the reference log-mel."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                  # resampy 0.2 imports pkg_resources
        import resampy                                   # the dev extra installs it: a missing one is a failure
    assert resampy.version.short_version == "0.2", f"need resampy 0.2.x (the dev extra), found {resampy.__version__}"
    rng = np.random.default_rng(4)
    for sr_in, sr_out in [(44100, 16000), (48000, 16000), (22050, 16000), (8000, 16000), (32000, 16000),
                          (44100, 48000)]:
        x = rng.normal(size=sr_in * 2)
        ours, theirs = resample(x, sr_in, sr_out), resampy.resample(x, sr_in, sr_out, filter="kaiser_best")
        assert ours.shape == theirs.shape
        assert np.abs(ours - theirs).max() < 5e-6, (sr_in, sr_out, np.abs(ours - theirs).max())
    wav, sr = sf.read(fetch(f"reference/{DEMO}.wav"))
    np.testing.assert_allclose(resample(wav, sr, 16000), resampy.resample(wav, sr, 16000, filter="kaiser_best"),
                               rtol=0, atol=2e-7)
