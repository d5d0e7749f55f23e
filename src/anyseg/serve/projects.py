"""Routes of the service for projects and annotations (an :class:`~fastapi.APIRouter`).

Ids in paths are integers in ``1 .. 2**63 - 1`` (SQLite's range; others are ``422``), image
ids 16 lowercase hex digits. Labels and project names pass :func:`anyseg.labels.check_label`;
masks are validated against the image size before they are decoded. Exports are
:mod:`anyseg.serve.export`.
"""

from __future__ import annotations

from fastapi import APIRouter, Path, Query

from anyseg.io.export import finite
from anyseg.serve.db import AnnotationRow, ImageRow, ProjectRow
from anyseg.serve.decode import ID_RE, normalise_rle
from anyseg.serve.errors import ApiError
from anyseg.serve.limits import StrictJSONRoute
from anyseg.serve.schemas import (
    MAX_ID,
    AnnotationIn,
    AnnotationOut,
    AnnotationPatch,
    Deleted,
    ProjectIn,
    ProjectOut,
)
from anyseg.serve.state import StateDep

__all__ = ["ProjectId", "annotation_out", "project_row", "router"]

#: a project id in a path: ``1 .. 2**63 - 1``
ProjectId = Path(..., ge=1, le=MAX_ID, description="project id")
AnnotationId = Path(..., ge=1, le=MAX_ID, description="annotation id")

router = APIRouter(route_class=StrictJSONRoute)


def _rle_box(rle: dict, size: tuple[int, int]) -> list[float]:
    from anyseg.masks import rle as rle_mod

    x, y, w, h = rle_mod.to_bbox(rle, size=size, max_pixels=max(1, size[0] * size[1]))
    return [x, y, x + w, y + h]


def annotation_out(a: AnnotationRow, size: tuple[int, int]) -> dict:
    """The API form of an annotation row (non-finite legacy values become ``null``)."""
    return {"id": a.id, "project_id": a.project_id, "image_id": a.image_id, "label": a.label, "rle": a.rle,
            "score": finite(a.score), "metadata": finite(a.meta or {}), "area": a.area,
            "box": _rle_box(a.rle, size), "created": a.created, "updated": a.updated}


def project_row(s, pid: int) -> ProjectRow:
    """The project ``pid`` in session ``s``, or :class:`ApiError` 404."""
    p = s.get(ProjectRow, pid)
    if p is None:
        raise ApiError(404, f"no project with id {pid}")
    return p


def _annotation(s, aid: int) -> AnnotationRow:
    a = s.get(AnnotationRow, aid)
    if a is None:
        raise ApiError(404, f"no annotation with id {aid}")
    return a


def _project_out(s, p: ProjectRow) -> dict:
    n = s.query(AnnotationRow).filter(AnnotationRow.project_id == p.id).count()
    return {"id": p.id, "name": p.name, "created": p.created, "annotation_count": n}


def _size(s, image_id: str) -> tuple[int, int]:
    img = s.get(ImageRow, image_id)
    return (img.height, img.width) if img is not None else (0, 0)


# -- projects --------------------------------------------------------------------------------------
@router.post("/api/projects", response_model=ProjectOut, status_code=201, summary="Create a project")
def create_project(body: ProjectIn, st: StateDep):
    with st.db.session() as s:
        p = ProjectRow(name=body.name)
        s.add(p)
        s.flush()
        return _project_out(s, p)


@router.get("/api/projects", response_model=list[ProjectOut], summary="List projects")
def list_projects(st: StateDep):
    with st.db.session() as s:
        return [_project_out(s, p) for p in s.query(ProjectRow).order_by(ProjectRow.id).all()]


@router.get("/api/projects/{pid}", response_model=ProjectOut, summary="One project")
def get_project(st: StateDep, pid: int = ProjectId):
    with st.db.session() as s:
        return _project_out(s, project_row(s, pid))


@router.delete("/api/projects/{pid}", response_model=Deleted, summary="Delete a project and its annotations")
def delete_project(st: StateDep, pid: int = ProjectId):
    with st.db.session() as s:
        p = project_row(s, pid)
        s.query(AnnotationRow).filter(AnnotationRow.project_id == pid).delete()
        s.delete(p)
    return {"deleted": pid}


# -- annotations -----------------------------------------------------------------------------------
@router.post("/api/projects/{pid}/annotations", response_model=AnnotationOut, status_code=201,
             summary="Save a mask as an annotation (the RLE size must match the image)")
def create_annotation(body: AnnotationIn, st: StateDep, pid: int = ProjectId):
    if not ID_RE.fullmatch(body.image_id):
        raise ApiError(400, f"image_id must be 16 lowercase hex digits; got {body.image_id[:40]!r}")
    with st.db.session() as s:
        project_row(s, pid)
        img = s.get(ImageRow, body.image_id)
        if img is None:
            raise ApiError(400, f"no image with id {body.image_id!r}: upload it first")
        size = (img.height, img.width)
        rle, mask = normalise_rle(body.rle, size, st.max_pixels)
        a = AnnotationRow(project_id=pid, image_id=img.id, label=body.label, rle=rle, area=int(mask.sum()),
                          score=body.score, meta=dict(body.metadata))
        s.add(a)
        s.flush()
        return annotation_out(a, size)


@router.get("/api/projects/{pid}/annotations", response_model=list[AnnotationOut],
            summary="Annotations of a project (optionally of one image)")
def list_annotations(st: StateDep, pid: int = ProjectId, image_id: str | None = Query(None, max_length=64)):
    with st.db.session() as s:
        project_row(s, pid)
        q = s.query(AnnotationRow).filter(AnnotationRow.project_id == pid)
        if image_id is not None:
            q = q.filter(AnnotationRow.image_id == image_id)
        sizes: dict[str, tuple[int, int]] = {}
        out = []
        for a in q.order_by(AnnotationRow.id).all():
            if a.image_id not in sizes:
                sizes[a.image_id] = _size(s, a.image_id)
            out.append(annotation_out(a, sizes[a.image_id]))
        return out


@router.patch("/api/annotations/{aid}", response_model=AnnotationOut,
              summary="Change an annotation's label, mask, score or metadata")
def patch_annotation(body: AnnotationPatch, st: StateDep, aid: int = AnnotationId):
    with st.db.session() as s:
        a = _annotation(s, aid)
        size = _size(s, a.image_id)
        fields = body.model_fields_set
        if "label" in fields and body.label is not None:
            a.label = body.label
        if "rle" in fields and body.rle is not None:
            rle, mask = normalise_rle(body.rle, size, st.max_pixels)
            a.rle, a.area = rle, int(mask.sum())
        if "score" in fields:
            a.score = body.score
        if "metadata" in fields and body.metadata is not None:
            a.meta = dict(body.metadata)
        s.flush()
        s.refresh(a)
        return annotation_out(a, size)


@router.delete("/api/annotations/{aid}", response_model=Deleted, summary="Delete an annotation")
def delete_annotation(st: StateDep, aid: int = AnnotationId):
    with st.db.session() as s:
        s.delete(_annotation(s, aid))
    return {"deleted": aid}
