"""Routes of the service for the UI page, its health and images: upload, list, fetch (an :class:`~fastapi.APIRouter`).

Images are content-addressed: the id is the first 16 hex digits of the pixel hash
(:func:`anyseg.io.images.image_hash`); an upload is decoded, stored and embedded in a worker
of the pool (:mod:`anyseg.serve.pool`), after an admission check made before its body is read.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse

from anyseg.serve.db import ImageRow
from anyseg.serve.decode import base_name, decode_upload
from anyseg.serve.errors import ApiError
from anyseg.serve.limits import StrictJSONRoute
from anyseg.serve.schemas import Health, ImageInfo
from anyseg.serve.state import StateDep

__all__ = ["STATIC_DIR", "read_upload", "router"]

#: the web UI's files (index.html, app.js, ...), served under ``/static``
STATIC_DIR = Path(__file__).resolve().parent / "static"

router = APIRouter(route_class=StrictJSONRoute)


async def read_upload(request: Request) -> tuple[bytes, str]:
    """The bytes and base file name of the multipart field ``file`` (the body limit applies while reading)."""
    from starlette.formparsers import MultiPartException, MultiPartParser

    ctype = request.headers.get("content-type", "")
    if not ctype.startswith("multipart/form-data"):
        raise ApiError(415, "expected a multipart/form-data upload with the image in the field 'file'; "
                            f"got Content-Type {ctype[:60]!r}")
    try:
        form = await MultiPartParser(request.headers, request.stream(), max_files=1, max_fields=16).parse()
    except MultiPartException as e:
        raise ApiError(400, f"bad multipart upload: {e.message}") from None
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        raise ApiError(400, "no file in the multipart field 'file'")
    try:
        return await upload.read(), base_name(upload.filename)
    finally:
        await upload.close()


@router.get("/", include_in_schema=False)
def index():
    page = STATIC_DIR / "index.html"
    if not page.is_file():
        raise ApiError(404, "the web UI is not installed (static/index.html is missing)")
    return FileResponse(page, media_type="text/html")


@router.get("/api/health", response_model=Health, summary="Service status and the loaded model")
def health(st: StateDep):
    return {"status": "ok", "model": getattr(st.predictor, "name", "") or "",
            "family": getattr(st.predictor, "family", "") or ""}


@router.post("/api/images", response_model=ImageInfo, summary="Upload an image (multipart field `file`)",
             openapi_extra={"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
                 "type": "object", "required": ["file"],
                 "properties": {"file": {"type": "string", "format": "binary"}}}}}}},
             responses={413: {"description": "upload or image too large"}, 415: {"description": "not an image"},
                        503: {"description": "server busy"}, 504: {"description": "timeout"}})
async def upload_image(request: Request, st: StateDep):
    st.pool.check_admission("upload")  # busy: answer before reading the body
    data, file_name = await read_upload(request)

    def job() -> dict:
        arr, fmt = decode_upload(data, st.max_pixels, name=file_name)
        row = st.store(data, arr, fmt, file_name)
        st.embedding(row, arr)
        return {"id": row.id, "width": row.width, "height": row.height, "file_name": row.file_name}

    return await st.pool.run(job, kind="upload")


@router.get("/api/images", response_model=list[ImageInfo], summary="List uploaded images")
def list_images(st: StateDep):
    with st.db.session() as s:
        rows = s.query(ImageRow).order_by(ImageRow.created, ImageRow.id).all()
        return [{"id": r.id, "width": r.width, "height": r.height, "file_name": base_name(r.file_name)}
                for r in rows]


@router.get("/api/images/{image_id}", summary="The original image bytes",
            responses={200: {"content": {"image/*": {}}}, 404: {"description": "unknown id"}})
def get_image(image_id: str, st: StateDep):
    row = st.image_row(image_id)
    path = st.image_path(row.id)
    if not path.is_file():
        raise ApiError(404, f"the stored file of image {row.id} is missing")
    return FileResponse(path, media_type=row.content_type)
