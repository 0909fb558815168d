"""The sound-cluster browser: groups of cluster and binary labels, cochleagram images, and the pages."""
from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app_helpers import add_user, database_url, login, write_wav
from backend.app.clusters import cochleagram_image
from backend.app.main import create_app
from backend.config import Settings
from backend.db import store
from backend.db.models import Dataset, Frame, Run
from backend.db.session import upgrade_db, session_factory
from model.data import dataset
from model.sound.texture import TEXTURE_DIM
from model.sound.groups import dataset_sound_groups, one_per_video, sound_groups
from model.sound.labels import make_labels

HTML = {"accept": "text/html"}


def records(n, per_video=2):
    return [dataset.FrameRecord(frame_id=i, video_id=f"v{i // per_video}", video=f"v{i // per_video}.mp4",
                                frame_index=i % per_video, time=float(i % per_video), image=f"f{i}.jpg",
                                clip=f"c{i}.wav", split="test" if i % 3 else "train", silent=False)
            for i in range(n)]


def test_clusters_list_test_frames_nearest_first_one_per_video_with_their_sources():
    recs = records(12)
    labels = {"kind": np.array("cluster"), "k": np.array(2), "weights": np.full(TEXTURE_DIM, 2.0),
              "labels": np.array([0, 1] * 6), "centroids": np.stack([np.full(TEXTURE_DIM, 4.0), np.zeros(TEXTURE_DIM)]),
              "distances": np.array([9, 9, 5, 9, 1, 9, 7, 9, 3, 9, 2, 9], dtype=float)}
    groups = sound_groups(labels, np.zeros((12, TEXTURE_DIM)), recs, heard=lambda r: ["dog"] if r.frame_id < 4 else [])
    first = groups[0]
    assert (first.size, first.share) == (6, 0.5)
    np.testing.assert_allclose(first.texture, 2.0)                       # centroid back in texture space
    # Cluster 0's test rows are 2, 4, 8, 10 (0 and 6 are training), at distances 5, 1, 3, 2.
    assert first.closest_rows == [4, 10, 8, 2]
    assert first.sources == {"(silence)": 4, "dog": 2}
    assert one_per_video([0, 1, 2, 3], recs, 5) == [0, 2]


def test_binary_bits_compare_frames_with_the_bit_on_and_off():
    recs = records(6, per_video=1)
    textures = np.arange(6, dtype=float)[:, None] * np.ones((6, TEXTURE_DIM))
    codes = np.array([[1], [0], [1], [0], [1], [1]], dtype=np.uint8)
    labels = {"kind": np.array("binary"), "codes": codes, "weights": np.ones(TEXTURE_DIM),
              "mean": np.zeros(TEXTURE_DIM), "components": np.ones((1, TEXTURE_DIM))}
    (bit,) = sound_groups(labels, textures, recs)
    np.testing.assert_allclose(bit.texture, (0 + 2 + 4 + 5) / 4)
    np.testing.assert_allclose(bit.contrast, (1 + 3) / 2)
    assert bit.closest_rows == [5, 4, 2]                                 # test rows, largest projection first


def test_cochleagram_image_puts_high_frequencies_at_the_top():
    envelopes = np.zeros((32, 100))
    envelopes[31] = 1.0                                                  # energy in the highest channel only
    image = np.asarray(cochleagram_image(envelopes, width=100, channel_height=4).convert("L"), dtype=float)
    assert image.shape == (128, 100)
    assert image[:3].mean() > 200 and image[-60:].mean() < 10


