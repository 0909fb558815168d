"""The Representation section of a run: its linear-probe results (Table 2a's shape) and Fig. A1a.

``ambient probe`` writes RUN_DIR/probe_<dataset>.json (model/units/probe.py); this module reads those files
through the run's ``run_dir`` and shapes them for the page and the JSON export.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import plotly.graph_objects as go

from backend.db.models import Run
from model.network.run import read_probes


@dataclass
class ProbeTable:
    """One probe file as a table: a column per task and layer, a row per network."""

    dataset: str
    format: str
    created: str
    columns: list[tuple[str, str, str]]              # (task, metric, layer)
    rows: list[tuple[str, list[float | None]]]       # (network, scores in column order)
    chance: dict[str, float]                         # task -> chance score
    per_class: dict[str, dict[str, float | None]]    # network -> class -> AP, for the first mAP task at pool5
    per_class_task: str | None


def run_probes(run: Run) -> list[dict]:
    """The probe results stored in the run's folder (none when the folder is not on this server)."""
    return read_probes(run.run_dir) if Path(run.run_dir).is_dir() else []


def network_label(network: dict) -> str:
    k = f" (k={network['k']})" if network["label_kind"] == "cluster" and network["trained"] else ""
    return network["name"] + k


def probe_table(probe: dict) -> ProbeTable:
    layers, tasks = probe["layers"], probe["tasks"]
    columns = [(t["task"], t["metric"], layer) for t in tasks for layer in layers]
    rows = [(network_label(n), [n["results"].get(task, {}).get(layer, {}).get("score") for task, _, layer in columns])
            for n in probe["networks"]]
    map_task = next((t["task"] for t in tasks if t["metric"] == "mAP"), None)
    layer = "pool5" if "pool5" in layers else layers[0]
    per_class = {network_label(n): n["results"][map_task][layer].get("per_class", {})
                 for n in probe["networks"]} if map_task else {}
    return ProbeTable(probe["dataset"], probe["format"], probe.get("created", ""), columns, rows,
                      {t["task"]: t["chance"] for t in tasks if "chance" in t}, per_class,
                      f"{map_task} at {layer}" if map_task else None)


def clusters_figure(probe: dict) -> go.Figure | None:
    """Fig. A1a: each task's score against the number of clusters of the trained cluster networks, a line
    per layer; None with fewer than two such networks."""
    networks = sorted((n for n in probe["networks"] if n["label_kind"] == "cluster" and n["trained"]),
                      key=lambda n: n["k"])
    if len({n["k"] for n in networks}) < 2:
        return None
    figure = go.Figure()
    for task in probe["tasks"]:
        for layer in probe["layers"]:
            figure.add_trace(go.Scatter(x=[n["k"] for n in networks], mode="lines+markers",
                                        y=[100 * n["results"][task["task"]][layer]["score"] for n in networks],
                                        name=f"{task['task']} {task['metric']}, {layer}"))
    figure.update_layout(title=f"Probe score against the number of sound clusters ({probe['dataset']})",
                         xaxis={"title": "clusters (k)", "type": "log", "tickvals": [n["k"] for n in networks]},
                         yaxis={"title": "score (%)"}, height=420, margin={"t": 50})
    return figure
