"""The demo world: real decodable videos whose truth (masks, audibility) matches what was drawn and heard."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from typer.testing import CliRunner

from backend.cli import app
from model.sound.texture import TEXTURE_GROUPS, cochlear_center_frequencies, sound_textures
from model.categories import category_by_name, load_categories
from model.data.media import probe, read_audio, read_frames
from model.settings import WORLD, WORLD_PRESETS
from model.world import frame_truth, generate_world, video_truth
from model.world.truth import camera_x
from model.world import tuxpaint
from model.world.objects import DRAWERS
from model.world.scenes import LAYOUT, SCENES
from model.world.sounds import SOUND_BANDS, SOURCE_SYNTHS

SEED = 7


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    summary = generate_world(out, videos=8, seed=SEED, preset="tiny", objects="procedural", progress=False)
    return out, summary


def test_categories_load_from_the_package_csv():
    categories = load_categories()
    assert len(categories) > 150
    person = category_by_name()["person"]
    assert person.characteristic_sound and not person.stuff and "individual" in person.synonyms
    assert not category_by_name()["tree"].characteristic_sound


def test_world_categories_are_sun_names_with_enough_sounding_and_silent_ones():
    flags = category_by_name()
    used = set(DRAWERS) | set(SOURCE_SYNTHS) | set(LAYOUT) | {c for s in SCENES for c in s.objects}
    assert used <= set(flags), used - set(flags)
    drawn_sounding = [c for c in DRAWERS if flags[c].characteristic_sound]
    drawn_silent = [c for c in DRAWERS if not flags[c].characteristic_sound]
    assert len(drawn_sounding) >= 6 and len(drawn_silent) >= 6
    assert all(flags[c].characteristic_sound for c in SOURCE_SYNTHS)
    assert set(drawn_sounding) <= set(SOURCE_SYNTHS)    # every drawable sounding object has a voice
    assert set(SOUND_BANDS) == set(SOURCE_SYNTHS)


def test_summary_counts_match_the_truth_files(world):
    out, summary = world
    assert summary.videos == 8 and summary.objects == "procedural"
    saved = json.loads((out / "world.json").read_text())
    assert saved["seed"] == SEED and saved["preset"] == "tiny" and saved["videos"] == 8
    records = [json.loads(p.read_text()) for p in sorted((out / "truth").glob("*.json"))]
    assert len(records) == 8
    assert sum(len(r["objects"]) for r in records) == sum(summary.object_counts.values())


def test_videos_decode_with_audio_and_video_of_the_stated_length(world):
    out, summary = world
    duration = WORLD_PRESETS["tiny"].duration_s
    for video in sorted((out / "videos").glob("*.mp4")):
        info = probe(video)
        assert info.has_video and info.has_audio
        assert (info.width, info.height) == (WORLD.width, WORLD.height)
        assert abs(info.duration - duration) < 0.2
        waveform, rate = read_audio(video)
        assert rate == WORLD.sample_rate
        assert abs(waveform.size / rate - duration) < 0.1
        assert np.sqrt(np.mean(waveform ** 2)) > 1e-3        # the ambience at least is there


@pytest.mark.parametrize("time_s", [2.0, 4.0])
def test_truth_masks_line_up_with_the_drawn_objects(world, time_s):
    out, _ = world
    inside, outside, checked = [], [], 0
    for video in sorted((out / "videos").glob("*.mp4")):
        truth = frame_truth(out, video.name, time_s)
        if not truth.objects:
            continue
        frame = np.asarray(read_frames(video, [time_s])[0]).astype(np.float32)
        union = np.zeros(frame.shape[:2], bool)
        for obj in truth.objects:
            assert obj.mask.shape == frame.shape[:2] and obj.mask.any()
            union |= obj.mask
        # Backgrounds are nearly constant along a row: the row's median outside the objects
        # estimates it, and drawn objects stand out from it where (and only where) the masks say.
        background = np.stack([np.median(frame[y][~union[y]], axis=0) if (~union[y]).sum() > 20
                               else np.median(frame[y], axis=0) for y in range(frame.shape[0])])
        deviation = np.abs(frame - background[:, None, :]).mean(axis=2)
        inside.append(deviation[union].mean())
        outside.append(deviation[~union].mean())
        record, masks = video_truth(out, video)
        assert masks.shape[2] == record["camera"]["canvas_width"]
        for obj in record["objects"]:
            rows, cols = np.nonzero(masks[obj["mask"]])
            assert obj["bbox"] == [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]
        checked += 1
    assert checked >= 3
    assert np.mean(inside) > 3 * np.mean(outside)
    assert sum(i > 2 * o for i, o in zip(inside, outside)) >= 0.8 * checked


def test_the_camera_pans_so_sampled_frames_differ_and_masks_move_with_it(world):
    out, _ = world
    early, late = 1.875, WORLD_PRESETS["tiny"].duration_s - 1.875      # ingest's first and last frames
    moved = 0
    for video in sorted((out / "videos").glob("*.mp4")):
        record, _ = video_truth(out, video)
        camera = record["camera"]
        pan = camera["x_end"] - camera["x_start"]
        assert camera["canvas_width"] == WORLD.width + abs(pan)
        assert WORLD.pan_fraction[0] * WORLD.width <= abs(pan) <= WORLD.pan_fraction[1] * WORLD.width + 1
        a, b = (np.asarray(f).astype(np.float32) for f in read_frames(video, [early, late]))
        assert np.abs(a - b).mean() > 3                                  # not the same picture twice
        shift = camera_x(record, late) - camera_x(record, early)
        assert 0.15 * WORLD.width <= abs(shift) and np.sign(shift) == np.sign(pan)
        # The later frame shows the same scene moved left by `shift` pixels (when the camera moves right).
        overlap = WORLD.width - abs(shift)
        same_a, same_b = (a[:, shift:], b[:, :overlap]) if shift > 0 else (a[:, :overlap], b[:, -shift:])
        assert np.abs(same_a - same_b).mean() < 0.25 * np.abs(a - b).mean()
        # frame_truth's masks move by the same offset (objects matched by category where it is unique).
        categories = [o["category"] for o in record["objects"]]
        masks_a = {o.category: o.mask for o in frame_truth(out, video.name, early).objects}
        for obj in frame_truth(out, video.name, late).objects:
            if obj.category in masks_a and categories.count(obj.category) == 1:
                mask_a = masks_a[obj.category]
                kept_a, kept_b = (mask_a[:, shift:], obj.mask[:, :overlap]) if shift > 0 \
                    else (mask_a[:, :overlap], obj.mask[:, -shift:])
                assert np.array_equal(kept_a, kept_b)
                moved += kept_a.any()
    assert moved >= 2


def test_frame_truth_accepts_the_world_its_videos_folder_or_a_relative_path(world):
    out, _ = world
    a = frame_truth(out, "videos/world_00000.mp4", 2.0)
    b = frame_truth(out / "videos", "world_00000.mp4", 2.0)
    c = frame_truth(out, "world_00000", 2.0)
    assert a.scene == b.scene == c.scene and a.audible == b.audible == c.audible
    assert [o.category for o in a.objects] == [o.category for o in c.objects]
    with pytest.raises(FileNotFoundError):
        frame_truth(out, "no_such_video.mp4", 2.0)


def test_audible_marks_follow_the_intervals(world):
    out, _ = world
    for path in sorted((out / "truth").glob("*.json")):
        record = json.loads(path.read_text())
        for sound in record["sounds"]:
            start, end = sound["intervals"][0]
            assert sound["category"] in frame_truth(out, path.stem, (start + end) / 2).audible
            assert (sound["object"] is None) == (not sound["on_screen"])


def test_an_audible_source_raises_the_energy_of_its_bands_in_the_frame_texture(tmp_path):
    """Frames where a category is marked audible have more energy (texture mu) in its bands than
    frames whose whole texture window holds only the scene's ambience."""
    # Every demo video with objects has a sounding subject: empty videos give the ambience-only frames.
    out = tmp_path / "world"
    generate_world(out, videos=12, seed=SEED, preset="tiny", objects="procedural", progress=False,
                   settings=replace(WORLD, object_count_weights=(0.4, 0.3, 0.3, 0.0)))
    centres = cochlear_center_frequencies()
    duration, window = WORLD_PRESETS["tiny"].duration_s, 3.75
    times = np.linspace(window / 2, duration - window / 2, 10)     # as ingest samples frames
    frames = []                                                   # (sounds of the video, time, mu)
    for path in sorted((out / "truth").glob("*.json")):
        record = json.loads(path.read_text())
        waveform, rate = read_audio(out / record["video"])
        clips = np.stack([waveform[int((t - window / 2) * rate):][: int(window * rate)] for t in times])
        textures = sound_textures(clips, rate)
        # mu is normalised by the clip's loudness: times loudness it is each band's mean envelope.
        mus = textures[:, TEXTURE_GROUPS["mu"]] * textures[:, TEXTURE_GROUPS["loudness"]]
        frames += [(record["sounds"], t, mu) for t, mu in zip(times, mus)]
    compared = 0
    for category in {s["category"] for sounds, _, _ in frames for s in sounds}:
        low, high = SOUND_BANDS[category]
        bands = (centres >= low) & (centres <= high)
        mine = [[s for s in sounds if s["category"] == category] for sounds, _, _ in frames]
        heard = [any(a <= t < b for s in m for a, b in s["intervals"]) for m, (_, t, _) in zip(mine, frames)]
        absent = [not any(a < t + window / 2 and b > t - window / 2 for s in sounds for a, b in s["intervals"])
                  for sounds, t, _ in frames]
        energy = np.array([mu[bands].mean() for _, _, mu in frames])
        if any(heard) and any(absent):
            compared += 1
            assert energy[heard].mean() > 1.05 * energy[absent].mean(), category
    assert compared >= 3


