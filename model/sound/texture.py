"""Sound textures: McDermott & Simoncelli (2011) statistics of a clip's cochleagram (paper A3).

``sound_textures`` is the entry point: waveforms in, (n, 502) texture vectors out, laid out as
``[mu(32), sigma(32), rho(117), mod(320), loudness(1)]`` (see ``TEXTURE_GROUPS``).
Where the paper is silent we follow the toolbox: whole-clip frequency-domain filtering,
compression before resampling, ``resample_poly``'s Kaiser filter, population variances.
The same steps run in numpy/scipy on the CPU (the default) or in torch on a GPU (``clip_features``'s
``torch_device``, ``ambient ingest --device``); the two agree to 1e-4.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from math import gcd

import numpy as np
import scipy.fft
import scipy.signal
from threadpoolctl import threadpool_limits

from model.settings import TEXTURE, TextureSettings

N_CHANNELS = TEXTURE.n_cochlear + 2
TEXTURE_GROUPS: dict[str, slice] = {
    "mu": slice(0, 32),
    "sigma": slice(32, 64),
    "rho": slice(64, 181),
    "mod": slice(181, 501),
    "loudness": slice(501, 502),
}
TEXTURE_DIM = 502
_CORES = len(os.sched_getaffinity(0))
_TINY = 1e-12   # denominators at or below this mean "no energy": the statistic is reported as 0


def to_mono_float(waveform: np.ndarray) -> np.ndarray:
    """float32 mono in [-1, 1]: integer PCM is scaled by its full range, channels are averaged.

    A 2-D array is (channels, samples) or (samples, channels): the shorter axis is the channels.
    """
    waveform = np.asarray(waveform)
    if np.issubdtype(waveform.dtype, np.unsignedinteger):
        half_range = float(np.iinfo(waveform.dtype).max) / 2 + 0.5
        waveform = (waveform.astype(np.float64) - half_range) / half_range
    elif np.issubdtype(waveform.dtype, np.signedinteger):
        waveform = waveform.astype(np.float64) / -float(np.iinfo(waveform.dtype).min)
    if waveform.ndim == 2:
        waveform = waveform.mean(axis=int(np.argmin(waveform.shape)))
    if waveform.ndim != 1:
        raise ValueError(f"expected a 1-D or 2-D waveform, got shape {waveform.shape}")
    return waveform.astype(np.float32, copy=False)


def is_silent(waveform: np.ndarray, settings: TextureSettings = TEXTURE) -> bool:
    """True when the clip's RMS is below ``settings.silence_rms`` (its texture is then all zeros but l)."""
    mono = to_mono_float(waveform).astype(np.float64)
    return bool(mono.size == 0 or np.sqrt(np.mean(mono ** 2)) < settings.silence_rms)


def _freq_to_erb(hz):
    return 9.265 * np.log1p(hz / (24.7 * 9.265))     # Glasberg & Moore, as in the toolbox


def _erb_to_freq(erb):
    return 24.7 * 9.265 * np.expm1(erb / 9.265)


def cochlear_center_frequencies(settings: TextureSettings = TEXTURE) -> np.ndarray:
    """(32,) Hz: peak of each cochlear filter; the low-/high-pass ends are labelled 20 Hz / 10 kHz."""
    erbs = np.linspace(_freq_to_erb(settings.low_hz), _freq_to_erb(settings.high_hz),
                       settings.n_cochlear + 2)
    return _erb_to_freq(erbs)


