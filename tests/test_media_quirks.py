"""A corpus of real-world quirks, made with PyAV: each video is ingested with the right frames and clips.

Codecs (AAC, Opus, Vorbis, MP3, FLAC, PCM), channel layouts (mono, stereo, 5.1), sample rates (8 to
96 kHz), audio shorter or longer than the video, late stream starts, variable frame rate, display
rotation, non-square pixels, a second audio track, and mp4, mov, mkv, webm, avi, ogv and fragmented
mp4 containers. Every video flashes and clicks at the frame times ingest should pick (tests/test_sync.py).
The ogv files carry VP8: PyAV's bundled FFmpeg has no Theora encoder.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction

import pytest

from model.data.ingest import ingest
from model.data.media import read_frames
from test_sync import SETTINGS, Quirk, assert_in_sync, write_case, write_flash_click

VP9, VP8 = "libvpx-vp9", "libvpx"
QUIRKS = {
    # codecs x layouts x sample rates, with audio shorter or longer than the video by 0.05-1 s
    "aac_44k_stereo_audio_short": Quirk(rate=44_100, layout="stereo", audio_seconds=4.95),
    "aac_8k_mono_audio_long": Quirk(rate=8_000, audio_seconds=6.0),
    "aac_96k_5.1": Quirk(suffix=".mkv", rate=96_000, layout="5.1"),
    "opus_48k_stereo_audio_short": Quirk(suffix=".webm", video_codec=VP9, audio_codec="libopus", rate=48_000,
                                         layout="stereo", audio_seconds=4.0),
    "vorbis_44k_webm": Quirk(suffix=".webm", video_codec=VP8, audio_codec="vorbis", rate=44_100, layout="stereo"),
    "vorbis_ogv": Quirk(suffix=".ogv", video_codec=VP8, audio_codec="vorbis", rate=44_100, layout="stereo",
                        audio_seconds=5.5),
    "flac_32k_ogv": Quirk(suffix=".ogv", video_codec=VP8, audio_codec="flac", rate=32_000),
    "opus_16k_ogv_5.1": Quirk(suffix=".ogv", video_codec=VP8, audio_codec="libopus", rate=48_000, layout="5.1"),
    "mp3_32k_stereo_mkv": Quirk(suffix=".mkv", audio_codec="mp3", rate=32_000, layout="stereo"),
    "mp3_22k_mp4_audio_long": Quirk(audio_codec="mp3", audio_seconds=5.3),
    "pcm_16k_mov_late_audio": Quirk(suffix=".mov", audio_codec="pcm_s16le", rate=16_000, audio_start=0.4),
    "pcm_48k_stereo_avi": Quirk(suffix=".avi", video_codec="mpeg4", audio_codec="pcm_s16le", rate=48_000,
                                layout="stereo", bframes=False),
    "flac_96k_mkv_audio_short": Quirk(suffix=".mkv", audio_codec="flac", rate=96_000, layout="stereo",
                                      audio_seconds=4.5),
    "pcm_22k_mkv_5.1": Quirk(suffix=".mkv", audio_codec="pcm_s16le", layout="5.1"),
    # timelines
    "late_start_mkv": Quirk(suffix=".mkv", video_start=20.0, audio_start=20.1),
    "late_start_webm_audio_first": Quirk(suffix=".webm", video_codec=VP9, audio_codec="libopus", rate=48_000,
                                         video_start=5.6, audio_start=5.0),
    # Without B-frames: MP4 derives frame durations from decode-order gaps, so with B-frames the last
    # frame's end (and the span's) would depend on the encoder's choices, not on the generator's.
    "vfr_mp4": Quirk(frame_ticks=(20, 40, 10, 30), bframes=False),
    "vfr_mkv": Quirk(suffix=".mkv", frame_ticks=(15, 45, 20), bframes=False),
    # As browsers' MediaRecorder writes it. FFmpeg's fragmented-MP4 muxer writes no edit lists, so
    # B-frame delay and AAC priming would put the file's own streams 67 ms and 46 ms late.
    "fragmented_mp4": Quirk(audio_codec="libopus", rate=48_000, bframes=False,
                            muxer_options={"movflags": "frag_keyframe+empty_moov", "use_editlist": "1"}),
    # pictures
    "phone_portrait_mp4": Quirk(rotation=-90),
    "phone_portrait_mov": Quirk(suffix=".mov", rotation=90),
    "upside_down_mkv": Quirk(suffix=".mkv", rotation=180),
    "anamorphic_mp4": Quirk(sample_aspect=Fraction(4, 3)),
    "anamorphic_mkv": Quirk(suffix=".mkv", sample_aspect=Fraction(3, 4)),
    # tracks
    "two_audio_tracks_mkv": Quirk(suffix=".mkv", decoy_track=True),
    "two_audio_tracks_mp4": Quirk(decoy_track=True),
}
FILES = {f"{name}{quirk.suffix}": (name, quirk) for name, quirk in QUIRKS.items()}
# Streams that do not share a clip's length: skipped, saying so.
UNUSABLE = {
    "no_overlap.mkv": (Quirk(suffix=".mkv", video_seconds=4.0, audio_start=5.0, audio_seconds=4.0),
                       "audio and video do not overlap (audio 5.00-9.0"),
    "short_overlap.mp4": (Quirk(audio_start=3.0, audio_seconds=5.0),
                          "only 2.05 s where both audio and video decode (audio 2.95-8.00 s, video 0.00-5.00 s)"),
}


@pytest.fixture(scope="session")
def quirk_corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("quirks")
    (folder / "videos").mkdir()
    # Two videos at a time: PyAV encodes and decodes without holding the GIL.
    with ThreadPoolExecutor(2) as pool:
        times = dict(zip(FILES, pool.map(lambda case: write_case(folder / "videos", *case), FILES.values())))
    for file, (quirk, _) in UNUSABLE.items():
        write_flash_click(folder / "videos" / file, quirk, [])
    report = ingest(folder / "videos", folder / "data", workers=2, progress=False, settings=SETTINGS)
    return folder, times, report


def test_corpus_covers_the_issue():
    quirks = list(QUIRKS.values())
    assert {q.suffix for q in quirks} >= {".mp4", ".mov", ".mkv", ".webm", ".avi", ".ogv"}
    assert {q.audio_codec for q in quirks} >= {"aac", "libopus", "vorbis", "mp3", "flac", "pcm_s16le"}
    assert {q.layout for q in quirks} == {"mono", "stereo", "5.1"}
    assert {q.rate for q in quirks} >= {8_000, 16_000, 22_050, 32_000, 44_100, 48_000, 96_000}
    differences = {round(q.audio_seconds - q.video_seconds, 2) for q in quirks}
    assert min(d for d in differences if d > 0) <= 0.3 and max(differences) >= 1.0
    assert min(abs(d) for d in differences if d < 0) <= 0.05 and min(differences) <= -1.0


def test_no_valid_video_is_skipped(quirk_corpus):
    _, times, report = quirk_corpus
    assert sorted(report.ingested) == sorted(times)
    assert report.warnings == []
    reasons = {skip["path"]: skip["reason"] for skip in report.skipped}
    assert sorted(reasons) == sorted(UNUSABLE)
    for file, (_, reason) in UNUSABLE.items():
        assert reasons[file].startswith(reason) and "cut short" not in reasons[file], reasons[file]


@pytest.mark.parametrize("file", sorted(FILES))
def test_quirk_is_ingested_with_the_right_frames_and_clips(quirk_corpus, file):
    folder, times, _ = quirk_corpus
    assert_in_sync(folder / "data", file, times[file])


@pytest.mark.parametrize("file", ["phone_portrait_mp4.mp4", "phone_portrait_mov.mov", "upside_down_mkv.mkv",
                                  "anamorphic_mp4.mp4", "anamorphic_mkv.mkv"])
def test_frames_come_out_upright_with_square_pixels(quirk_corpus, file):
    folder, times, _ = quirk_corpus
    frame = read_frames(folder / "videos" / file, [float(times[file][0])])[0]
    # Stored turned or squeezed; shown in the shape of the upright 48x64 (width x height) portrait it was made from.
    width, height = frame.size
    assert width / height == pytest.approx(48 / 64, rel=0.03), frame.size
