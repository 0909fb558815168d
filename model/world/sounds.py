"""Synthesised sound sources and scene ambiences, each with its own texture.

Every generator takes (rng, n_samples, sample_rate) and returns float32 at unit RMS;
the mixer sets loudness. scipy.signal does the filtering.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
from scipy import signal

Synth = Callable[[np.random.Generator, int, int], np.ndarray]

# Where each source's energy lies (Hz): the cochlear bands a texture should light up when it is heard.
SOUND_BANDS: dict[str, tuple[float, float]] = {
    "person": (150.0, 3000.0),
    "baby": (400.0, 4000.0),
    "dog": (400.0, 2500.0),
    "car": (30.0, 300.0),
    "waterfall": (2000.0, 9000.0),
    "bird": (2500.0, 7000.0),
    "crowd": (150.0, 3000.0),
    "truck": (30.0, 300.0),
    "bus": (30.0, 300.0),
    "boat": (30.0, 300.0),
    "fountain": (2000.0, 9000.0),
}


def _unit_rms(x: np.ndarray) -> np.ndarray:
    return (x / max(float(np.sqrt(np.mean(x ** 2))), 1e-12)).astype(np.float32)


def _bandpass(x: np.ndarray, low: float, high: float, sr: int, order: int = 2) -> np.ndarray:
    sos = signal.butter(order, [low, min(high, 0.45 * sr)], btype="bandpass", fs=sr, output="sos")
    return signal.sosfilt(sos, x)


def _lowpass(x: np.ndarray, cutoff: float, sr: int, order: int = 2) -> np.ndarray:
    return signal.sosfilt(signal.butter(order, cutoff, fs=sr, output="sos"), x)


def _add(out: np.ndarray, start: int, sound: np.ndarray) -> int:
    """Add `sound` into `out` at `start`, cut at the end; return where it stops."""
    end = min(out.size, start + sound.size)
    if end > start:
        out[start:end] += sound[:end - start]
    return max(start, end)


def _slow_noise(rng: np.random.Generator, n: int, sr: int, rate_hz: float) -> np.ndarray:
    """A smooth random curve in [0, 1] that changes about `rate_hz` times a second."""
    knots = rng.random(int(n / sr * rate_hz) + 3)
    return np.interp(np.arange(n) / sr * rate_hz, np.arange(knots.size), knots)


def _voiced(rng: np.random.Generator, f0: np.ndarray, sr: int, breath: float) -> np.ndarray:
    """Glottal-like source: a sawtooth following the pitch track, plus breath noise."""
    phase = 2 * np.pi * np.cumsum(f0) / sr
    return signal.sawtooth(phase) + breath * rng.standard_normal(f0.size)


def _resonator(x: np.ndarray, freq: float, bandwidth: float, sr: int) -> np.ndarray:
    # Closed-form two-pole resonator: designing a Butterworth for every syllable costs more than filtering.
    r = np.exp(-np.pi * bandwidth / sr)
    return signal.lfilter([1 - r], [1, -2 * r * np.cos(2 * np.pi * freq / sr), r * r], x)


def _formants(x: np.ndarray, freqs: list[float], sr: int) -> np.ndarray:
    return sum(_resonator(x, f, 0.15 * f, sr) / (i + 1) for i, f in enumerate(freqs))


def _speech_into(out: np.ndarray, rng: np.random.Generator, sr: int, f0_range: tuple[float, float]) -> None:
    """Syllables (~4/s) of formant-filtered voicing with phrase pauses, added into `out`."""
    n, t = out.size, int(rng.uniform(0, 0.3) * sr)
    base_f0 = rng.uniform(*f0_range)
    while t < n:
        length = int(rng.uniform(0.12, 0.28) * sr)
        f0 = base_f0 * (1 + 0.15 * rng.standard_normal()) * np.linspace(1.05, 0.92, length)
        vowel = [rng.uniform(300, 850), rng.uniform(900, 2300), rng.uniform(2400, 3200)]
        syllable = _formants(_voiced(rng, f0, sr, 0.3), vowel, sr) * np.hanning(length)
        end = _add(out, t, syllable)
        pause = rng.uniform(0.4, 0.9) if rng.random() < 0.12 else rng.uniform(0.03, 0.12)
        t = end + int(pause * sr)


def speech(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    out = np.zeros(n)
    _speech_into(out, rng, sr, (95.0, 230.0))
    return _unit_rms(out)


def crowd(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Babble: a dozen overlapping talkers plus a murmur floor."""
    out = np.zeros(n)
    for _ in range(rng.integers(8, 15)):
        voice = np.zeros(n)
        _speech_into(voice, rng, sr, (90.0, 260.0))
        out += rng.uniform(0.4, 1.0) * voice
    out += 0.3 * np.std(out) * _bandpass(rng.standard_normal(n), 200, 2500, sr)
    return _unit_rms(out)