@lru_cache(maxsize=16)
def cochlear_filters(n_samples: int, settings: TextureSettings = TEXTURE) -> np.ndarray:
    """(32, n_samples // 2 + 1) real frequency responses on the rfft grid (toolbox make_erb_cos_filters).

    30 half-cosines on the ERB scale, each spanning its two neighbours' peaks (50% overlap), plus a
    low-pass and a high-pass end; the squared responses sum to 1 at every frequency.
    """
    freqs = scipy.fft.rfftfreq(n_samples, 1.0 / settings.sample_rate)
    cutoffs = cochlear_center_frequencies(settings)
    erb = _freq_to_erb(freqs)
    filters = np.zeros((settings.n_cochlear + 2, freqs.size))
    for k in range(settings.n_cochlear):
        low, high = cutoffs[k], cutoffs[k + 2]
        band = (freqs > low) & (freqs < high)
        centre, width = (_freq_to_erb(low) + _freq_to_erb(high)) / 2, _freq_to_erb(high) - _freq_to_erb(low)
        filters[k + 1, band] = np.cos((erb[band] - centre) / width * np.pi)
    below = freqs < cutoffs[1]
    filters[0, below] = np.sqrt(1 - filters[1, below] ** 2)
    above = freqs > cutoffs[-2]
    filters[-1, above] = np.sqrt(1 - filters[-2, above] ** 2)
    filters.setflags(write=False)
    return filters


@lru_cache(maxsize=16)
def modulation_filters(n_frames: int, settings: TextureSettings = TEXTURE) -> np.ndarray:
    """(10, n_frames // 2 + 1) constant-Q half-cosine filters on the envelope's rfft grid.

    As the toolbox's make_constQ_cos_filters: centres log-spaced 0.5-200 Hz, each filter symmetric on
    a linear axis from cf - cf/Q to cf + cf/Q, the bank scaled so its summed power is 1 mid-range.
    """
    freqs = scipy.fft.rfftfreq(n_frames, 1.0 / settings.envelope_rate)
    centres = np.geomspace(settings.mod_low_hz, settings.mod_high_hz, settings.n_modulation)
    filters = np.zeros((settings.n_modulation, freqs.size))
    for k, centre in enumerate(centres):
        low, high = centre - centre / settings.mod_q, centre + centre / settings.mod_q
        band = (freqs > low) & (freqs < high)
        filters[k, band] = np.cos((freqs[band] - centre) / (high - low) * np.pi)
    mid_range = (freqs >= centres[3]) & (freqs <= centres[-4])
    summed_power = (filters[:, mid_range] ** 2).sum(axis=0).mean() if mid_range.any() else 1.0
    filters /= np.sqrt(summed_power)
    filters.setflags(write=False)
    return filters


