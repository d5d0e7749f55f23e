"""SAM's training loss: focal + dice on the mask logits, plus the MSE of the IoU head.

Following the SAM paper (Kirillov et al. 2023, section 3 and appendix A): the mask is
supervised with a linear combination of focal loss (alpha 0.25, gamma 2, as in RetinaNet /
``sigmoid_focal_loss``) and dice loss in a 20:1 ratio; the IoU prediction head is trained with
the mean squared error between its prediction and the IoU of the predicted mask with the ground
truth; with several output masks (an ambiguous single-point prompt) only the mask of lowest
loss is back-propagated (the IoU MSE is applied to every output, as in SAM 2's trainer).

Where it differs: the loss is computed at the mask decoder's own low-resolution output
(256 x 256 for the 1024-pixel models) with the ground truth brought down to that grid
(:func:`anyseg.finetune.data.low_res_target`), as MedSAM does, rather than on upsampled logits:
cheap and independent of the image size. Pixels that are ignored (pseudo-label uncertainty,
GrabCut's band) or that lie in the padding are excluded from every term, including the IoU
target. Focal loss is averaged over valid pixels; dice is per mask with a smoothing of 1.
"""

from __future__ import annotations

from typing import Any

__all__ = ["FOCAL_WEIGHT", "DICE_WEIGHT", "IOU_WEIGHT", "LOSSES", "focal_loss", "dice_loss", "bce_loss", "mask_iou",
           "sam_loss"]

#: ``sam``: SAM's 20:1 focal + dice (with the IoU MSE); ``medsam``: MedSAM's 1:1 dice + binary cross-entropy
#: (``train_one_gpu.py``: ``DiceLoss(sigmoid=True, squared_pred=True)`` + ``BCEWithLogitsLoss``), with the IoU MSE
LOSSES = ("sam", "medsam")

FOCAL_WEIGHT = 20.0
DICE_WEIGHT = 1.0
IOU_WEIGHT = 1.0


def focal_loss(logits: Any, target: Any, valid: Any, alpha: float = 0.25, gamma: float = 2.0) -> Any:
    """``(..., h, w)`` logits -> ``(...)`` sigmoid focal loss averaged over the valid pixels."""
    import torch.nn.functional as F

    t = target.to(logits.dtype)
    v = valid.to(logits.dtype)
    p = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, t, reduction="none")
    p_t = p * t + (1 - p) * (1 - t)
    loss = ce * (1 - p_t) ** gamma
    loss = (alpha * t + (1 - alpha) * (1 - t)) * loss
    return (loss * v).sum((-2, -1)) / v.sum((-2, -1)).clamp_min(1.0)


def dice_loss(logits: Any, target: Any, valid: Any, smooth: float = 1.0) -> Any:
    """``(..., h, w)`` logits -> ``(...)`` soft dice loss over the valid pixels."""
    t = target.to(logits.dtype)
    v = valid.to(logits.dtype)
    p = logits.sigmoid() * v
    inter = (p * t).sum((-2, -1))
    return 1 - (2 * inter + smooth) / (p.sum((-2, -1)) + (t * v).sum((-2, -1)) + smooth)


def bce_loss(logits: Any, target: Any, valid: Any) -> Any:
    """``(..., h, w)`` logits -> ``(...)`` binary cross-entropy averaged over the valid pixels."""
    import torch.nn.functional as F

    v = valid.to(logits.dtype)
    ce = F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype), reduction="none")
    return (ce * v).sum((-2, -1)) / v.sum((-2, -1)).clamp_min(1.0)


def squared_dice_loss(logits: Any, target: Any, valid: Any, smooth: float = 1e-5) -> Any:
    """MONAI's ``DiceLoss(sigmoid=True, squared_pred=True)`` over the valid pixels (MedSAM's dice term)."""
    t = target.to(logits.dtype)
    v = valid.to(logits.dtype)
    p = logits.sigmoid() * v
    inter = (p * t).sum((-2, -1))
    return 1 - (2 * inter + smooth) / ((p * p).sum((-2, -1)) + (t * v).sum((-2, -1)) + smooth)


def mask_iou(logits: Any, target: Any, valid: Any) -> Any:
    """``(...)`` IoU of the thresholded logits (> 0) with the target over the valid pixels
    (1 when both are empty), without gradient."""
    import torch

    with torch.no_grad():
        pred = (logits > 0) & valid
        t = target & valid
        inter = (pred & t).sum((-2, -1)).float()
        union = (pred | t).sum((-2, -1)).float()
        return torch.where(union > 0, inter / union.clamp_min(1.0), torch.ones_like(union))


def sam_loss(logits: Any, iou_pred: Any, target: Any, valid: Any, kind: str = "sam") -> tuple[Any, dict[str, Any], Any]:
    """SAM's loss for a batch.

    Args:
        logits: ``(B, M, h, w)`` low-resolution mask logits (``M`` output masks per prompt).
        iou_pred: ``(B, M)`` the IoU head's predictions.
        target, valid: ``(B, h, w)`` bool ground truth and valid pixels on the same grid.
        kind: one of :data:`LOSSES`.

    Returns:
        ``(loss, parts, best)``: the scalar loss (mean over the batch), its detached parts
        (``focal``, ``dice``, ``iou_mse``, ``iou``: the chosen masks' actual IoU) and the ``(B,)``
        index of the mask each item back-propagated (lowest focal + dice loss).
    """
    import torch

    tgt = target[:, None].expand_as(logits)
    val = valid[:, None].expand_as(logits)
    logits = logits.float()
    if kind == "medsam":  # the "focal" part is the cross-entropy then
        focal, dice = bce_loss(logits, tgt, val), squared_dice_loss(logits, tgt, val)
        per_mask = focal + dice
    else:
        focal, dice = focal_loss(logits, tgt, val), dice_loss(logits, tgt, val)
        per_mask = FOCAL_WEIGHT * focal + DICE_WEIGHT * dice  # (B, M)
    best = per_mask.detach().argmin(dim=1)
    rows = torch.arange(logits.shape[0], device=logits.device)
    iou_true = mask_iou(logits, tgt, val)  # (B, M)
    iou_mse = ((iou_pred.float() - iou_true) ** 2).mean(dim=1)
    loss = (per_mask[rows, best] + IOU_WEIGHT * iou_mse).mean()
    focal, dice = focal.detach(), dice.detach()
    parts = {"focal": float(focal[rows, best].mean()), "dice": float(dice[rows, best].mean()),
             "iou_mse": float(iou_mse.detach().mean()), "iou": float(iou_true[rows, best].mean())}
    return loss, parts, best
