"""Routes of the service for model work: predict, segment everything, text (an :class:`~fastapi.APIRouter`).

Each route checks admission (:meth:`~anyseg.serve.pool.WorkerPool.check_admission`: ``503``
when busy) before any database or decoding work, validates the request, then runs the model
in a worker of the pool (``504`` and cancelled past the request timeout). Predict reuses the
image's cached embedding (:meth:`~anyseg.serve.state.State.embedding`): only the decoder runs.
"""

from __future__ import annotations

import time

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from anyseg.errors import InputError, ModelError
from anyseg.serve.decode import check_id, normalise_rle
from anyseg.serve.errors import ApiError
from anyseg.serve.limits import StrictJSONRoute
from anyseg.serve.schemas import EverythingBody, MasksResult, PredictBody, PredictResult, TextBody
from anyseg.serve.state import StateDep
from anyseg.types import Masks, Prompt

__all__ = ["mask_items", "router"]

router = APIRouter(route_class=StrictJSONRoute)


def mask_items(masks: Masks, with_labels: bool = False) -> list[dict]:
    """The API form of masks: compressed RLE, score, XYXY box, area (and label)."""
    from anyseg.masks import rle as rle_mod

    rles = rle_mod.encode_many(masks)
    areas = masks.areas.tolist()
    out = []
    for i, r in enumerate(rles):
        item = {"rle": r, "score": float(masks.scores[i]), "box": [float(v) for v in masks.boxes[i]],
                "area": int(areas[i])}
        if with_labels and masks.labels is not None:
            item["label"] = str(masks.labels[i])
        out.append(item)
    return out


def _prompt(body: PredictBody, size: tuple[int, int], max_pixels: int) -> Prompt:
    """The checked prompt of a predict body for an ``(H, W)`` image; :class:`ApiError` 400."""
    mask = None
    if body.mask_rle is not None:
        _, mask = normalise_rle(body.mask_rle, size, max_pixels)
    if body.labels is not None and body.points is None:
        raise ApiError(400, "labels given without points")
    try:
        prompt = Prompt(points=body.points or None, labels=body.labels if body.points else None,
                        box=body.box, mask=mask)
        prompt.check_within(size)
    except (InputError, ValueError, TypeError) as e:
        raise ApiError(400, str(e) if isinstance(e, InputError) else f"bad prompt: {e}") from None
    return prompt


@router.post("/api/images/{image_id}/predict", response_model=PredictResult,
             summary="Masks from clicks, a box and/or a previous mask (decoder only, cached embedding)")
async def predict(image_id: str, body: PredictBody, st: StateDep):
    check_id(image_id)
    st.pool.check_admission("predict")  # busy: answer before any database or decoding work
    row = await run_in_threadpool(st.image_row, image_id)
    prompt = _prompt(body, (row.height, row.width), st.max_pixels)

    def job() -> dict:
        emb = st.embedding(row)
        t0 = time.perf_counter()
        masks = st.predictor.predict(emb, prompt, multimask=body.multimask)
        return {"masks": mask_items(masks), "seconds": time.perf_counter() - t0}

    return await st.pool.run(job, kind="predict")


@router.post("/api/images/{image_id}/everything", response_model=MasksResult,
             summary="Segment everything (automatic mask generation)")
async def everything(image_id: str, body: EverythingBody, st: StateDep):
    from anyseg.tasks.everything import EverythingParams, generate

    check_id(image_id)
    st.pool.check_admission("everything")
    row = await run_in_threadpool(st.image_row, image_id)
    overrides = {k: v for k, v in body.model_dump().items() if v is not None}
    family = getattr(st.predictor, "family", "") or "sam"
    try:
        params = EverythingParams.for_family(family, **overrides)
    except InputError as e:
        raise ApiError(400, str(e)) from None

    def job() -> dict:
        t0 = time.perf_counter()
        masks = generate(st.predictor, st.load_array(row), params)
        return {"masks": mask_items(masks), "seconds": time.perf_counter() - t0}

    return await st.pool.run(job, kind="everything")


@router.post("/api/images/{image_id}/text", response_model=MasksResult,
             summary="Every instance of text phrases (needs a text model: SAM 3, Grounding DINO, OWLv2, CLIP)",
             responses={501: {"description": "no text model available"}})
async def text(image_id: str, body: TextBody, st: StateDep):
    from anyseg.tasks.text import TextParams, find_instances
    from anyseg.text.vocab import parse_classes

    check_id(image_id)
    st.pool.check_admission("text")
    row = await run_in_threadpool(st.image_row, image_id)
    phrases = [p.strip() for p in body.phrases if p.strip()]
    if not phrases:
        raise ApiError(400, "no phrases given: say what to segment")
    try:
        classes = parse_classes(phrases)
    except InputError as e:
        raise ApiError(400, str(e)) from None

    def job() -> dict:
        try:
            backend = st.text_backend(body.model)
        except ModelError as e:
            raise ApiError(501, str(e)) from None
        t0 = time.perf_counter()
        masks = find_instances(st.load_array(row), classes, backend, TextParams(threshold=body.threshold))
        return {"masks": mask_items(masks), "seconds": time.perf_counter() - t0}

    return await st.pool.run(job, kind="text")
