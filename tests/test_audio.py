"""Sound textures: known answers on synthetic sounds, agreement with a plain scipy pipeline, the CLI."""
import json
import shutil
import subprocess

import numpy as np
import pytest
import scipy.fft
import scipy.signal
from typer.testing import CliRunner

from backend.cli import app
from model.sound import texture as audio
from model.sound.texture import TEXTURE_GROUPS
from model.data.media import write_audio_clip, write_video
from model.settings import TEXTURE

RATE = 20_000
N = int(TEXTURE.clip_seconds * RATE)
T = np.arange(N) / RATE


def noise(seed=0, n=N):
    return np.random.default_rng(seed).standard_normal(n).astype(np.float32)


def group(texture, name):
    return texture[..., TEXTURE_GROUPS[name]]


def plain_scipy_cochleagram(waveform, sample_rate):
    """The toolbox recipe step by step: filter, Hilbert envelope, compress, resample."""
    common = np.gcd(sample_rate, TEXTURE.sample_rate)
    signal = scipy.signal.resample_poly(waveform.astype(np.float64), TEXTURE.sample_rate // common,
                                        sample_rate // common)
    subbands = scipy.fft.irfft(scipy.fft.rfft(signal) * audio.cochlear_filters(signal.size), n=signal.size)
    envelopes = np.abs(scipy.signal.hilbert(subbands)) ** TEXTURE.compression
    decimated = scipy.signal.resample_poly(envelopes, 1, TEXTURE.sample_rate // TEXTURE.envelope_rate, axis=-1)
    return np.maximum(decimated, 0)


def test_layout_and_weights():
    bounds = sorted((g.start, g.stop) for g in TEXTURE_GROUPS.values())
    assert bounds[0][0] == 0 and bounds[-1][1] == audio.TEXTURE_DIM == 502
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    weights = audio.texture_weights()
    marginal = slice(TEXTURE_GROUPS["mu"].start, TEXTURE_GROUPS["sigma"].stop)
    for part in (marginal, TEXTURE_GROUPS["rho"], TEXTURE_GROUPS["mod"], TEXTURE_GROUPS["loudness"]):
        assert weights[part].sum() == pytest.approx(1.0)        # each kind of statistic counts once
        assert np.ptp(weights[part]) == 0


@pytest.mark.parametrize("n_samples", [N, N + 1])
def test_cochlear_filters_squared_sum_to_one(n_samples):
    filters = audio.cochlear_filters(n_samples)
    assert filters.shape == (32, n_samples // 2 + 1)
    np.testing.assert_allclose((filters ** 2).sum(axis=0), 1.0, atol=1e-12)
    freqs = scipy.fft.rfftfreq(n_samples, 1 / RATE)
    peaks = freqs[filters[1:-1].argmax(axis=1)]
    np.testing.assert_allclose(peaks, audio.cochlear_center_frequencies()[1:-1], rtol=0.01)
    assert audio.cochlear_center_frequencies()[[0, -1]] == pytest.approx([20, 10_000])


@pytest.mark.parametrize("sample_rate", [22_050, 20_000])
def test_cochleagrams_match_plain_scipy_pipeline(sample_rate):
    clips = np.stack([noise(seed, int(2 * sample_rate)) * 0.1 for seed in range(3)])
    clips[1] *= np.sin(2 * np.pi * 3 * np.arange(clips.shape[1]) / sample_rate) ** 2
    fast = audio.cochleagrams(clips, sample_rate)
    for clip, envelopes in zip(clips, fast):
        expected = plain_scipy_cochleagram(clip, sample_rate)
        assert envelopes.shape == expected.shape == (32, 800)
        np.testing.assert_allclose(envelopes, expected, atol=1e-5 * expected.max())   # float32 rounding


def test_batched_equals_one_at_a_time():
    clips = np.stack([noise(seed) * (seed + 1) * 0.05 for seed in range(5)])
    batched = audio.sound_textures(clips, RATE)
    assert batched.shape == (5, 502)
    for clip, texture in zip(clips, batched):
        np.testing.assert_allclose(audio.sound_texture(clip, RATE), texture, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("frequency", [250.0, 1000.0, 4000.0])
def test_pure_tone_energy_in_its_band(frequency):
    texture = audio.sound_texture(0.3 * np.sin(2 * np.pi * frequency * T), RATE)
    mu = group(texture, "mu")
    band = np.argmin(np.abs(np.log(audio.cochlear_center_frequencies() / frequency)))
    assert mu.argmax() == band
    far = np.abs(np.arange(32) - band) >= 3
    assert mu[far].max() < 0.2 * mu[band]


def test_noise_modulated_at_10_hz_peaks_nearest_modulation_band():
    texture = audio.sound_texture(0.1 * noise(1) * (1 + np.sin(2 * np.pi * 10 * T)), RATE)
    modulation = group(texture, "mod").reshape(32, TEXTURE.n_modulation)    # channel-major
    # 10 Hz sits between the 7.2 and 13.9 Hz bands (equidistant in log); the toolbox's bands are
    # as wide as their centre, so 10 Hz is nearest the 13.9 Hz band in units of its width.
    filters = audio.modulation_filters(modulation_frames := 1500)
    nearest = filters[:, round(10 * modulation_frames / TEXTURE.envelope_rate)].argmax()
    assert nearest == 5
    assert (modulation.argmax(axis=1) == nearest).all()
    white = group(audio.sound_texture(0.1 * noise(1), RATE), "mod").reshape(32, -1)
    assert (white.argmax(axis=1) != nearest).mean() > 0.9


def test_scaling_changes_only_loudness():
    clip = 0.01 * noise(2) * (1 + np.sin(2 * np.pi * 4 * T))
    quiet, loud = audio.sound_texture(clip, RATE), audio.sound_texture(10 * clip, RATE)
    np.testing.assert_allclose(loud[:-1], quiet[:-1], rtol=1e-4, atol=1e-6)
    assert loud[-1] / quiet[-1] == pytest.approx(10 ** TEXTURE.compression, rel=1e-4)


def test_comodulated_noise_has_higher_neighbour_correlation():
    slow = scipy.signal.resample(np.random.default_rng(3).standard_normal(40), N)    # smooth, 5 Hz-ish
    comodulated = audio.sound_texture(0.1 * noise(4) * np.exp(slow), RATE)
    white = audio.sound_texture(0.1 * noise(4), RATE)
    neighbours = slice(0, 31)                                   # rho starts with the |j-k| = 1 pairs
    assert group(comodulated, "rho")[neighbours].mean() > group(white, "rho")[neighbours].mean() + 0.3
    assert np.all(np.abs(group(comodulated, "rho")) <= 1 + 1e-9)


def tone_mix(sample_rate, seconds=TEXTURE.clip_seconds):
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    return (0.2 * np.sin(2 * np.pi * 440 * t) * (1 + np.sin(2 * np.pi * 3 * t))
            + 0.1 * np.sin(2 * np.pi * 1500 * t)).astype(np.float32)


@pytest.mark.parametrize("sample_rate", [8_000, 44_100, 48_000])
def test_common_sample_rates_agree(sample_rate):
    reference = audio.sound_texture(tone_mix(RATE), RATE)
    texture = audio.sound_texture(tone_mix(sample_rate), sample_rate)
    assert np.isfinite(texture).all()
    # Channels with the tones' energy agree; ** 0.3 lifts each rate's own -90 dB resampling residue
    # in the empty channels to a few percent, so those are not compared.
    loud = group(reference, "mu") > 0.1
    np.testing.assert_allclose(group(texture, "mu")[loud], group(reference, "mu")[loud], rtol=0.03)
    assert texture[-1] == pytest.approx(reference[-1], rel=0.05)


def test_stereo_and_integer_pcm():
    left, right = tone_mix(RATE), 0.1 * noise(5)
    mono = audio.sound_texture((left + right) / 2, RATE)
    for stereo in (np.stack([left, right]), np.stack([left, right], axis=1)):
        np.testing.assert_allclose(audio.sound_texture(stereo, RATE), mono, rtol=1e-4, atol=1e-6)
    pcm = np.round(left * 32767).astype(np.int16)
    np.testing.assert_allclose(audio.sound_texture(pcm, RATE),
                               audio.sound_texture(pcm.astype(np.float32) / 32768, RATE), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("level", [0.0, 1e-7])
def test_silence_is_finite_and_flagged(level):
    clip = level * noise(6)
    textures, spectra, silent = audio.clip_features(np.stack([clip, 0.1 * noise(7)]), RATE)
    assert np.isfinite(textures).all() and np.isfinite(spectra).all()
    assert silent.tolist() == [True, False] and audio.is_silent(clip)
    assert not textures[0, :-1].any() and textures[1, :-1].any()


def test_spectrum_features_follow_the_frame():
    clip = np.zeros(N, np.float32)
    burst = (T >= 1.0) & (T < 1.1)
    clip[burst] = 0.5 * np.sin(2 * np.pi * 1000 * T[burst])
    channel = np.argmin(np.abs(audio.cochlear_center_frequencies() - 1000))
    during, after = audio.spectrum_features(clip, RATE, 1.05), audio.spectrum_features(clip, RATE, 2.0)
    assert during.shape == (32,) and during.argmax() == channel
    assert after.max() < 0.05 * during[channel]
    window = audio.spectrum_frames(1500, 1.05)
    assert (window.start, window.stop) == (414, 427)             # 1.05 s +- 16.7 ms at 400 Hz
    clips = np.stack([clip, clip[::-1].copy()])
    _, middles, _ = audio.clip_features(clips, RATE)
    np.testing.assert_allclose(middles, audio.batch_spectrum_features(clips, RATE, N / RATE / 2), rtol=1e-6)


@pytest.mark.parametrize("sample_rate", [22_050, 48_000])
def test_torch_path_agrees_with_numpy_path(sample_rate):
    # The torch implementation (ingest's on a GPU) run on the CPU, against numpy/scipy, on sounds with
    # energy in every channel: in an empty channel both are float32 rounding noise raised to ** 0.3.
    n = int(TEXTURE.clip_seconds * sample_rate)
    t = np.arange(n) / sample_rate
    clips = np.stack([0.1 * noise(1, n), 0.05 * noise(2, n) * (1 + np.sin(2 * np.pi * 7 * t)),
                      1e-3 * noise(3, n), 0.3 * noise(4, n) * np.exp(np.sin(2 * np.pi * 0.7 * t)),
                      np.zeros(n)]).astype(np.float32)
    expected = audio.clip_features(clips, sample_rate)
    computed = audio.clip_features(clips, sample_rate, torch_device="cpu")
    # 1e-4 relative; correlations near 0 (independent channels, |rho| ~ 1e-5) get 1e-6 absolute.
    np.testing.assert_allclose(computed[0], expected[0], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(computed[1], expected[1], rtol=1e-4, atol=1e-6)
    assert computed[2].tolist() == expected[2].tolist() == [False] * 4 + [True]


def test_resolve_device():
    assert audio.resolve_device("cpu") == "cpu"
    assert audio.resolve_device("auto") in ("cpu", "cuda")
    with pytest.raises(ValueError, match="use auto, cpu or cuda"):
        audio.resolve_device("tpu")


def test_too_short_clip_is_refused():
    with pytest.raises(ValueError, match="too short"):
        audio.sound_texture(noise(0, 100), RATE)


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_real_speech_is_more_modulated_than_noise(tmp_path):
    wav = tmp_path / "speech.wav"
    subprocess.run(["espeak-ng", "-w", str(wav), "the quick brown fox jumps over the lazy dog "
                    "while the band plays on"], check=True)
    from model.data.media import read_audio
    speech, rate = read_audio(wav, 0, TEXTURE.clip_seconds)
    texture = audio.sound_texture(speech, rate)
    white = audio.sound_texture(0.1 * noise(8, speech.size), rate)
    assert np.isfinite(texture).all() and not audio.is_silent(speech)
    assert group(texture, "sigma").mean() > 2 * group(white, "sigma").mean()


runner = CliRunner()


def test_cli_json_on_audio_and_video(tmp_path):
    waveform = tone_mix(22_050, seconds=6)
    wav, video = tmp_path / "tone.wav", tmp_path / "tone.mp4"
    write_audio_clip(waveform, 22_050, wav)
    write_video(video, np.zeros((60, 32, 32, 3), np.uint8), 10, waveform, 22_050)
    result = runner.invoke(app, ["texture", str(wav), "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert [len(record[k]) for k in ("mu", "sigma", "rho", "mod", "vector")] == [32, 32, 117, 320, 502]
    assert record["loudness"] == record["vector"][-1] and record["silent"] is False
    middle = json.loads(runner.invoke(app, ["texture", str(wav), "--json", "--at", "3"]).stdout)
    assert middle["vector"] == record["vector"]
    from_video = json.loads(runner.invoke(app, ["texture", str(video), "--json"]).stdout)
    np.testing.assert_allclose(from_video["mu"], record["mu"], atol=0.02)   # AAC is lossy
    summary = runner.invoke(app, ["texture", str(video)])
    assert summary.exit_code == 0 and "loudness" in summary.stdout and "rho" in summary.stdout


def test_cli_bad_input(tmp_path):
    bad = tmp_path / "bad.mp3"
    bad.write_bytes(b"not audio" * 50)
    result = runner.invoke(app, ["texture", str(bad)])
    assert result.exit_code == 1 and "bad.mp3" in result.output and "Traceback" not in result.output
    missing = runner.invoke(app, ["texture", str(tmp_path / "missing.wav")])
    assert missing.exit_code == 1 and "missing.wav" in missing.output
    wav = tmp_path / "tone.wav"
    write_audio_clip(tone_mix(22_050), 22_050, wav)
    outside = runner.invoke(app, ["texture", str(wav), "--at", "99"])
    assert outside.exit_code == 2 and "--at" in outside.output
