"""Project exports of the service: database rows adapted to :class:`anyseg.io.export.ExportData`.

The formats are the registry :data:`anyseg.io.export.EXPORTERS` (``coco``, ``yolo``, ``png``,
``coco-polygons``, ``indexed``, and any registered later): ``GET /api/export-formats`` lists
them and ``GET /api/projects/{pid}/export?format=NAME`` accepts exactly those (another name is
a ``422``, like any bad query value). A single-file format is served as its file, the others as
a zip. What clients gave is never written as a path and rows stored before the service
validated its input still export; the exporters see to both (see :class:`~anyseg.io.export.ExportData`).
"""

from __future__ import annotations

from fastapi import APIRouter, Query
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response

from anyseg.io.export import EXPORTERS, ExportData, ExportImage, ExportObject, export_bytes, finite, safe_name
from anyseg.serve.db import AnnotationRow, ImageRow
from anyseg.serve.limits import StrictJSONRoute
from anyseg.serve.projects import ProjectId, project_row
from anyseg.serve.schemas import ExportFormat
from anyseg.serve.state import StateDep

__all__ = ["check_format", "finite", "project_export", "router"]

router = APIRouter(route_class=StrictJSONRoute)


def project_export(s, pid: int) -> ExportData:
    """The export input of project ``pid`` (session ``s``): its annotations by id and their images; 404 if none."""
    project = project_row(s, pid)
    rows = s.query(AnnotationRow).filter(AnnotationRow.project_id == pid).order_by(AnnotationRow.id).all()
    objects = [ExportObject(a.id, a.image_id, a.label, a.rle, a.score, a.meta) for a in rows]
    ids = list(dict.fromkeys(o.image for o in objects))
    images = {r.id: ExportImage(r.id, r.file_name, r.width, r.height)
              for r in s.query(ImageRow).filter(ImageRow.id.in_(ids)).all()} if ids else {}
    return ExportData(project.name, images, objects)


def check_format(name: str) -> str:
    """``name`` if it is a registered export format, else the ``422`` a query pattern would give."""
    if name in EXPORTERS:
        return name
    pattern = f"^({'|'.join(EXPORTERS)})$"  # names are [a-z0-9-]: nothing to escape
    raise RequestValidationError([{"type": "string_pattern_mismatch", "loc": ("query", "format"),
                                   "msg": f"String should match pattern '{pattern}'", "input": name,
                                   "ctx": {"pattern": pattern}}])


@router.get("/api/export-formats", response_model=list[ExportFormat], summary="The export formats there are")
def export_formats():
    return [{"name": e.name, "description": e.description, "media_type": e.media_type if e.single_file
             else "application/zip", "suffix": e.suffix if e.single_file else ".zip"} for e in EXPORTERS.values()]


@router.get("/api/projects/{pid}/export",
            summary="Export a project: COCO JSON (RLE or polygons), YOLO-seg zip, PNG-mask zip, indexed-PNG zip",
            responses={200: {"content": {"application/json": {}, "application/zip": {}}}})
def export(st: StateDep, pid: int = ProjectId,
           format: str = Query("coco", description="an export format (GET /api/export-formats)")):
    fmt = check_format(format)
    with st.db.session() as s:
        data = project_export(s, pid)
    body, media_type, suffix = export_bytes(fmt, data)
    return Response(body, media_type=media_type,
                    headers={"Content-Disposition": f'attachment; filename="{safe_name(data.name)}_{fmt}{suffix}"'})
