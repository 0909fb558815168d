"""Sound texture synthesis: the SNR measure, the known answer (the texture moves to the target), plumbing."""
import numpy as np
import pytest
import torch

from model import audio, synthesis
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
