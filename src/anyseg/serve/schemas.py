"""Request and response bodies of the service (pydantic), with bounds on every size.

Every number must be finite (``allow_inf_nan=False``, and the JSON parser refuses ``NaN``
already), arrays have a maximum length, labels and project names pass
:func:`anyseg.labels.check_label` (one line of printable text), and free-form ``metadata``
is bounded in size and nesting.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from anyseg.labels import MAX_LABEL_LENGTH, check_label
from anyseg.tasks.everything import MAX_CROP_LAYERS, MAX_POINTS_PER_BATCH, MAX_POINTS_PER_SIDE

__all__ = [
    "MAX_ID", "MAX_METADATA_BYTES", "MAX_METADATA_DEPTH", "MAX_PHRASES", "MAX_POINTS", "AnnotationIn",
    "AnnotationOut", "AnnotationPatch", "Deleted", "EverythingBody", "ExportFormat", "Health", "ImageInfo", "MaskItem",
    "MasksResult", "PredictBody", "PredictResult", "ProjectIn", "ProjectOut", "Rle", "TextBody",
]

#: largest database id (SQLite's signed 64-bit integer)
MAX_ID = 2**63 - 1
#: most click points in one predict request
MAX_POINTS = 1024
#: most phrases in one text request
MAX_PHRASES = 64
#: largest ``metadata`` of an annotation (bytes of its JSON) and its deepest nesting
MAX_METADATA_BYTES = 65_536
MAX_METADATA_DEPTH = 8
_SMALL = 16  # inner arrays: a point, a box, an RLE size


class Strict(BaseModel):
    """Request bodies: finite numbers only."""

    model_config = ConfigDict(allow_inf_nan=False)


def _label(value: str | None) -> str | None:
    return None if value is None else check_label(value)


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def check_metadata(value: dict[str, Any] | None) -> dict[str, Any] | None:
    """``value`` if it is JSON of at most :data:`MAX_METADATA_BYTES` and :data:`MAX_METADATA_DEPTH` levels."""
    if value is None:
        return None
    try:
        size = len(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as e:
        raise ValueError(f"metadata must be plain JSON with finite numbers: {e}") from None
    if size > MAX_METADATA_BYTES:
        raise ValueError(f"metadata is {size} bytes of JSON, over the limit of {MAX_METADATA_BYTES}")
    depth = _depth(value)
    if depth > MAX_METADATA_DEPTH:
        raise ValueError(f"metadata is nested {depth} levels deep, over the limit of {MAX_METADATA_DEPTH}")
    return value


# -- masks -----------------------------------------------------------------------------------------
class Rle(Strict):
    size: list[int] = Field(..., max_length=_SMALL, description="[height, width]")
    counts: str | list[int] = Field(..., description="compressed COCO RLE string (or uncompressed run lengths)")


class MaskItem(BaseModel):
    rle: Rle
    score: float
    box: list[float] = Field(..., description="XYXY pixels")
    area: int
    label: str | None = None


class MasksResult(BaseModel):
    masks: list[MaskItem]
    seconds: float | None = None


# -- images and model work -------------------------------------------------------------------------
class Health(BaseModel):
    status: str
    model: str
    family: str


class ImageInfo(BaseModel):
    id: str = Field(..., description="first 16 hex digits of the pixel content hash")
    width: int
    height: int
    file_name: str


Point = Annotated[list[float], Field(max_length=_SMALL)]


class PredictBody(Strict):
    points: list[Point] | None = Field(None, max_length=MAX_POINTS, description="[[x, y], ...] pixels")
    labels: list[int] | None = Field(None, max_length=MAX_POINTS,
                                     description="1 positive / 0 negative, one per point (default all 1)")
    box: list[float] | None = Field(None, max_length=_SMALL, description="[x0, y0, x1, y1] pixels")
    mask_rle: Rle | None = Field(None, description="a previous mask (same size as the image) to refine")
    multimask: bool = True


class PredictResult(BaseModel):
    masks: list[MaskItem]
    seconds: float


class EverythingBody(Strict):
    points_per_side: int = Field(16, ge=1, le=MAX_POINTS_PER_SIDE)
    points_per_batch: int | None = Field(None, ge=1, le=MAX_POINTS_PER_BATCH)
    pred_iou_thresh: float | None = Field(None, ge=0, le=1)
    stability_score_thresh: float | None = Field(None, ge=0, le=1)
    box_nms_thresh: float | None = Field(None, ge=0, le=1)
    crop_n_layers: int | None = Field(None, ge=0, le=MAX_CROP_LAYERS)
    min_mask_region_area: int | None = Field(None, ge=0, le=1 << 31)
    granularity: str | None = Field(None, max_length=32)
    use_m2m: bool | None = None


Phrase = Annotated[str, Field(max_length=MAX_LABEL_LENGTH)]


class TextBody(Strict):
    phrases: list[Phrase] = Field(..., min_length=1, max_length=MAX_PHRASES)
    model: str = Field("auto", max_length=128)
    threshold: float | None = Field(None, ge=0, le=1)


# -- projects and annotations ----------------------------------------------------------------------
class ProjectIn(Strict):
    name: str = Field(..., min_length=1, max_length=MAX_LABEL_LENGTH)

    @field_validator("name")
    @classmethod
    def check_name_field(cls, v: str) -> str:
        return check_label(v, "project name")


class ProjectOut(BaseModel):
    id: int
    name: str
    created: datetime
    annotation_count: int = 0


#: an annotation label: one line of printable text (:func:`anyseg.labels.check_label`)
Label = Annotated[str, Field(min_length=1, max_length=MAX_LABEL_LENGTH), AfterValidator(_label)]
#: annotation metadata: bounded in size and nesting (:func:`check_metadata`)
Metadata = Annotated[dict[str, Any], AfterValidator(check_metadata)]


class AnnotationIn(Strict):
    image_id: str = Field(..., max_length=64)
    label: Label
    rle: Rle
    score: float | None = None
    metadata: Metadata = Field(default_factory=dict)


class AnnotationPatch(Strict):
    label: Label | None = None
    rle: Rle | None = None
    score: float | None = None
    metadata: Metadata | None = None


class AnnotationOut(BaseModel):
    id: int
    project_id: int
    image_id: str
    label: str
    rle: Rle
    score: float | None
    metadata: dict[str, Any]
    area: int
    box: list[float] = Field(..., description="XYXY pixels")
    created: datetime
    updated: datetime


class Deleted(BaseModel):
    deleted: int


class ExportFormat(BaseModel):
    name: str = Field(..., description="the value of ?format= in /api/projects/{pid}/export")
    description: str
    media_type: str = Field(..., description="Content-Type of the download")
    suffix: str = Field(..., description="suffix of the download's file name (.json, .zip)")
