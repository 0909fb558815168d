"""The README's figure of a few detectors' feature visualisations beside their top images (issue 38).

    .venv/bin/python scripts/visualization_figure.py RUN_DIR OUT.png [--per-category 1] [--top 4] [--rows 6]

RUN_DIR needs dissection.json, units_conv5.npz and visualizations/ (``ambient visualize RUN_DIR``). One row per
detector, the most precise detector of each category first: its visualisation, then its top masked images.
"""
from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.network.run import RunFolder, load_unit_images, visualizations_dir  # noqa: E402
from model.settings import DETECTOR_PRECISION  # noqa: E402

CELL, LABEL = 128, 22


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--per-category", type=int, default=1)
    parser.add_argument("--top", type=int, default=4)
    parser.add_argument("--rows", type=int, default=6)
    args = parser.parse_args()
    run = RunFolder(args.run_dir)
    visualized = {e["unit"]: e for e in run.visualizations()["units"] if e["layer"] == "conv5"}
    detectors = sorted((u for u in run.dissection or [] if u["category"] and u["precision"] >= DETECTOR_PRECISION
                        and u["unit"] in visualized), key=lambda u: -u["precision"])
    chosen, per_category = [], {}
    for unit in detectors:
        if per_category.get(unit["category"], 0) < args.per_category:
            per_category[unit["category"]] = per_category.get(unit["category"], 0) + 1
            chosen.append(unit)
    chosen = chosen[:args.rows]
    images = load_unit_images(run.units_file("conv5"))
    figure = Image.new("RGB", ((1 + args.top) * CELL, len(chosen) * (CELL + LABEL)), "white")
    draw = ImageDraw.Draw(figure)
    for row, unit in enumerate(chosen):
        y = row * (CELL + LABEL)
        entry = visualized[unit["unit"]]
        draw.text((4, y + 4), f"conv5 unit {unit['unit']}: {unit['category']} ({unit['precision']:.0%}), "
                              f"visualisation {entry['ratio']:.2f}x its top image", fill="black")
        vis = Image.open(visualizations_dir(run.path) / entry["file"]).convert("RGB").resize((CELL, CELL))
        figure.paste(vis, (0, y + LABEL))
        for column, jpeg in enumerate(images[unit["unit"]][:args.top], start=1):
            figure.paste(Image.open(io.BytesIO(jpeg)).convert("RGB").resize((CELL, CELL)), (column * CELL, y + LABEL))
    figure.save(args.out)
    print(f"{len(chosen)} detectors: " + ", ".join(f"unit {u['unit']} {u['category']}" for u in chosen))


if __name__ == "__main__":
    main()