def baby_crying(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Wails ~1 s long at a high pitch with 5-8 Hz vibrato, separated by gasps."""
    out, t = np.zeros(n), 0
    base_f0, vibrato_hz = rng.uniform(350, 550), rng.uniform(5, 8)
    while t < n:
        length = int(rng.uniform(0.5, 1.5) * sr)
        time = np.arange(length) / sr
        contour = np.interp(time, [0, time[-1] * 0.3, time[-1]], [0.9, 1.1, 0.85])
        f0 = base_f0 * contour * (1 + 0.05 * np.sin(2 * np.pi * vibrato_hz * time))
        wail = _formants(_voiced(rng, f0, sr, 0.15), [1100, 2800, 3800], sr)
        end = _add(out, t, wail * signal.windows.tukey(length, 0.3))
        t = end + int(rng.uniform(0.2, 0.6) * sr)
    return _unit_rms(out)


def dog_barking(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Bouts of 1-4 short barks: a falling harsh tone with a sharp attack."""
    out, t = np.zeros(n), int(rng.uniform(0, 0.5) * sr)
    base_f0 = rng.uniform(350, 650)
    while t < n:
        for _ in range(rng.integers(1, 5)):
            length = int(rng.uniform(0.08, 0.2) * sr)
            f0 = base_f0 * np.linspace(1.2, 0.7, length)
            bark = _resonator(_voiced(rng, f0, sr, 1.0), rng.uniform(800, 1400), 900, sr)
            bark *= np.exp(-np.arange(length) / (0.35 * length)) * (1 - np.exp(-np.arange(length) / (0.01 * sr)))
            end = _add(out, t, bark)
            t = end + int(rng.uniform(0.15, 0.35) * sr)
        t += int(rng.uniform(0.4, 1.5) * sr)
    return _unit_rms(out)


def engine(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Engine hum: firing-rate harmonics (25-60 Hz, slowly wandering) over rumbling noise."""
    firing = rng.uniform(25, 60) * (1 + 0.15 * (_slow_noise(rng, n, sr, 0.5) - 0.5))
    phase = 2 * np.pi * np.cumsum(firing) / sr
    hum = sum(np.sin(k * phase + rng.uniform(0, 2 * np.pi)) / k ** 0.8 for k in range(1, 9))
    rumble = _lowpass(rng.standard_normal(n), 250, sr, order=4) * (1 + 0.5 * np.sin(phase))
    return _unit_rms(hum / np.std(hum) + 0.8 * rumble / np.std(rumble))


def water(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Rushing water: broadband noise tilted to high frequencies, gently fluctuating."""
    noise = signal.sosfilt(signal.butter(2, 1500, btype="highpass", fs=sr, output="sos"), rng.standard_normal(n))
    return _unit_rms(noise * (0.8 + 0.4 * _slow_noise(rng, n, sr, 6.0)))


def bird_song(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Trills of fast frequency-swept chirps between 2.5 and 7 kHz."""
    out, t = np.zeros(n), int(rng.uniform(0, 0.5) * sr)
    low, high = sorted(rng.uniform(2800, 6500, 2))
    while t < n:
        rate = rng.uniform(6, 14)
        for _ in range(rng.integers(3, 10)):
            length = int(rng.uniform(0.03, 0.1) * sr)
            freq = np.linspace(high, low, length) if rng.random() < 0.6 else np.linspace(low, high, length)
            chirp = np.sin(2 * np.pi * np.cumsum(freq) / sr) * np.hanning(length)
            _add(out, t, chirp)
            t += int(sr / rate)
        t += int(rng.uniform(0.3, 1.5) * sr)
    return _unit_rms(out)


def room_tone(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Indoor: low ventilation rumble, faint mains hum and hiss."""
    rumble = _lowpass(rng.standard_normal(n), 150, sr, order=4)
    hum = np.sin(2 * np.pi * rng.choice([50.0, 60.0]) * np.arange(n) / sr)
    hiss = rng.standard_normal(n)
    return _unit_rms(rumble / np.std(rumble) + 0.3 * hum + 0.1 * hiss)


def wind(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Outdoor: low-passed noise swelling in gusts."""
    return _unit_rms(_lowpass(rng.standard_normal(n), 500, sr) * (0.3 + _slow_noise(rng, n, sr, 0.4)))


def crickets(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Pasture: a few crickets, each a 3.5-5 kHz tone pulsed ~30 times a second in chirps, under wind."""
    time = np.arange(n) / sr
    out = np.zeros(n)
    for _ in range(rng.integers(3, 7)):
        pulses = (np.sin(2 * np.pi * rng.uniform(20, 40) * time + rng.uniform(0, 2 * np.pi)) > 0.3)
        period, duty = rng.uniform(0.4, 1.0), rng.uniform(0.3, 0.6)       # chirps of a few pulses, then rest
        chirping = ((time / period + rng.random()) % 1.0) < duty
        envelope = _lowpass((pulses & chirping).astype(float), 300, sr)
        out += rng.uniform(0.5, 1.0) * envelope * np.sin(2 * np.pi * rng.uniform(3500, 5000) * time)
    return _unit_rms(_unit_rms(out) + 0.4 * wind(rng, n, sr))


def leaves(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Park: leaves rustling in the breeze, dense crackles of mid-to-high noise swelling with the gusts."""
    crackle = _bandpass(rng.standard_normal(n), 1500, 6000, sr) * (rng.random(n) < 0.2)
    rustle = _bandpass(crackle, 1000, 7000, sr) * (0.2 + _slow_noise(rng, n, sr, 0.7))
    return _unit_rms(_unit_rms(rustle) + 0.5 * wind(rng, n, sr))


def waves(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Beach: band-limited noise swelling with each wave every 5-10 s."""
    period = rng.uniform(5, 10)
    swell = 0.15 + np.sin(np.pi * (np.arange(n) / sr / period + rng.random())) ** 4
    return _unit_rms(_bandpass(rng.standard_normal(n), 100, 3000, sr) * swell)


def traffic(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Street: distant traffic rumble under wind."""
    rumble = _lowpass(rng.standard_normal(n), 200, sr, order=4) * (0.5 + _slow_noise(rng, n, sr, 0.3))
    return _unit_rms(rumble / np.std(rumble) + 0.5 * wind(rng, n, sr))


# The synthesised voice of each sounding category; categories without one are silent
# unless a recording (tuxpaint) supplies it.
SOURCE_SYNTHS: dict[str, Synth] = {
    "person": speech,
    "baby": baby_crying,
    "dog": dog_barking,
    "car": engine,
    "truck": engine,
    "bus": engine,
    "boat": engine,
    "waterfall": water,
    "fountain": water,
    "bird": bird_song,
    "crowd": crowd,
}

AMBIENCES: dict[str, Synth] = {
    "room_tone": room_tone,
    "wind": wind,
    "crickets": crickets,
    "leaves": leaves,
    "waves": waves,
    "traffic": traffic,
}


def audible_intervals(rng: np.random.Generator, duration_s: float, on_s: tuple[float, float],
                      off_s: tuple[float, float]) -> list[tuple[float, float]]:
    """Alternating bursts of sound and pauses covering the video, starting in either state."""
    intervals, t, sounding = [], 0.0, rng.random() < 0.7
    if not sounding:
        t = rng.uniform(*off_s)
    while t < duration_s:
        length = rng.uniform(*on_s)
        intervals.append((round(t, 3), round(min(duration_s, t + length), 3)))
        t += length + rng.uniform(*off_s)
    return intervals


def gate(intervals: list[tuple[float, float]], n: int, sr: int, ramp_s: float = 0.05) -> np.ndarray:
    """0/1 envelope that is 1 inside the intervals, with short ramps so gating makes no clicks."""
    envelope = np.zeros(n, np.float32)
    ramp = int(ramp_s * sr)
    for start, end in intervals:
        a, b = int(start * sr), min(n, int(end * sr))
        envelope[a:b] = 1.0
        up = min(ramp, b - a)
        envelope[a:a + up] = np.linspace(0, 1, up)
        envelope[b - up:b] = np.minimum(envelope[b - up:b], np.linspace(1, 0, up))
    return envelope


def loop_to_length(recording: np.ndarray, n: int, rng: np.random.Generator, sr: int) -> np.ndarray:
    """Repeat a short recording with random gaps until it fills n samples (a dog barks again)."""
    out, t = np.zeros(n, np.float32), int(rng.uniform(0, 0.3) * sr)
    while t < n:
        end = _add(out, t, recording)
        t = end + int(rng.uniform(0.1, 0.8) * sr)
    return _unit_rms(out)
