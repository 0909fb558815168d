import av
import numpy as np
import pytest
from PIL import Image

from model.data.media import (MediaError, probe, read_audio, read_frames, resize_center_crop,
                              write_audio_clip, write_video)

RATE = 22_050
FPS = 10


def clicks_every_second(seconds: float, rate: int = RATE) -> np.ndarray:
    """A quiet tone with a loud 10 ms click at each whole second: timing is easy to read back."""
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.2 * np.sin(2 * np.pi * 440 * t)
    wave[(t % 1.0) < 0.01] = 0.9
    return wave.astype(np.float32)


def numbered_frames(seconds: float, height: int = 48, width: int = 64) -> np.ndarray:
    """Frame i is grey level 5 * i (coarse steps survive lossy compression; wraps after 5 s)."""
    count = int(seconds * FPS)
    return np.repeat((5 * np.arange(count) % 256).astype(np.uint8)[:, None, None, None], height * width * 3
                     ).reshape(count, height, width, 3)


def first_click(wave: np.ndarray, rate: int) -> float:
    return float(np.argmax(np.abs(wave) > 0.6)) / rate


@pytest.mark.parametrize("suffix", [".mp4", ".webm", ".mkv"])
def test_read_audio_trims_by_timestamp(tmp_path, suffix):
    path = tmp_path / f"v{suffix}"
    write_video(path, numbered_frames(6), FPS, clicks_every_second(6), RATE)
    wave, rate = read_audio(path, start=2.5, duration=2.0)
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert len(wave) == round(2.0 * rate)
    assert np.abs(wave).max() <= 1.0
    # The next click after 2.5 s is at 3.0 s, i.e. 0.5 s into the clip (AAC priming must not shift it).
    assert first_click(wave, rate) == pytest.approx(0.5, abs=0.005)
    whole, _ = read_audio(path)
    assert len(whole) >= 6 * rate - 1
    assert first_click(whole, rate) == pytest.approx(0.0, abs=0.005)


def test_read_audio_wav_int_pcm_stereo_to_mono(tmp_path):
    path = tmp_path / "s.wav"
    n = 4000
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000, layout="stereo")
        left, right = np.full(n, 16384, np.int16), np.full(n, -8192, np.int16)
        frame = av.AudioFrame.from_ndarray(np.stack([left, right], 1).reshape(1, -1), format="s16",
                                           layout="stereo")
        frame.sample_rate = 8000
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    wave, rate = read_audio(path)
    assert rate == 8000 and len(wave) == n
    np.testing.assert_allclose(wave, (0.5 - 0.25) / 2, atol=1e-6)


@pytest.mark.parametrize("suffix", [".mp3", ".ogg", ".flac", ".wav"])
def test_write_audio_clip_round_trip(tmp_path, suffix):
    path = tmp_path / f"clip{suffix}"
    write_audio_clip(clicks_every_second(3.75), RATE, path)
    wave, rate = read_audio(path)
    assert len(wave) / rate == pytest.approx(3.75, abs=0.1)
    # Encoder delay may shift the first click a little (mp3: ~50 ms), never more.
    assert first_click(wave, rate) < 0.06
    assert np.abs(wave).max() > 0.6


def test_write_audio_clip_resamples(tmp_path):
    path = tmp_path / "clip.mp3"
    write_audio_clip(clicks_every_second(2.0, 96_000), 96_000, path, out_rate=22_050)
    wave, rate = read_audio(path)
    assert rate == 22_050
    assert len(wave) / rate == pytest.approx(2.0, abs=0.1)
    assert first_click(wave[rate // 2:], rate) == pytest.approx(0.5, abs=0.06)


def test_probe_and_read_frames(tmp_path):
    path = tmp_path / "v.mp4"
    write_video(path, numbered_frames(5, 48, 64), FPS, clicks_every_second(5), RATE)
    info = probe(path)
    assert (info.width, info.height, info.fps) == (64, 48, 10.0)
    assert info.has_audio and info.has_video and info.audio_rate == RATE
    assert info.duration == pytest.approx(5.0, abs=0.1)
    times = [4.05, 0.0, 2.0, 2.55]                  # unsorted on purpose: results keep this order
    frames = read_frames(path, times)
    levels = [round(np.asarray(f, dtype=float).mean() / 5) for f in frames]
    assert levels == [40, 0, 20, 25]
    assert all(isinstance(f, Image.Image) and f.size == (64, 48) for f in frames)


def test_read_frames_far_apart_seeks(tmp_path):
    path = tmp_path / "long.mp4"
    write_video(path, numbered_frames(12), FPS)
    times = [11.0, 0.5, 6.2, 6.25]
    grey = [np.asarray(f, dtype=float).mean() for f in read_frames(path, times)]
    expected = [(5 * round(t * FPS)) % 256 for t in times]       # frames 110, 5, 62, 62
    np.testing.assert_allclose(grey, expected, atol=2)


def test_frames_of_a_file_cut_short_are_refused_not_frozen(tmp_path):
    whole = tmp_path / "whole.webm"
    write_video(whole, numbered_frames(8), FPS)
    cut = tmp_path / "cut.webm"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    assert probe(cut).duration == pytest.approx(8.0, abs=0.1)     # the header still says 8 s
    assert len(read_frames(cut, [0.5])) == 1
    with pytest.raises(MediaError, match="cut short"):
        read_frames(cut, [7.5])


def test_probe_without_audio(tmp_path):
    path = tmp_path / "mute.mp4"
    write_video(path, numbered_frames(2), FPS)
    assert not probe(path).has_audio
    with pytest.raises(MediaError, match="no audio stream"):
        read_audio(path)


def test_corrupt_and_missing_files(tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.default_rng(0).bytes(5000))
    for call in (probe, read_audio, lambda p: read_frames(p, [0.0])):
        with pytest.raises(MediaError) as err:
            call(junk)
        assert err.value.path == str(junk)
    with pytest.raises(MediaError, match="no such file"):
        read_audio(tmp_path / "absent.wav")


def test_resize_center_crop_image_and_mask_agree():
    # A 200x400 (HxW) image whose middle 200 columns are white: after the crop everything is white.
    image = np.zeros((200, 400, 3), np.uint8)
    image[:, 100:300] = 255
    out = resize_center_crop(Image.fromarray(image), 256)
    assert out.size == (256, 256)
    assert np.asarray(out)[:, 2:-2].min() == 255   # the filter may blend in a pixel beyond the box
    mask = np.zeros((200, 400), bool)
    mask[:, 100:150] = True                         # left quarter of the centre square
    mask_out = resize_center_crop(mask, 256, nearest=True)
    assert mask_out.dtype == bool and mask_out.shape == (256, 256)
    assert mask_out[:, :64].all() and not mask_out[:, 64:].any()
    labels = resize_center_crop(np.arange(12, dtype=np.uint8).reshape(3, 4), 3, nearest=True)
    assert labels.dtype == np.uint8 and set(np.unique(labels)) <= set(range(12))
    assert resize_center_crop(image, 256).shape == (256, 256, 3)
