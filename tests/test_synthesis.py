"""Sound texture synthesis: the SNR measure, the known answer (the texture moves to the target), plumbing."""
import numpy as np
import pytest
import torch

from model.sound import texture as audio
from model.sound import synthesis
from model.settings import TEXTURE

RATE = TEXTURE.sample_rate
SECONDS = 1.0                  # short clips: these tests are about behaviour, the benchmark measures quality


def modulated_noise(seed=0, seconds=SECONDS):
    """Low-passed noise whose level swings at 6 Hz: strong modulation, correlated bands, far from white."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    low = np.convolve(rng.standard_normal(n), np.ones(8) / 8, mode="same")
    return (0.2 * low * (1.05 + np.sin(2 * np.pi * 6 * t))).astype(np.float32)


def test_snr_known_answers():
    target = audio.sound_texture(modulated_noise(), RATE)
    same = synthesis.texture_snr(target, target)
    assert set(same) == {"moments", "correlations", "modulation", "loudness", "worst"}
    assert all(value == 300.0 for value in same.values())
    ten_percent = synthesis.texture_snr(target, target * 1.1)          # error = 0.1 t in every group: 20 dB
    assert all(value == pytest.approx(20.0) for value in ten_percent.values())
    off = target.copy()
    off[synthesis.STATISTICS_GROUPS["correlations"]] *= 2               # error = t: 0 dB, the worst group
    snr = synthesis.texture_snr(target, off)
    assert snr["correlations"] == pytest.approx(0.0) and snr["worst"] == snr["correlations"]
    assert snr["moments"] == 300.0


def test_groups_cover_the_texture_once():
    covered = np.zeros(audio.TEXTURE_DIM, int)
    for group in synthesis.STATISTICS_GROUPS.values():
        covered[group] += 1
    assert (covered == 1).all()
    assert [g.stop - g.start for g in synthesis.STATISTICS_GROUPS.values()] == [64, 117, 320, 1]


def test_synthesised_texture_gets_much_closer_than_the_starting_noise():
    target = audio.sound_texture(modulated_noise(seed=1), RATE)
    start = synthesis._shaped_noise(target, int(SECONDS * RATE), torch.Generator().manual_seed(0), TEXTURE)
    before = synthesis.texture_snr(target, audio.sound_texture(start.numpy(), RATE))
    waveform = synthesis.synthesize(target, seconds=SECONDS, steps=6)
    after = synthesis.texture_snr(target, audio.sound_texture(waveform, RATE))
    assert waveform.dtype == np.float32 and waveform.shape == (int(SECONDS * RATE),)
    assert after["loudness"] > 40                                      # matched by the final gain
    assert after["modulation"] > before["modulation"] + 10              # the 6 Hz swing is imposed
    assert after["worst"] > before["worst"] + 6
    assert after["worst"] > 12


def test_seed_progress_and_length():
    target = audio.sound_texture(modulated_noise(seed=2), RATE)
    calls = []
    first = synthesis.synthesize(target, seconds=0.5, seed=3, steps=2, progress=lambda d, n: calls.append((d, n)))
    assert calls == [(1, 2), (2, 2)]
    again = synthesis.synthesize(target, seconds=0.5, seed=3, steps=2)
    other = synthesis.synthesize(target, seconds=0.5, seed=4, steps=2)
    assert first.shape == (RATE // 2,)
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)


def test_silent_target_gives_silence():
    silent = audio.sound_texture(np.zeros(RATE, np.float32), RATE)
    assert not silent[:-1].any()
    assert not synthesis.synthesize(silent, seconds=0.5).any()


@pytest.mark.parametrize("bad, message", [
    (np.zeros(501), r"shape \(501,\)"),
    (np.zeros((2, 502)), r"shape \(2, 502\)"),
    (np.full(502, np.nan), "non-finite"),
    (-np.ones(502), "negative"),
])
def test_bad_target_is_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        synthesis.synthesize(bad)


def test_too_short_is_refused():
    target = audio.sound_texture(modulated_noise(), RATE)
    with pytest.raises(ValueError, match="0.05 s"):
        synthesis.synthesize(target, seconds=0.05)


# The CLI: every source of a target, both formats, and each bad input named.
from typer.testing import CliRunner  # noqa: E402

from backend.cli import app  # noqa: E402
from model.data.media import probe, read_audio, write_audio_clip, write_video  # noqa: E402

runner = CliRunner()
FAST = ["--seconds", "0.5", "--steps", "2"]


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    path = tmp_path_factory.mktemp("synth") / "noise.wav"
    write_audio_clip(modulated_noise(seed=5, seconds=5.0), RATE, path)
    return path


def test_cli_like_and_texture_write_playable_files(tmp_path, recording):
    wav, mp3 = tmp_path / "like.wav", tmp_path / "like.mp3"
    result = runner.invoke(app, ["synthesize", "--like", str(recording), "--at", "2.5", "--out", str(wav), *FAST])
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and "worst" in result.output
    waveform, rate = read_audio(wav)
    assert rate == RATE and waveform.size == RATE // 2 and np.abs(waveform).max() > 0.01
    texture = tmp_path / "t.npy"
    np.save(texture, audio.sound_texture(modulated_noise(seed=6), RATE))
    result = runner.invoke(app, ["synthesize", "--texture", str(texture), "--out", str(mp3), "--seed", "1", *FAST])
    assert result.exit_code == 0, result.output
    info = probe(mp3)
    assert info.has_audio and 0.4 < info.duration < 0.7


def fake_cluster_run(tmp_path, centroids):
    data_dir, run_dir = tmp_path / "data", tmp_path / "run"
    (data_dir / "labels").mkdir(parents=True)
    run_dir.mkdir()
    weights = audio.texture_scale()
    np.savez(data_dir / "labels" / "cluster.npz", kind="cluster", centroids=centroids * weights, weights=weights)
    (run_dir / "run.json").write_text(f'{{"label_kind": "cluster", "data_dir": "{data_dir}"}}')
    return run_dir


def test_cli_cluster_centroid_is_unweighted(tmp_path, monkeypatch):
    centroids = np.stack([audio.sound_texture(modulated_noise(seed=s), RATE) for s in (7, 8)])
    run_dir = fake_cluster_run(tmp_path, centroids)
    seen = []
    monkeypatch.setattr(synthesis, "synthesize",
                        lambda target, *args, **kwargs: seen.append(target) or modulated_noise(seconds=0.5))
    result = runner.invoke(app, ["synthesize", "--run", str(run_dir), "--cluster", "1", "--out",
                                 str(tmp_path / "c.wav"), *FAST])
    assert result.exit_code == 0, result.output
    np.testing.assert_allclose(seen[0], centroids[1], rtol=1e-5)
    unknown = runner.invoke(app, ["synthesize", "--run", str(run_dir), "--cluster", "2", "--out",
                                  str(tmp_path / "c.wav")])
    assert unknown.exit_code == 1 and "cluster 2" in unknown.output and "0-1" in unknown.output


def test_cli_bad_input(tmp_path, recording):
    out = ["--out", str(tmp_path / "out.wav")]

    def fails(*args, code=1):
        result = runner.invoke(app, ["synthesize", *args, *out, *FAST])
        assert result.exit_code == code, result.output
        assert "Traceback" not in result.output
        return result.output

    assert "missing.wav" in fails("--like", str(tmp_path / "missing.wav"))
    silent_video = tmp_path / "silent.mp4"
    write_video(silent_video, np.zeros((50, 32, 32, 3), np.uint8), 10)
    assert "silent.mp4" in fails("--like", str(silent_video)) and "no audio" in fails("--like", str(silent_video))
    short = tmp_path / "short.wav"
    write_audio_clip(modulated_noise(seconds=2.0), RATE, short)
    message = fails("--like", str(short))
    assert "short.wav" in message and "3.75" in message
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros(501))
    message = fails("--texture", str(wrong))
    assert "wrong.npy" in message and "(502,)" in message and "(501,)" in message
    not_npy = tmp_path / "text.npy"
    not_npy.write_text("hello")
    assert "text.npy" in fails("--texture", str(not_npy))
    assert "no run.json" in fails("--run", str(tmp_path), "--cluster", "0")
    assert "exactly one" in fails("--like", str(recording), "--texture", str(wrong), code=2)
    assert "--at" in fails("--like", str(recording), "--at", "99", code=2)
    result = runner.invoke(app, ["synthesize", "--like", str(recording), "--out", str(tmp_path / "x.ogg")])
    assert result.exit_code == 2 and ".wav or .mp3" in result.output
    assert not (tmp_path / "out.wav").exists()