def test_same_seed_same_world(tmp_path):
    a = generate_world(tmp_path / "a", videos=2, seed=3, preset="tiny", objects="procedural", workers=1, progress=False)
    b = generate_world(tmp_path / "b", videos=2, seed=3, preset="tiny", objects="procedural", workers=1, progress=False)
    assert a.object_counts == b.object_counts
    for name in ("world_00000.json", "world_00001.json"):
        assert (tmp_path / "a/truth" / name).read_text() == (tmp_path / "b/truth" / name).read_text()
    generate_world(tmp_path / "a", videos=1, seed=4, preset="tiny", objects="procedural", workers=1, progress=False)
    assert len(list((tmp_path / "a/videos").glob("*.mp4"))) == 1     # a new world replaces the old one


def test_videos_are_filmed_around_a_sounding_subject_when_the_setting_says_so(tmp_path):
    flags = category_by_name()
    always = replace(WORLD, subject_probability=1.0)
    generate_world(tmp_path / "a", videos=10, seed=5, preset="tiny", objects="procedural", workers=1,
                   progress=False, settings=always)
    with_objects = 0
    for truth in sorted((tmp_path / "a/truth").glob("world_*.json")):
        record = json.loads(truth.read_text())
        subjects = [o for o in record["objects"] if o["subject"]]
        if record["objects"]:
            with_objects += 1
            assert len(subjects) <= 1
        for subject in subjects:          # a sounding thing near the middle of the canvas the camera pans over
            assert flags[subject["category"]].characteristic_sound
            x0, _, x1, _ = subject["bbox"]
            assert 0.2 < (x0 + x1) / 2 / record["camera"]["canvas_width"] < 0.8
        # the subject can only be missing when something nearer hid it
        assert subjects or not record["objects"] or len(record["objects"]) < 3
    assert with_objects >= 5
    never = replace(WORLD, subject_probability=0.0)
    generate_world(tmp_path / "b", videos=4, seed=5, preset="tiny", objects="procedural", workers=1,
                   progress=False, settings=never)
    assert not any(o["subject"] for truth in (tmp_path / "b/truth").glob("world_*.json")
                   for o in json.loads(truth.read_text())["objects"])