@pytest.fixture()
def site(tmp_path):
    """A 12-frame dataset with 2-cluster labels, published with a run as `ambient publish` would."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    recs = records(12)
    rng = np.random.default_rng(0)
    textures = np.abs(rng.normal(size=(12, TEXTURE_DIM))).astype(np.float32)
    textures[1::2] += 3.0
    for r in recs:
        Image.new("RGB", (64, 64), (40 * r.frame_id % 256, 90, 160)).save(data_dir / r.image)
        write_wav(data_dir / r.clip, seconds=1.0)
    dataset.write_manifest(data_dir, recs, textures, np.zeros((12, 32), np.float32))
    make_labels(data_dir, "cluster", k=2)
    url = database_url(tmp_path)
    with session_factory(upgrade_db(url))() as db, db.begin():
        ds = store.register_dataset(db, data_dir, recs, textures, None)
        run = store.upsert_run(db, tmp_path / "run", "caffenet-bn", "cluster", {}, ds)
        store.replace_sound_clusters(db, run, ds, dataset_sound_groups(data_dir, "cluster"))
    add_user(url, "ann")
    client = TestClient(create_app(Settings(database_url=url)))
    login(client, "ann")
    return client, url


def test_cluster_pages_show_frames_clips_charts_and_cochleagrams(site):
    client, url = site
    assert 'href="/runs/1/clusters"' in client.get("/clusters", headers=HTML).text
    page = client.get("/runs/1/clusters", headers=HTML).text
    assert page.count('class="cluster"') == 2 and "6 frames, 50.0% of all" in page
    assert "Envelope mean and std. dev." in page and "Modulation power" in page and "Correlations" in page
    with session_factory(upgrade_db(url))() as db:
        frame_id = db.query(Frame.id).filter(Frame.row == 4).scalar()
    assert f'src="/frames/{frame_id}/clip"' in page
    clip = client.get(f"/frames/{frame_id}/clip")
    assert clip.status_code == 200 and clip.content[:4] == b"RIFF"
    assert client.get(f"/frames/{frame_id}/image").headers["content-type"] == "image/jpeg"
    png = client.get("/runs/1/clusters/0/cochleagram.png")
    assert png.headers["content-type"] == "image/png" and png.content[:4] == b"\x89PNG"
    frame = client.get(f"/runs/1/frames/{frame_id}", headers=HTML)
    assert frame.status_code == 200 and "This clip against Cluster" in frame.text
    assert client.get("/runs/9/clusters", headers=HTML).status_code == 404
    assert client.get("/frames/999/clip").status_code == 404


def test_many_clusters_come_five_to_a_page(site):
    from model.sound.groups import SoundGroup

    client, url = site
    texture = np.linspace(0, 1, TEXTURE_DIM)
    with session_factory(upgrade_db(url))() as db, db.begin():
        run, ds = db.get(Run, 1), db.get(Dataset, 1)
        store.replace_sound_clusters(db, run, ds, [SoundGroup(i, f"Cluster {i}", np.array([i]), 1 / 7, texture, None, [])
                                                   for i in range(7)])
    first = client.get("/runs/1/clusters", headers=HTML).text
    assert [f"Cluster {i}" for i in range(5)] == [f"Cluster {i}" for i in range(7) if f'id="group-{i}"' in first]
    assert "clusters 1-5 of 7" in first and 'rel="next" class="next-page" href="?offset=5"' in first
    rest = client.get("/runs/1/clusters?offset=5", headers=HTML).text
    assert rest.count('class="cluster"') == 2 and 'id="group-6"' in rest and 'rel="next"' not in rest


def test_a_cluster_is_named_by_the_worlds_truth_else_its_nearest_clips_and_an_admin_may_rename_it(site):
    from backend.publish import describe_sound_clusters, sound_cluster_description
    from model.sound.groups import SoundGroup

    assert sound_cluster_description(100, {"traffic": 62, "crowd": 20, "wind": 5}, []) == "traffic 62%, crowd 20%"
    assert sound_cluster_description(100, {"wind": 5, "rain": 3}, ["a.mp4"]) == "wind 5%"    # the most heard, at least
    assert sound_cluster_description(10, {}, ["clips/street_01.mp4", "street_01.mp4", "market.mp4"]) == \
        "like street_01, market"
    assert sound_cluster_description(10, {}, []) is None
    client, url = site
    texture = np.linspace(0, 1, TEXTURE_DIM)
    # On a generated world a group carries the true sources its frames hear; elsewhere it has none.
    world_groups = [SoundGroup(0, "Cluster 0", np.arange(8), 0.6, texture, None, [2], {"traffic": 5, "crowd": 2}),
                    SoundGroup(1, "Cluster 1", np.arange(8, 12), 0.4, texture, None, [4, 6, 5])]
    with session_factory(upgrade_db(url))() as db, db.begin():
        run, ds = db.get(Run, 1), db.get(Dataset, 1)
        store.replace_sound_clusters(db, run, ds, world_groups)
        describe_sound_clusters(db, run)
    page = client.get("/runs/1/clusters", headers=HTML).text
    assert "Cluster 0: traffic 62%, crowd 25%" in page and "Cluster 1: like v2, v3" in page   # rows 4, 6, 5: v2, v3
    titles = [c["title"] for c in client.get("/api/v1/runs/1/clusters").json()["items"]]
    assert titles == ["Cluster 0: traffic 62%, crowd 25%", "Cluster 1: like v2, v3"]
    assert 'action="/runs/1/clusters/1/name"' not in page                 # only admins name clusters
    token = login(client, "ann")
    assert client.post("/runs/1/clusters/1/name", data={"name": "x", "csrf_token": token}).status_code == 403

    add_user(url, "boss", is_admin=True)
    admin = TestClient(create_app(Settings(database_url=url)))
    token = login(admin, "boss")
    renamed = admin.post("/runs/1/clusters/1/name", data={"name": "  street   noise ", "csrf_token": token})
    assert renamed.status_code == 200 and "Cluster 1: street noise" in renamed.text
    with session_factory(upgrade_db(url))() as db, db.begin():         # published again: the name stays
        store.replace_sound_clusters(db, db.get(Run, 1), db.get(Dataset, 1), world_groups)
        describe_sound_clusters(db, db.get(Run, 1))
    item = client.get("/api/v1/runs/1/clusters").json()["items"][1]
    assert (item["title"], item["given_name"], item["description"]) == (
        "Cluster 1: street noise", "street noise", "like v2, v3")
    assert admin.post("/runs/1/clusters/7/name", data={"name": "x", "csrf_token": token}).status_code == 404


def test_a_clusters_visualisation_shows_in_the_browser(site):
    """`ambient visualize --clusters` publishes a PNG per cluster: the browser shows it, the other cluster none."""
    from sqlalchemy import update

    from backend.db.models import SoundCluster

    client, url = site
    with session_factory(upgrade_db(url))() as db, db.begin():
        db.execute(update(SoundCluster).where(SoundCluster.index == 1).values(visualization_png=b"\x89PNG-cluster-1"))
        cluster_id = db.query(SoundCluster.id).filter(SoundCluster.index == 1).scalar()
    page = client.get("/runs/1/clusters", headers=HTML).text
    assert f'id="visualization-1" src="/clusters/{cluster_id}/visualization.png"' in page
    assert 'id="visualization-0"' not in page
    png = client.get(f"/clusters/{cluster_id}/visualization.png")
    assert png.headers["content-type"] == "image/png" and png.content == b"\x89PNG-cluster-1"
    assert client.get("/clusters/999/visualization.png").status_code == 404
