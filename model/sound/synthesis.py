"""Sound texture synthesis (McDermott & Simoncelli 2011, the paper's reference 25): a waveform whose
502-d sound texture (``model.sound.texture.sound_texture``) matches a target texture.

``synthesize`` is the entry point: target texture in, mono float32 waveform at ``settings.sample_rate``
out. As M&S: start from noise (shaped to the target's mean spectrum) and repeat: split the waveform into
its 32 cochlear subbands (``audio._torch_analytic_subbands``, the texture's own filters), take their
compressed envelopes at 400 Hz (``audio._torch_decimated``, as the texture does), move the envelopes to
where their statistics are the target's (L-BFGS on the envelopes through ``audio._torch_textures``, the
texture's own statistics), put the change back on each subband's envelope keeping its fine structure,
and recombine the subbands (the filters' squares sum to 1). M&S impose one subband at a time by
conjugate gradient; here all at once. Loudness, the one statistic that is not scale-free, is matched at
the end by a gain.

``texture_snr`` is the measure (M&S's): per group of statistics (the paper's Fig. 1 groups: marginal
moments, correlations, modulation power, loudness) 10 log10(sum t^2 / sum (t - t_hat)^2), and the worst.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from model.sound import texture as audio
from model.settings import TEXTURE, TextureSettings

# The paper's Fig. 1 groups of the 502 statistics (audio.TEXTURE_GROUPS holds the finer layout).
STATISTICS_GROUPS: dict[str, slice] = {
    "moments": slice(audio.TEXTURE_GROUPS["mu"].start, audio.TEXTURE_GROUPS["sigma"].stop),   # mu, sigma (64)
    "correlations": audio.TEXTURE_GROUPS["rho"],                                             # (117)
    "modulation": audio.TEXTURE_GROUPS["mod"],                                               # (320)
    "loudness": audio.TEXTURE_GROUPS["loudness"],                                            # (1)
}
_IMPOSED = ("moments", "correlations", "modulation")   # loudness: a gain at the end
STEPS = 30                   # M&S iterations: analyse, impose the statistics on the envelopes, recombine
INNER_STEPS = 10             # L-BFGS steps on the envelopes per iteration
_MAX_SNR_DB = 300.0          # an exactly matched group (loudness after its gain) reports this, not inf


def texture_snr(target: np.ndarray, synthesized: np.ndarray, settings: TextureSettings = TEXTURE) -> dict[str, float]:
    """Per statistics group 10 log10(sum t^2 / sum (t - t_hat)^2) in dB, plus "worst" (the lowest).

    ``target`` and ``synthesized`` are (502,) textures (``settings``: the ones they were computed with).
    A group whose target is all zeros (a silent clip's) counts as matched only when the synthesised one is.
    """
    target, synthesized = _checked_texture(target, "target"), _checked_texture(synthesized, "synthesized")
    snr = {}
    for name, group in STATISTICS_GROUPS.items():
        signal = float(np.sum(target[group] ** 2))
        error = float(np.sum((target[group] - synthesized[group]) ** 2))
        if error <= signal * 10 ** (-_MAX_SNR_DB / 10):
            snr[name] = _MAX_SNR_DB
        else:
            snr[name] = 10 * math.log10(signal / error) if signal > 0 else -_MAX_SNR_DB
    snr["worst"] = min(snr.values())
    return snr


def synthesize(target_texture: np.ndarray, seconds: float = TEXTURE.clip_seconds, seed: int = 0,
               settings: TextureSettings = TEXTURE, progress: Callable[[int, int], None] | None = None,
               device: str | torch.device | None = "cpu", steps: int = STEPS,
               inner_steps: int = INNER_STEPS) -> np.ndarray:
    """Mono float32 waveform of ``seconds`` at ``settings.sample_rate`` whose sound texture matches
    ``target_texture`` (502,). Deterministic for a ``seed`` on one device.

    ``progress(done_steps, total_steps)`` is called after each of the ``steps`` M&S iterations.
    ``device``: "cpu" (default), "cuda", "auto" (``model.device.resolve_device``). A silent target
    (every statistic but loudness 0) gives silence.
    """
    from model.device import resolve_device

    target = _checked_texture(target_texture, "target texture")
    n_samples = int(round(seconds * settings.sample_rate))
    if n_samples < 0.1 * settings.sample_rate:
        raise ValueError(f"cannot synthesise {seconds} s: a sound texture needs at least 0.1 s")
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    if not target[:STATISTICS_GROUPS["loudness"].start].any():
        if progress is not None:
            progress(steps, steps)
        return np.zeros(n_samples, np.float32)
    device = resolve_device(device)
    target_t = torch.from_numpy(target).to(device)
    wave = _shaped_noise(target, n_samples, torch.Generator().manual_seed(seed), settings).to(device)
    threads = torch.get_num_threads()
    try:
        # Small tensors, hundreds of ops per step: torch's intra-op threads cost more than they give on a
        # CPU (measured on 2 busy cores: 0.3 CPU-s per step on one thread, 4.7 on two).
        if device.type == "cpu":
            torch.set_num_threads(1)
        with torch.no_grad():
            for step in range(steps):
                imposed = _imposed(wave, target_t, settings, inner_steps)
                if not torch.isfinite(imposed).all():
                    raise FloatingPointError(f"synthesis diverged at step {step + 1} (seed {seed})")
                wave = imposed
                if progress is not None:
                    progress(step + 1, steps)
    finally:
        torch.set_num_threads(threads)
    waveform = wave.cpu().numpy().astype(np.float32)
    return _matched_loudness(waveform, float(target[STATISTICS_GROUPS["loudness"]][0]), settings)


def _imposed(wave: torch.Tensor, target: torch.Tensor, settings: TextureSettings, inner_steps: int) -> torch.Tensor:
    """One M&S iteration: the waveform's subbands, their envelopes moved to where the target statistics
    are, and the subbands recombined (the filters' squares sum to 1, so unchanged subbands give ``wave`` back)."""
    analytic = audio._torch_analytic_subbands(wave[None], settings)[0]                 # (32, samples)
    envelopes = analytic.abs()
    compressed = envelopes.pow(settings.compression)
    frames = audio._torch_decimated(compressed[None], settings)[0].double()            # (32, T) at 400 Hz
    change = _upsampled(_statistics_imposed(frames, target, settings, inner_steps) - frames, wave.numel(), settings)
    new_envelopes = (compressed + change).clamp_(min=0).pow_(1 / settings.compression)
    subbands = (analytic * (new_envelopes / envelopes.clamp(min=1e-20))).real
    filters = torch.tensor(audio.cochlear_filters(wave.numel(), settings), dtype=torch.float32, device=wave.device)
    return torch.fft.irfft((torch.fft.rfft(subbands) * filters).sum(0), n=wave.numel())


def _statistics_imposed(frames: torch.Tensor, target: torch.Tensor, settings: TextureSettings,
                        inner_steps: int) -> torch.Tensor:
    """(32, T) envelopes nearest ``frames`` in L-BFGS steps that bring their texture to ``target``'s: the
    sum over the groups of error / energy (= sum of 10^(-SNR/10), so the worst group dominates)."""
    groups = [STATISTICS_GROUPS[name] for name in _IMPOSED]
    energies = [target[g].pow(2).sum().clamp(min=1e-12) for g in groups]
    envelopes = frames.clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS([envelopes], lr=1.0, max_iter=inner_steps, history_size=10,
                                  line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        texture = audio._torch_textures(envelopes.clamp(min=0)[None], settings)[0]
        loss = sum((texture[g] - target[g]).pow(2).sum() / energy for g, energy in zip(groups, energies))
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return envelopes.detach().clamp(min=0)


def _upsampled(frames: torch.Tensor, n_samples: int, settings: TextureSettings) -> torch.Tensor:
    """(32, T) at the envelope rate -> (32, n_samples) float32, linearly interpolated (frame m is at
    sample m * factor, as the decimation aligns it)."""
    factor = settings.sample_rate // settings.envelope_rate
    extended = torch.cat([frames, frames[:, -1:]], dim=1)[None]          # one more frame: T frames span T * factor
    upsampled = torch.nn.functional.interpolate(extended, size=frames.shape[-1] * factor + 1, mode="linear",
                                                align_corners=True)[0]  # sample i at frame i / factor exactly
    return upsampled[:, :n_samples].float()


def _checked_texture(texture: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(texture, dtype=np.float64)
    if array.shape != (audio.TEXTURE_DIM,):
        raise ValueError(f"{name} has shape {array.shape}; a sound texture has shape ({audio.TEXTURE_DIM},)")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} has non-finite values")
    if array[STATISTICS_GROUPS["loudness"]][0] < 0 or (array[audio.TEXTURE_GROUPS["mu"]] < 0).any():
        raise ValueError(f"{name} has a negative loudness or envelope mean: not a sound texture")
    return array


def _shaped_noise(target: np.ndarray, n_samples: int, generator: torch.Generator,
                  settings: TextureSettings) -> torch.Tensor:
    """Gaussian noise with each cochlear band's power set from the target's envelope means (mu), so the
    descent starts from the right spectrum. Envelopes are compressed by ** 0.3, so a band's amplitude goes
    as mu ** (1 / 0.3); the filters' squares sum to 1, so weighting them shapes the spectrum smoothly."""
    noise = torch.randn(n_samples, generator=generator, dtype=torch.float64)
    amplitude = target[audio.TEXTURE_GROUPS["mu"]] ** (1 / settings.compression)
    gain = np.sqrt((amplitude[:, None] ** 2 * audio.cochlear_filters(n_samples, settings) ** 2).sum(0))
    shaped = torch.fft.irfft(torch.fft.rfft(noise) * torch.from_numpy(gain), n=n_samples)
    return (shaped * (0.1 / shaped.std().clamp(min=1e-12))).float()      # ~0.1 RMS: well inside [-1, 1]


def _matched_loudness(waveform: np.ndarray, loudness: float, settings: TextureSettings) -> np.ndarray:
    """Scale ``waveform`` so its texture's loudness is ``loudness``: envelopes scale with the amplitude and
    loudness with its ** 0.3 (every other statistic is divided by loudness, so scale-free)."""
    current = float(audio.sound_texture(waveform, settings.sample_rate, settings)[STATISTICS_GROUPS["loudness"]][0])
    if current <= 0:
        return waveform
    return (waveform * (loudness / current) ** (1 / settings.compression)).astype(np.float32)
