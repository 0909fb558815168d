"""A run's Representation section (admins): linear-probe tables shaped like Table 2a, Fig. A1a, and the JSON."""
from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from backend.app.deps import admin_user, figure_html, get_db, json_download, render
from backend.app.representation import clusters_figure, probe_table, run_probes
from backend.db.models import Annotator, Run
from model.settings import PROBE

router = APIRouter(include_in_schema=False)


def _run(db: Session, run_id: int) -> Run:
    run = db.get(Run, run_id)
    if run is None:
        raise HTTPException(404, f"There is no run {run_id}.")
    return run


@router.get("/results/{run_id}/representation")
def representation(run_id: int, request: Request, user: Annotator = Depends(admin_user), db: Session = Depends(get_db)):
    run = _run(db, run_id)
    probes = run_probes(run)
    figures = [clusters_figure(probe) for probe in probes]
    return render(request, "representation.html", user=user, run=run,
                  sections=[(probe_table(probe), figure_html(figure) if figure else None)
                            for probe, figure in zip(probes, figures)],
                  min_test_videos=PROBE.world_min_test_videos)


@router.get("/api/runs/{run_id}/representation.json")
def representation_json(request: Request, run_id: int, user: Annotator = Depends(admin_user),
                        db: Session = Depends(get_db)):
    run = _run(db, run_id)
    response = JSONResponse({"run": run.name, "probes": run_probes(run)})
    json_download(run_id, request, response)
    return response
