"""Units compared by what they respond to over one pool: the correlation of their per-image spatial maxima.

- ``unit_correlations``: Pearson r between every unit of one set of maxima and every unit of another;
- ``similar_units``: within one network, each unit's most correlated other units (the unit page);
- ``match_units``: each unit of network A paired with one unit of network B so that the summed r is largest
  (optimal assignment, scipy's ``linear_sum_assignment``: no unit of B is taken twice, unlike greedy matching,
  which lets the first units claim the partners later ones need) -- "convergent learning", Li et al. 2016;
- ``compare_runs``: two runs' units matched over one pool, with both dissection labels and a summary.

The maxima are RUN_DIR/units_<layer>.npz's ``pool_maxima`` (``ambient units``), or measured again on the pool
that ``compare --pool`` names (``pool_maxima``), so that both networks see the same images.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from model.settings import DETECTOR_PRECISION

# A detector of A "recurs" in B when its matched unit of B detects the same category and the two correlate at
# least this much over the pool: r^2 = 0.25, a quarter of each one's variance over the pool shared; above the
# matched r of the untrained control (BENCHMARKS.md, "Explorer: comparing two networks").
MATCH_R = 0.5


def read_pool_maxima(units_path: str | Path) -> tuple[np.ndarray, np.ndarray] | None:
    """(pool frame rows (images,), spatial maxima (images, units)) saved by ``ambient units``; None for a file
    written before they were saved."""
    with np.load(units_path) as data:
        if "pool_maxima" not in data:
            return None
        return data["pool_frame_ids"], data["pool_maxima"].astype(np.float64)


def unit_correlations(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(units_a, units_b) Pearson r of the columns of (images, units_a) ``a`` and (images, units_b) ``b``; a
    unit constant over the pool (a dead unit) correlates 0 with everything."""
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"the maxima are over {a.shape[0]} and {b.shape[0]} images: one pool is needed")
    za, zb = _standardised(a), _standardised(b)
    return np.clip(za.T @ zb / a.shape[0], -1.0, 1.0)


def _standardised(x: np.ndarray) -> np.ndarray:
    centred = x - x.mean(axis=0)
    std = centred.std(axis=0)
    return np.divide(centred, std, out=np.zeros_like(centred), where=std > 1e-12)


def similar_units(maxima: np.ndarray, count: int) -> list[list[tuple[int, float]]]:
    """Per unit, the ``count`` other units whose maxima correlate most with its own: [(unit, r), ...] largest first."""
    r = unit_correlations(maxima, maxima)
    np.fill_diagonal(r, -np.inf)
    order = np.argsort(-r, axis=1, kind="stable")[:, :count]
    return [[(int(other), float(r[unit, other])) for other in row] for unit, row in enumerate(order)]


def match_units(r: np.ndarray) -> np.ndarray:
    """For each unit of A (rows of ``r``), its unit of B in the assignment of largest total r (each unit of B
    used once; A and B have the same number of units)."""
    from scipy.optimize import linear_sum_assignment

    rows, columns = linear_sum_assignment(r, maximize=True)
    matched = np.empty(r.shape[0], np.int64)
    matched[rows] = columns
    return matched


def detector_labels(labels: Sequence[dict] | None, layer: str, units: int) -> list[dict | None]:
    """Per unit of ``layer``, its dissection label {"category", "precision", "detector"} (None: no dissection)."""
    found: list[dict | None] = [None] * units
    for row in labels or []:
        if row.get("layer", layer) == layer and 0 <= row["unit"] < units:
            found[row["unit"]] = {"category": row["category"], "precision": row["precision"],
                                  "detector": bool(row["category"]) and row["precision"] >= DETECTOR_PRECISION}
    return found


def compare_maxima(maxima_a: np.ndarray, maxima_b: np.ndarray, labels_a: list[dict | None],
                   labels_b: list[dict | None]) -> dict:
    """Every unit of A matched to one of B (``match_units``) with r, its best r in B (unconstrained) and both
    labels; and how many of A's detectors have a match with r >= MATCH_R that detects the same category."""
    if maxima_a.shape[1] != maxima_b.shape[1]:
        raise ValueError(f"the layers differ in size: A has {maxima_a.shape[1]} units, B {maxima_b.shape[1]}; "
                         f"compare layers of the same size")
    r = unit_correlations(maxima_a, maxima_b)
    matched = match_units(r)
    units = []
    for unit, other in enumerate(matched.tolist()):
        label_a, label_b = labels_a[unit], labels_b[other]
        units.append({"unit": unit, "match": other, "r": float(r[unit, other]),
                      "best": int(r[unit].argmax()), "best_r": float(r[unit].max()),
                      "label_a": label_a, "label_b": label_b,
                      "same_detector": bool(label_a and label_b and label_a["detector"] and label_b["detector"]
                                            and label_a["category"] == label_b["category"]
                                            and r[unit, other] >= MATCH_R)})
    detectors = [u for u in units if u["label_a"] and u["label_a"]["detector"]]
    recurring = [u for u in detectors if u["same_detector"]]
    by_category: dict[str, list[int]] = {}
    for u in detectors:
        counts = by_category.setdefault(u["label_a"]["category"], [0, 0])
        counts[0] += 1
        counts[1] += u["same_detector"]
    return {"units": units, "match_r": MATCH_R,
            "median_r": float(np.median([u["r"] for u in units])),
            "summary": {"detectors_a": len(detectors), "recurring": len(recurring),
                        "categories": {c: {"detectors": n, "recurring": k}
                                       for c, (n, k) in sorted(by_category.items())}},
            "identity": bool(np.array_equal(matched, np.arange(len(matched))))}


