"""The units' masked JPEGs straight from the database, and their clips from the dataset folder."""
from __future__ import annotations

import hashlib
import logging

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import FileResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.app.deps import current_user, get_db
from backend.app.media_files import dataset_file
from backend.db.models import Dataset, Frame, SoundCluster, Unit, UnitImage

router = APIRouter(tags=["media"], dependencies=[Depends(current_user)])
log = logging.getLogger("ambient")


@router.get("/images/{image_id}", response_class=Response,
            responses={200: {"content": {"image/jpeg": {}}}, 304: {"description": "Not modified"}})
def unit_image(image_id: int, request: Request, db: Session = Depends(get_db)) -> Response:
    """One of a unit's masked top images (JPEG), cached by the browser and revalidated by ETag."""
    jpeg = db.scalar(select(UnitImage.masked_jpeg).where(UnitImage.id == image_id))
    if jpeg is None:
        raise HTTPException(404, f"There is no image {image_id}.")
    return jpeg_response(jpeg, request)


def jpeg_response(jpeg: bytes, request: Request, media_type: str = "image/jpeg") -> Response:
    """A stored JPEG (or another picture), cached by the browser and revalidated by ETag (304 when unchanged)."""
    # A content hash, not the id: re-extracting a run may reuse ids for different pictures.
    etag = f'"{hashlib.blake2b(jpeg, digest_size=16).hexdigest()}"'
    headers = {"ETag": etag, "Cache-Control": "private, max-age=3600"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(jpeg, media_type=media_type, headers=headers)


@router.get("/clips/{image_id}", response_class=FileResponse,
            responses={200: {"content": {"audio/mpeg": {}}}})
def clip(image_id: int, db: Session = Depends(get_db)) -> FileResponse:
    """The 3.75 s sound clip of one top image's frame (byte ranges supported, for seeking)."""
    row = db.execute(select(Dataset.data_dir, Frame.clip_path).join(Frame, Frame.dataset_id == Dataset.id)
                     .join(UnitImage, UnitImage.frame_id == Frame.id).where(UnitImage.id == image_id)).one_or_none()
    if row is None:
        raise HTTPException(404, f"There is no image {image_id}.")
    if row.clip_path is None:
        raise HTTPException(404, f"Image {image_id} is a still image: it has no clip.")
    path = dataset_file(row.data_dir, row.clip_path)
    if path is None:
        # The folder goes to the log, not into the answer: server paths are no business of the client's.
        log.warning("clip of image %s not found (or not inside its dataset): %s / %s", image_id, row.data_dir,
                    row.clip_path)
        raise HTTPException(404, f"The clip of image {image_id} is missing from its dataset.")
    return FileResponse(path, headers={"Cache-Control": "private, max-age=3600"})


@router.get("/units/{unit_id}/visualization.png", response_class=Response,
            responses={200: {"content": {"image/png": {}}}, 304: {"description": "Not modified"}})
def unit_visualization(unit_id: int, request: Request, db: Session = Depends(get_db)) -> Response:
    """The image optimised to excite the unit (``ambient visualize``)."""
    png = db.scalar(select(Unit.visualization_png).where(Unit.id == unit_id))
    if png is None:
        raise HTTPException(404, f"Unit {unit_id} has no visualisation: run `ambient visualize` on its run.")
    return jpeg_response(png, request, "image/png")


@router.get("/clusters/{cluster_id}/visualization.png", response_class=Response,
            responses={200: {"content": {"image/png": {}}}, 304: {"description": "Not modified"}})
def cluster_visualization(cluster_id: int, request: Request, db: Session = Depends(get_db)) -> Response:
    """The image optimised for the sound cluster's probability (``ambient visualize --clusters``)."""
    png = db.scalar(select(SoundCluster.visualization_png).where(SoundCluster.id == cluster_id))
    if png is None:
        raise HTTPException(404, f"Sound cluster {cluster_id} has no visualisation: run `ambient visualize "
                                 f"--clusters` on its run.")
    return jpeg_response(png, request, "image/png")