def _resample(waveforms: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    if rate_in == rate_out:
        return waveforms
    common = gcd(int(rate_in), int(rate_out))
    return scipy.signal.resample_poly(waveforms, rate_out // common, rate_in // common, axis=-1)


def _half_length(factor: int) -> int:
    return 10 * factor                          # resample_poly's own filter design


@lru_cache(maxsize=16)
def _polyphase_taps(factor: int) -> np.ndarray:
    """resample_poly(x, 1, factor)'s Kaiser low-pass, reversed and cut into rows of ``factor`` taps."""
    half_len = _half_length(factor)
    taps = scipy.signal.firwin(2 * half_len + 1, 1.0 / factor, window=("kaiser", 5.0))
    blocks = -(-taps.size // factor)
    padded = np.zeros(blocks * factor)
    padded[:taps.size] = taps[::-1]
    return padded.reshape(blocks, factor).astype(np.float32)


def _decimation_layout(n_samples: int, factor: int) -> tuple[int, slice]:
    """Length of a buffer for a signal to be decimated, and where the signal goes in it: between
    zeros as resample_poly pads."""
    n_out = -(-n_samples // factor)
    rows = n_out + _polyphase_taps(factor).shape[0] - 1
    return rows * factor, slice(_half_length(factor), _half_length(factor) + n_samples)


def _decimate(buffer: np.ndarray, n_samples: int, factor: int) -> np.ndarray:
    """``resample_poly(signal, 1, factor)`` for signals laid out by ``_decimation_layout``.

    Why not resample_poly itself: its polyphase loop is ~10x slower than this one matrix product.
    Output frame m is sum_j block[m + j] . taps_row[j] over the buffer cut into factor-sample blocks.
    """
    taps = _polyphase_taps(factor)
    n_out = -(-n_samples // factor)
    partial = (taps @ buffer.reshape(-1, factor).T).reshape(taps.shape[0], *buffer.shape[:-1], -1)
    frames = partial[0, ..., :n_out].copy()
    for j in range(1, taps.shape[0]):
        frames += partial[j, ..., j:j + n_out]
    return frames


@lru_cache(maxsize=16)
def _analytic_bands(n_samples: int, settings: TextureSettings) -> list[tuple[int, int, np.ndarray]]:
    """Per cochlear channel: (first bin, end bin, response) of its analytic-signal filter.

    The analytic signal doubles positive frequencies (keeping DC and Nyquist) and drops negatives,
    so its spectrum is the one-sided filtered spectrum; only each filter's support is stored.
    """
    one_sided = np.full(n_samples // 2 + 1, 2.0)
    one_sided[0] = 1.0
    if n_samples % 2 == 0:
        one_sided[-1] = 1.0
    bands = []
    for response in cochlear_filters(n_samples, settings) * one_sided:
        support = np.flatnonzero(response)
        first, end = support[0], support[-1] + 1
        bands.append((first, end, response[first:end].astype(np.float32)))
    return bands


def _compressed_envelopes(waveform: np.ndarray, sample_rate: int, settings: TextureSettings) -> np.ndarray:
    """One clip -> (32, T) compressed envelopes at the envelope rate."""
    audio = _resample(to_mono_float(waveform), sample_rate, settings.sample_rate)
    n_samples = audio.size
    spectrum = scipy.fft.rfft(audio.astype(np.float32, copy=False), workers=1)
    analytic = np.zeros((N_CHANNELS, n_samples), np.complex64)
    for channel, (first, end, response) in enumerate(_analytic_bands(n_samples, settings)):
        analytic[channel, first:end] = spectrum[first:end] * response
    analytic = scipy.fft.ifft(analytic, axis=-1, workers=1, overwrite_x=True)
    factor = settings.sample_rate // settings.envelope_rate
    length, signal = _decimation_layout(n_samples, factor)
    buffer = np.empty((N_CHANNELS, length), np.float32)
    buffer[..., :signal.start] = 0                    # resample_poly's zero padding; the signal goes between
    buffer[..., signal.stop:] = 0
    envelopes = buffer[..., signal]
    np.abs(analytic, out=envelopes)
    del analytic
    # envelope ** 0.3 as exp2(0.3 log2 envelope): numpy's SIMD log2/exp2 take half np.power's time;
    # a zero envelope goes to log2 = -inf and back to exactly 0.
    with np.errstate(divide="ignore"):
        np.log2(envelopes, out=envelopes)
    envelopes *= settings.compression
    np.exp2(envelopes, out=envelopes)
    envelopes = _decimate(buffer, n_samples, factor)
    return np.maximum(envelopes, 0, out=envelopes)   # the resampler's ringing can dip below 0


def cochleagrams(waveforms: np.ndarray, sample_rate: int, settings: TextureSettings = TEXTURE) -> np.ndarray:
    """(n, samples) or (n, channels, samples) -> (n, 32, T) float32 compressed envelopes at 400 Hz.

    Each clip is filtered whole in the frequency domain; the Hilbert envelope comes straight from
    the one-sided filtered spectrum (the analytic signal), then ``** 0.3``, then resampling.
    """
    waveforms = np.asarray(waveforms)
    if waveforms.ndim not in (2, 3):
        raise ValueError(f"expected (clips, samples) waveforms, got shape {waveforms.shape}")
    if settings.sample_rate % settings.envelope_rate:
        raise ValueError("settings.sample_rate must be a multiple of settings.envelope_rate")
    if waveforms.shape[-1] < 0.1 * sample_rate:
        raise ValueError(f"clips of {waveforms.shape[-1]} samples at {sample_rate} Hz are too short "
                         "for a sound texture (need at least 0.1 s)")
    # One clip per task: numpy and scipy.fft release the GIL, so threads put every core on every
    # stage, and one clip's ~20 MB arrays are small enough for malloc to recycle (no page faults).
    # BLAS runs single-threaded inside them: its own threads would spin against these for the cores.
    with threadpool_limits(limits=1, user_api="blas"), \
            ThreadPoolExecutor(max_workers=min(len(waveforms), _CORES)) as pool:
        return np.stack(list(pool.map(lambda clip: _compressed_envelopes(clip, sample_rate, settings),
                                      waveforms)))


def cochleagram(waveform: np.ndarray, sample_rate: int, settings: TextureSettings = TEXTURE) -> np.ndarray:
    """(32, T) compressed envelopes at 400 Hz of one clip (mono, or stereo which is averaged)."""
    return cochleagrams(to_mono_float(waveform)[None], sample_rate, settings)[0]


def _divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, 0 where the denominator carries no energy (silence never gives NaN)."""
    denominator = np.broadcast_to(denominator, np.broadcast_shapes(numerator.shape, denominator.shape))
    safe = denominator > _TINY
    return np.divide(numerator, denominator, out=np.zeros(denominator.shape), where=safe)


def textures_from_cochleagrams(envelopes: np.ndarray, settings: TextureSettings = TEXTURE) -> np.ndarray:
    """(n, 32, T) compressed envelopes -> (n, 502) texture vectors [mu, sigma~, rho, b~, l]."""
    # Small matrix products: BLAS's own threads cost more than they give (on 2 busy cores, 100x more).
    with threadpool_limits(limits=1, user_api="blas"):
        return _textures(envelopes, settings)


def _textures(envelopes: np.ndarray, settings: TextureSettings) -> np.ndarray:
    envelopes = np.asarray(envelopes, dtype=np.float64)
    n_clips, _, n_frames = envelopes.shape
    loudness = np.median(np.linalg.norm(envelopes, axis=1), axis=-1)         # median over time of ||c(t)||
    normalised = _divide(envelopes, loudness[:, None, None])
    mean = normalised.mean(axis=-1)
    centred = normalised - mean[..., None]
    variance = (centred ** 2).mean(axis=-1)                                  # divides by N, as the toolbox
    sigma = _divide(np.sqrt(variance), mean)

    covariance = centred @ centred.transpose(0, 2, 1) / n_frames
    correlation = _divide(covariance, np.sqrt(variance[:, :, None] * variance[:, None, :]))
    rho = np.concatenate([np.diagonal(correlation, offset, axis1=1, axis2=2)
                          for offset in settings.correlation_offsets], axis=1)

    # b_ij = mean square of channel i filtered by m_j, by Parseval on the one-sided spectrum.
    spectrum_power = np.abs(scipy.fft.rfft(normalised, axis=-1)) ** 2
    spectrum_power[..., 1:(n_frames + 1) // 2] *= 2
    band_power = spectrum_power @ (modulation_filters(n_frames, settings) ** 2).T / n_frames ** 2
    modulation = np.sqrt(_divide(band_power, variance[..., None]))

    textures = np.concatenate([mean, sigma, rho, modulation.reshape(n_clips, -1), loudness[:, None]], axis=1)
    assert textures.shape[1] == TEXTURE_DIM
    return textures


def sound_textures(waveforms: np.ndarray, sample_rate: int, settings: TextureSettings = TEXTURE) -> np.ndarray:
    """(n, samples) clips of one length (or (n, channels, samples)) -> (n, 502) float64 textures.

    A silent clip (``is_silent``) gets zeros for every statistic but its loudness.
    """
    return clip_features(waveforms, sample_rate, settings)[0]


def sound_texture(waveform: np.ndarray, sample_rate: int, settings: TextureSettings = TEXTURE) -> np.ndarray:
    """(502,) texture of one clip (mono, or stereo which is averaged; float or integer PCM)."""
    return sound_textures(to_mono_float(waveform)[None], sample_rate, settings)[0]


def texture_weights() -> np.ndarray:
    """(502,) weights of the squared differences that make up the paper's texture distance.

    Groups (paper 3.1): marginal moments = mu + sigma (64 dims, 1/64 each), correlations (1/117),
    modulation power (1/320), loudness (1). Each kind of statistic is scaled inversely with its
    number of dimensions, so each contributes its *mean* squared difference and counts once: the
    320 modulation powers do not outvote the single loudness, nor it them. Multiplying textures by
    ``texture_scale()`` maps them into the space where plain Euclidean distance is this distance.
    """
    weights = np.empty(TEXTURE_DIM)
    for group in (slice(TEXTURE_GROUPS["mu"].start, TEXTURE_GROUPS["sigma"].stop),
                  TEXTURE_GROUPS["rho"], TEXTURE_GROUPS["mod"], TEXTURE_GROUPS["loudness"]):
        weights[group] = 1.0 / (group.stop - group.start)
    return weights


def texture_scale() -> np.ndarray:
    """(502,) float32 sqrt(texture_weights()): multiply textures by it and Euclidean distances (k-means,
    PCA) weight each group's squared differences by 1 / its dimensions. (Scaling the values themselves
    by 1/n would weight squared differences by 1/n^2 and leave loudness, one dimension, deciding every
    cluster.)"""
    return np.sqrt(texture_weights()).astype(np.float32)


def spectrum_frames(n_frames: int, at_seconds: float, settings: TextureSettings = TEXTURE) -> slice:
    """Cochleagram frames within ``settings.spectrum_seconds`` centred on ``at_seconds``."""
    half = settings.spectrum_seconds / 2
    first = max(int(np.ceil((at_seconds - half) * settings.envelope_rate - 1e-9)), 0)
    last = min(int(np.floor((at_seconds + half) * settings.envelope_rate + 1e-9)), n_frames - 1)
    if first > last:
        raise ValueError(f"{at_seconds} s is outside the clip ({n_frames / settings.envelope_rate:.3f} s)")
    return slice(first, last + 1)


def batch_spectrum_features(waveforms: np.ndarray, sample_rate: int, at_seconds: float,
                            settings: TextureSettings = TEXTURE) -> np.ndarray:
    """(n, samples) -> (n, 32): the paper's Spectrum features at ``at_seconds`` into every clip.

    The mean of each channel's compressed envelope (not divided by loudness, so level is kept)
    over the 33.3 ms centred on ``at_seconds``; frame t of the cochleagram is at t / 400 s.
    """
    envelopes = cochleagrams(waveforms, sample_rate, settings)
    return envelopes[..., spectrum_frames(envelopes.shape[-1], at_seconds, settings)].mean(axis=-1)


def spectrum_features(waveform: np.ndarray, sample_rate: int, at_seconds: float,
                      settings: TextureSettings = TEXTURE) -> np.ndarray:
    """(32,) Spectrum features of one clip at ``at_seconds`` (see ``batch_spectrum_features``)."""
    return batch_spectrum_features(to_mono_float(waveform)[None], sample_rate, at_seconds, settings)[0]


def clip_features(waveforms: np.ndarray, sample_rate: int, settings: TextureSettings = TEXTURE,
                  torch_device: str | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(textures (n, 502), Spectrum features at each clip's middle (n, 32), silent (n,) bool).

    What ingest stores per frame; one cochleagram per clip serves both features. A silent clip
    (``is_silent``) gets zeros for every texture statistic but its loudness. ``torch_device`` (e.g.
    "cuda") computes the same with the torch implementation on that device (it agrees with numpy and
    scipy, the default, to 1e-4); ingest uses it on a GPU (``resolve_device``).
    """
    waveforms = np.asarray(waveforms)
    if torch_device is None:
        envelopes = cochleagrams(waveforms, sample_rate, settings)
        textures = textures_from_cochleagrams(envelopes, settings)
    else:
        envelopes, textures = _torch_features(waveforms, sample_rate, settings, torch_device)
    silent = np.array([is_silent(w, settings) for w in waveforms], dtype=bool)
    textures[silent, :TEXTURE_GROUPS["loudness"].start] = 0.0
    middle = waveforms.shape[-1] / sample_rate / 2
    spectra = envelopes[..., spectrum_frames(envelopes.shape[-1], middle, settings)].mean(axis=-1)
    return textures, spectra, silent


def resolve_device(name: str) -> str:
    """``ambient ingest --device``: "auto" is "cuda" where torch sees a GPU, else "cpu"."""
    if name not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device {name!r}: use auto, cpu or cuda")
    if name == "cpu":
        return name
    import torch

    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device cuda: torch sees no GPU (use --device cpu or auto)")
    return "cuda" if torch.cuda.is_available() else "cpu"


# The torch implementation: the same steps as the numpy one, as whole-batch tensor operations
# (float32 signal processing, float64 statistics), for a GPU. Imported lazily: ingest workers on
# the CPU path never load torch.

@lru_cache(maxsize=8)
def _resampling_gather(n_in: int, rate_in: int, rate_out: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices, weights), each (n_out, taps): resample_poly(x, up, down)[m] = sum_j weights[m, j] * x[indices[m, j]].

    The same Kaiser low-pass, padding and alignment as scipy.signal.resample_poly, as a gather.
    """
    common = gcd(int(rate_in), int(rate_out))
    up, down = rate_out // common, rate_in // common
    half_len = 10 * max(up, down)
    h = scipy.signal.firwin(2 * half_len + 1, 1.0 / max(up, down), window=("kaiser", 5.0)) * up
    n_pre_pad = down - half_len % down
    h = np.concatenate([np.zeros(n_pre_pad), h])
    n_pre_remove = (half_len + n_pre_pad) // down
    n_out = -(-n_in * up // down)
    position = (np.arange(n_out) + n_pre_remove) * down                 # in the upsampled signal
    indices = position[:, None] // up - np.arange(-(-h.size // up) + 1)[None, :]
    offsets = position[:, None] - indices * up
    valid = (indices >= 0) & (indices < n_in) & (offsets >= 0) & (offsets < h.size)
    weights = np.where(valid, h[np.clip(offsets, 0, h.size - 1)], 0.0)
    return np.clip(indices, 0, n_in - 1), weights.astype(np.float32)


def _torch_features(waveforms: np.ndarray, sample_rate: int, settings: TextureSettings,
                    device: str) -> tuple[np.ndarray, np.ndarray]:
    """(cochleagrams (n, 32, T) float32, textures (n, 502) float64) computed with torch on `device`."""
    import torch

    clips = np.stack([to_mono_float(w) for w in waveforms])
    chunk = 256 if device.startswith("cuda") else 16          # (chunk, 32, samples) complex64 at once
    envelopes, textures = [], []
    with torch.no_grad():
        for first in range(0, len(clips), chunk):
            batch = torch.from_numpy(clips[first:first + chunk]).to(device)
            cochleagram = _torch_cochleagrams(batch, sample_rate, settings)
            envelopes.append(cochleagram.cpu().numpy())
            textures.append(_torch_textures(cochleagram.double(), settings).cpu().numpy())
    return np.concatenate(envelopes), np.concatenate(textures)


def _torch_cochleagrams(clips, sample_rate: int, settings: TextureSettings):
    """(n, samples) float32 tensor -> (n, 32, T) compressed envelopes, as ``cochleagrams``."""
    import torch

    device = clips.device
    if sample_rate != settings.sample_rate:
        indices, weights = _resampling_gather(clips.shape[-1], sample_rate, settings.sample_rate)
        clips = (clips[:, torch.from_numpy(indices).to(device)] * torch.from_numpy(weights).to(device)).sum(-1)
    analytic = _torch_analytic_subbands(clips, settings)
    envelopes = analytic.abs().pow_(settings.compression)
    del analytic
    return _torch_decimated(envelopes, settings)


def _torch_analytic_subbands(clips, settings: TextureSettings):
    """(n, samples) float32 tensor at ``settings.sample_rate`` -> (n, 32, samples) complex64 analytic
    signal of each cochlear subband (its magnitude is the envelope, its real part the subband)."""
    import torch

    n_clips, n_samples = clips.shape
    spectrum = torch.fft.rfft(clips)
    analytic = torch.zeros((n_clips, N_CHANNELS, n_samples), dtype=torch.complex64, device=clips.device)
    for channel, (first, end, response) in enumerate(_analytic_bands(n_samples, settings)):
        analytic[:, channel, first:end] = spectrum[:, first:end] * torch.from_numpy(response).to(clips.device)
    return torch.fft.ifft(analytic, dim=-1)


def _torch_decimated(envelopes, settings: TextureSettings):
    """(n, 32, samples) float32 compressed envelopes -> (n, 32, T) at the envelope rate, as ``_decimate``."""
    import torch

    device = envelopes.device
    n_clips, _, n_samples = envelopes.shape
    factor = settings.sample_rate // settings.envelope_rate
    length, signal = _decimation_layout(n_samples, factor)
    buffer = torch.zeros((n_clips, N_CHANNELS, length), dtype=torch.float32, device=device)
    buffer[..., signal] = envelopes
    del envelopes
    taps = torch.from_numpy(_polyphase_taps(factor)).to(device)
    n_out = -(-n_samples // factor)
    partial = (taps @ buffer.reshape(-1, factor).T).reshape(taps.shape[0], n_clips, N_CHANNELS, -1)
    frames = partial[0, ..., :n_out].clone()
    for j in range(1, taps.shape[0]):
        frames += partial[j, ..., j:j + n_out]
    return frames.clamp_(min=0)


def _torch_divide(numerator, denominator):
    """numerator / denominator (same shapes), 0 where the denominator carries no energy (as ``_divide``)."""
    import torch

    safe = denominator > _TINY
    return torch.where(safe, numerator / torch.where(safe, denominator, torch.ones_like(denominator)),
                       torch.zeros_like(numerator))


def _torch_sqrt(values):
    """sqrt, with slope 0 instead of inf at 0 (synthesis differentiates textures; a 1 s clip's lowest
    modulation band, for one, holds no frequency and has power exactly 0)."""
    import torch

    positive = values > 0
    return torch.where(positive, torch.where(positive, values, torch.ones_like(values)).sqrt(),
                       torch.zeros_like(values))


def _torch_textures(envelopes, settings: TextureSettings):
    """(n, 32, T) float64 tensor -> (n, 502) textures, as ``textures_from_cochleagrams``."""
    import torch

    n_clips, _, n_frames = envelopes.shape
    loudness = torch.quantile(torch.linalg.vector_norm(envelopes, dim=1), 0.5, dim=-1)   # numpy's median
    normalised = _torch_divide(envelopes, loudness[:, None, None].expand_as(envelopes))
    mean = normalised.mean(dim=-1)
    centred = normalised - mean[..., None]
    variance = (centred ** 2).mean(dim=-1)
    sigma = _torch_divide(_torch_sqrt(variance), mean)
    covariance = centred @ centred.transpose(1, 2) / n_frames
    correlation = _torch_divide(covariance, _torch_sqrt(variance[:, :, None] * variance[:, None, :]))
    rho = torch.cat([torch.diagonal(correlation, offset, dim1=1, dim2=2)
                     for offset in settings.correlation_offsets], dim=1)
    spectrum_power = torch.fft.rfft(normalised, dim=-1).abs() ** 2
    spectrum_power[..., 1:(n_frames + 1) // 2] *= 2
    filters = torch.from_numpy(modulation_filters(n_frames, settings) ** 2).to(envelopes.device)
    band_power = spectrum_power @ filters.T / n_frames ** 2
    modulation = _torch_sqrt(_torch_divide(band_power, variance[..., None].expand_as(band_power)))
    return torch.cat([mean, sigma, rho, modulation.reshape(n_clips, -1), loudness[:, None]], dim=1)