def measure_pool_maxima(run_dir: str | Path, data_dir: str | Path, layer: str, split: str = "all",
                        device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """(pool frame rows, (images, units) spatial maxima) of RUN_DIR's network over DATA_DIR's ``split``: one pass,
    as ``ambient units`` makes it. ValueError / FileNotFoundError name a pool the network cannot read."""
    from dataclasses import replace

    from model.settings import UNITS
    from model.units.top_images import load_network, pool_pass, pool_records, video_index

    records = pool_records(data_dir, split)
    network = load_network(run_dir, layer, device=device)
    settings = replace(UNITS, layer=layer, top=1, split=split, workers=0)
    maxima = pool_pass(network, Path(data_dir), records, video_index(records), settings, device=device).maxima
    return np.array([r.frame_id for r in records], np.int64), maxima.astype(np.float64)


def stored_pool_maxima(run_dir: str | Path, layer: str) -> tuple[np.ndarray, np.ndarray, str]:
    """What ``ambient units`` saved of RUN_DIR's ``layer``: (pool frame rows, maxima, the pool's folder).
    FileNotFoundError / ValueError say which file is missing or too old."""
    from model.network.run import RunFolder

    run = RunFolder(run_dir)
    path = run.units_file(layer)
    if not path.exists():
        raise FileNotFoundError(f"{run_dir}: no units of {layer} (analysed: {', '.join(run.layers) or 'none'}); "
                                f"run `ambient units` first or give --pool DATA_DIR")
    saved = read_pool_maxima(path)
    if saved is None:
        raise ValueError(f"{path} keeps no pool maxima (written before they were saved): give --pool DATA_DIR")
    return saved[0], saved[1], run.units_meta(layer)["data_dir"]


def compare_runs(run_a: str | Path, run_b: str | Path, layer: str = "conv5", pool: str | Path | None = None,
                 split: str = "all", device: str = "cpu") -> dict:
    """Every unit of A's ``layer`` matched to one of B's over one pool: DATA_DIR ``pool`` measured now, else the
    pool both runs' units files were made on (refused when they differ)."""
    from model.network.run import RunFolder

    if pool is not None:
        frames_a, maxima_a = measure_pool_maxima(run_a, pool, layer, split, device)
        frames_b, maxima_b = measure_pool_maxima(run_b, pool, layer, split, device)
        pool_name = str(Path(pool).resolve())
    else:
        frames_a, maxima_a, pool_a = stored_pool_maxima(run_a, layer)
        frames_b, maxima_b, pool_b = stored_pool_maxima(run_b, layer)
        if pool_a != pool_b or not np.array_equal(frames_a, frames_b):
            raise ValueError(f"the runs' units were pooled on different frames ({pool_a}: {len(frames_a)}, {pool_b}: "
                             f"{len(frames_b)}); give --pool DATA_DIR to measure both on one")
        pool_name = pool_a
    result = compare_maxima(maxima_a, maxima_b,
                            detector_labels(RunFolder(run_a).dissection, layer, maxima_a.shape[1]),
                            detector_labels(RunFolder(run_b).dissection, layer, maxima_b.shape[1]))
    # A unit silent over the whole pool correlates with nothing: its match means nothing.
    for unit, silent in zip(result["units"], (maxima_a.std(axis=0) < 1e-12).tolist()):
        unit["silent"] = silent
    return {"run_a": str(Path(run_a).resolve()), "run_b": str(Path(run_b).resolve()), "layer": layer,
            "pool": pool_name, "pool_images": int(len(frames_a)), "matching": "optimal (linear_sum_assignment)",
            **result}


def compare_file_name(run_a: str | Path, run_b: str | Path) -> str:
    """compare_<A>_<B>.json, A and B the run folders' names (their parents' too when a folder is called "run")."""
    def name(run: str | Path) -> str:
        path = Path(run).resolve()
        text = f"{path.parent.name}-{path.name}" if path.name == "run" else path.name
        return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)
    return f"compare_{name(run_a)}_{name(run_b)}.json"
