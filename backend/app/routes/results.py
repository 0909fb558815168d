"""Results for admins: Fig. 3 histograms, Table 1, Fig. A1b, Fig. 4 galleries, agreement."""
from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Form, HTTPException, Query, Request
from fastapi.responses import RedirectResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from annotation.consensus import CONSENSUS_METHODS
from annotation.figures import (detector_histogram_figure, detector_histograms_figure, emergence_figure,
                                threshold_curve_figure)
from backend.app.deps import BlankIsNone, Share, admin_user, check_csrf, figure_html, flash, get_db, render
from backend.app.campaign import run_campaign, run_campaigns
from backend.app.results import (RUN_NAME_MAX, THRESHOLDS, automatic_label_rows, characteristic_flags, default_report,
                                 held_out, rename_run, run_report)
from backend.db.models import Annotator, Run
from model.settings import ANNOTATION, DETECTOR_PRECISION

router = APIRouter(include_in_schema=False)
ALPHA_RESAMPLES = 1000     # Krippendorff's alpha's bootstrap interval: under a second for a thousand units


@router.get("/results")
def all_runs(request: Request, user: Annotator = Depends(admin_user), db: Session = Depends(get_db)):
    # Each run in its default campaign.
    reports = [default_report(db, run) for run in db.scalars(select(Run).order_by(Run.id))]
    characteristic = characteristic_flags(db)
    with_detectors = {r.run.name: r.histogram for r in reports if r.histogram}
    # The automatic labels' detectors too: runs of several networks on one pool, before anyone annotates.
    with_auto = {r.run.name: r.auto_detectors.histogram for r in reports if r.auto_detectors and r.auto_detectors.histogram}
    return render(request, "results.html", user=user, reports=reports,
                  held_out={r.run.id: held_out(r.run) for r in reports},
                  side_by_side=figure_html(detector_histograms_figure(with_detectors, characteristic))
                  if with_detectors else None,
                  auto_side_by_side=figure_html(detector_histograms_figure(with_auto, characteristic))
                  if with_auto else None,
                  # All zeros would be a flat line on a -1..1 axis: the page says what will appear instead.
                  threshold_curve=figure_html(threshold_curve_figure(
                      THRESHOLDS, {r.run.name: r.threshold_counts for r in reports}))
                  if any(any(r.threshold_counts) for r in reports) else None)


@router.get("/results/{run_id}")
def one_run(run_id: int, request: Request, user: Annotator = Depends(admin_user), db: Session = Depends(get_db),
            category: str | None = Query(None, max_length=200), campaign: int | None = Query(None),
            consensus: Literal["majority", "dawid-skene"] = Query("majority"),
            min_precision: Annotated[Share | None, BlankIsNone, Query()] = None,
            min_iou: Annotated[Share | None, BlankIsNone, Query()] = None):
    min_precision, min_iou = min_precision or 0.0, min_iou or 0.0
    run = db.get(Run, run_id)
    if run is None:
        raise HTTPException(404, f"There is no run {run_id}.")
    report = run_report(db, run, run_campaign(db, run, campaign), consensus, alpha_resamples=ALPHA_RESAMPLES)
    auto = report.auto_detectors
    labelled = automatic_label_rows(report.units)
    return render(request, "run.html", user=user, report=report, held_out=held_out(run), run_name_max=RUN_NAME_MAX,
                  campaigns=run_campaigns(db, run.id),
                  campaign_query=f"?campaign={report.campaign.id}" if report.campaign else "",
                  consensus_methods=CONSENSUS_METHODS,
                  auto_labels=automatic_label_rows(report.units, category or None, min_precision, min_iou),
                  auto_categories=sorted({c for r in labelled for c in (r.auto_category, r.auto_netdissect_category)
                                          if c is not None}),
                  auto_filter={"category": category or "", "min_precision": min_precision, "min_iou": min_iou},
                  auto_histogram=figure_html(detector_histogram_figure(
                      auto.histogram, report.characteristic, title=f"Automatic detectors per category, {run.name}"))
                  if auto and auto.histogram else None,
                  histogram=figure_html(detector_histogram_figure(report.histogram, report.characteristic,
                                                             title=f"Detectors per category, {run.name}"))
                  if report.histogram else None,
                  threshold_curve=figure_html(threshold_curve_figure(THRESHOLDS, {run.name: report.threshold_counts}))
                  if any(report.threshold_counts) else None,
                  emergence=figure_html(emergence_figure(run.emergence["steps"],
                                                         title=f"When the detectors emerge, {run.name}"))
                  if run.emergence and run.emergence.get("steps") else None,
                  ablation=run.ablation,
                  detector_precision=DETECTOR_PRECISION, annotators_per_unit=ANNOTATION.annotators_per_unit)


@router.post("/results/{run_id}/name", dependencies=[Depends(check_csrf)])
def rename(run_id: int, request: Request, name: str = Form(max_length=1000), user: Annotator = Depends(admin_user),
           db: Session = Depends(get_db)):
    run = rename_run(db, run_id, name)
    flash(request, f"Run {run.id} is now called {run.name}.")
    return RedirectResponse(f"/results/{run.id}", status_code=303)