@pytest.mark.skipif(not tuxpaint.available(), reason="tuxpaint-stamps-default is not installed")
def test_every_subject_is_heard_even_a_stamp_with_no_synthesised_voice(tmp_path):
    """A subject with no synth (cow, horse, instrument) is drawn from a stamp that has its recording."""
    generate_world(tmp_path, videos=24, seed=2, preset="tiny", objects="tuxpaint", workers=1, progress=False)
    subjects = 0
    for truth in sorted(tmp_path.glob("truth/world_*.json")):
        record = json.loads(truth.read_text())
        for subject in (o for o in record["objects"] if o["subject"]):
            subjects += 1
            voices = [s for s in record["sounds"] if s["object"] == subject["id"]]
            assert voices, (truth.name, subject["category"])
            if subject["category"] not in SOURCE_SYNTHS:
                assert voices[0]["origin"].startswith("recording:")
    assert subjects >= 15


@pytest.mark.skipif(not tuxpaint.available(), reason="tuxpaint-stamps-default is not installed")
def test_tuxpaint_world_uses_the_stamps_and_their_recordings(tmp_path):
    summary = generate_world(tmp_path, videos=6, seed=1, preset="tiny", objects="tuxpaint", workers=1, progress=False)
    assert summary.objects == "tuxpaint"
    records = [json.loads(p.read_text()) for p in (tmp_path / "truth").glob("*.json")]
    stamped = [o for r in records for o in r["objects"] if o["source"] != "procedural"]
    assert stamped and all((tuxpaint.STAMPS_DIR / o["source"]).exists() for o in stamped)
    stamps = tuxpaint.index_stamps()
    assert len(stamps["bird"]) >= 10 and any(s.sound for s in stamps["dog"])


def test_cli_generates_and_rejects_bad_input(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["world", str(tmp_path / "w"), "--preset", "tiny", "--videos", "1",
                                 "--objects", "procedural", "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "1 videos" in result.output and (tmp_path / "w/videos/world_00000.mp4").exists()
    bad = runner.invoke(app, ["world", str(tmp_path / "x"), "--preset", "huge"])
    assert bad.exit_code == 2 and "huge" in bad.output
    bad = runner.invoke(app, ["world", str(tmp_path / "x"), "--objects", "clay"])
    assert bad.exit_code == 2 and "clay" in bad.output
