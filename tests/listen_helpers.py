"""A tiny published cluster run with everything "listen to an image" reads: weights, the labels it was
trained on (with textures), units, automatic labels and sound clusters with playable clips."""
from __future__ import annotations

import json
from dataclasses import replace
from types import SimpleNamespace

import numpy as np

from app_helpers import add_user, database_url
from backend.db.session import upgrade_db
from backend.publish import publish_run
from model.data import dataset as ds
from model.data.media import write_audio_clip
from model.network.run import DISSECTION, write_run_json
from model.units.top_images import extract_units
from test_units import SETTINGS, make_pool

K = 4


def make_listen_run(root) -> SimpleNamespace:
    """test_units' tiny pool and network, plus textures, cluster labels, clips, dissection.json; published."""
    pool = make_pool(root, 24, 20)
    rng = np.random.default_rng(0)
    centroids = rng.uniform(0.1, 1.0, (K, 502))
    labels = np.arange(24) % K
    textures = centroids[labels] + rng.normal(0, 0.01, (24, 502))
    ds.write_manifest(pool.data, pool.records, textures, np.zeros((24, 32)))
    (pool.data / ds.LABELS_DIR).mkdir()
    np.savez(ds.labels_file(pool.data, "cluster"), kind="cluster", k=K, labels=labels, centroids=centroids,
             distances=np.linalg.norm(textures - centroids[labels], axis=1), keep=np.ones(24, bool),
             weights=np.ones(502))
    t = np.arange(int(0.5 * 16_000)) / 16_000
    for record in pool.records:
        write_audio_clip(0.3 * np.sin(2 * np.pi * (200 + 50 * (record.frame_id % K)) * t), 16_000,
                         pool.data / record.clip)
    write_run_json(pool.run, pool.info, {"data_dir": str(pool.data)})
    (pool.run / DISSECTION).write_text(json.dumps([{"unit": u, "category": "car", "precision": 0.5, "iou": 0.1,
                                                    "sounding": True, "layer": "conv5"} for u in range(0, 256, 2)]))
    # One sample per unit: the unit pages need them, the listen page does not (and extraction is the slow part).
    extract_units(pool.run, pool.data, replace(SETTINGS, sample_quantiles=(0.5,), samples_per_quantile=1),
                  show_progress=False)
    url = database_url(root, "listen.db")
    run_id = publish_run(pool.run, upgrade_db(url)).run_id
    add_user(url, "ann")
    add_user(url, "boss", is_admin=True)
    return SimpleNamespace(**vars(pool), url=url, run_id=run_id, centroids=centroids)
