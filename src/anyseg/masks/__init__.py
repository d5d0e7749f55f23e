"""Mask utilities: COCO RLE, polygons, box/mask geometry and NMS, cleanup and overlays."""

from anyseg.masks.boxes import (
    batched_nms,
    box_area,
    box_iou,
    clip_boxes,
    mask_iou,
    mask_nms,
    nms,
    xywh_to_xyxy,
    xyxy_to_xywh,
)
from anyseg.masks.cleanup import clean_masks, remove_small_regions
from anyseg.masks.overlay import draw_labels, draw_prompt, overlay, overlay_regions, palette
from anyseg.masks.polygons import (
    clip_polygon,
    mask_to_polygons,
    polygon_area,
    polygons_to_mask,
    polygons_to_rle,
    segmentation_to_mask,
    segmentation_to_rle,
)
from anyseg.masks.rle import area, decode, decode_many, encode, encode_many, to_bbox, to_uncompressed, validate

__all__ = [
    "encode", "encode_many", "decode", "decode_many", "area", "to_bbox", "to_uncompressed", "validate",
    "mask_to_polygons", "polygons_to_mask", "polygons_to_rle", "polygon_area", "clip_polygon",
    "segmentation_to_rle", "segmentation_to_mask",
    "box_area", "box_iou", "mask_iou", "clip_boxes", "xyxy_to_xywh", "xywh_to_xyxy",
    "nms", "batched_nms", "mask_nms",
    "remove_small_regions", "clean_masks",
    "palette", "overlay", "overlay_regions", "draw_labels", "draw_prompt",
]
