"""ONNX Runtime fast path for SAM-family promptable inference (fp32 and dynamic int8).

Only the two networks run in onnxruntime: the image encoder (``pixel_values`` ->
``image_embeddings``) and the prompt encoder + mask decoder (image embeddings, points and
labels in model coordinates -> low-res mask logits and IoU scores). Preprocessing, the
geometry, the prompt mapping and the postprocessing are the torch predictor's own, so both
runtimes produce comparable :class:`~anyseg.types.Masks`. By default (``decoder="auto"``,
see :data:`DECODERS`) point and box prompts are decoded by anyseg's rescheduled torch decoder,
which is faster on CPU than the exported graph and gives the same numbers; the graph decodes
mask inputs, and everything with ``decoder="onnx"``.

The decoder graph takes prompts the way segment-anything's ONNX model does: one sequence of
``N`` points per prompt with labels ``1`` (positive), ``0`` (negative), ``2`` / ``3`` (box
top-left / bottom-right corner) and ``-1`` (the padding point transformers appends when there
is no box), plus ``mask_input`` / ``has_mask_input`` for the dense mask prompt. Both the
number of prompts ``B`` and the number of points ``N`` are dynamic axes. It returns the four
mask tokens' outputs; single / multi-mask selection happens in Python, as in transformers.

Artifacts are cached in ``<weights folder>/.anyseg-onnx/<key>/`` (or
``~/.cache/anyseg/onnx/<key>`` when that folder is not writable), where ``key`` is a sha256
of the checkpoint's ``config.json``, the weights files' sizes and mtimes, the anyseg / torch /
onnx / onnxruntime versions and the export options. Supported families: ``sam`` and ``sam2``
(SAM 2 / 2.1: the encoder also returns the two high-resolution maps; SAM 2's dynamic
single-mask fallback via stability is applied in Python on the four outputs, as transformers does).
"""

from __future__ import annotations

import dataclasses

import hashlib
import json
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np

from anyseg.errors import InputError, ModelError
from anyseg.models.base import Predictor
from anyseg.models.families import families_with, find_family
from anyseg.models.sam import SamFamilyPredictor
from anyseg.runtime.onnx_graphs import decoder_module, encoder_module
from anyseg.runtime.table import ONNX_RUNTIMES
from anyseg.types import Embedding, Masks, Prompt

#: the runtimes :func:`load_runtime` takes (the ONNX ones defined in :mod:`anyseg.runtime.table`, and ``torch``)
RUNTIMES = ("torch", *ONNX_RUNTIMES)
OPSET = 17
#: bump when the exported graphs change meaning (part of the cache key)
EXPORT_FORMAT = 1
#: op types quantized by ``onnx-int8`` (dynamic quantization of Conv is slow in onnxruntime)
INT8_OPS = ("MatMul", "Gemm")
#: encoder MatMuls that ``onnx-int8`` keeps in fp32 (the names go into the cache key; see
#: :func:`_fp32_nodes`). On the real-size SAM 2.1 hiera-tiny (random weights, 480x640 image,
#: 4 clicks x 3 masks + 64 boxes decoded by the torch decoder on both embeddings) quantizing all
#: 51 weight MatMuls gave mask IoU min / mean 0.935 / 0.965 vs fp32, below the 0.95 required of
#: quantized paths. Excluding groups one at a time, three mattered most: Hiera's stage-transition
#: projections ``blocks.N/proj`` (on the residual path, so their error is never damped), the MLP
#: output projections ``mlp/proj_out`` and the last stage's blocks (whose output is the image
#: embedding the decoder reads). Keeping those 21 MatMuls in fp32 gives 0.968 / 0.983 for an
#: encoder slightly slower than all-int8 and still ~1.5x faster than the fp32 ONNX encoder and
#: ~2.3x faster than torch fp32 (2 threads, medians of 5 interleaved runs on a shared VM:
#: 1.13 s vs 1.07 s all-int8, 1.68 s fp32 ONNX, 2.63 s torch). Other knobs were worse:
#: reduce_range 0.916 / 0.953, per-tensor weights 0.911 / 0.958.
#: SAM (ViT) graphs have no such nodes and are quantized as before.
INT8_KEEP_FP32 = ("hiera-stage-proj", "hiera-mlp-proj-out", "hiera-last-stage")

#: which network decodes point / box prompts: ``auto`` = anyseg's rescheduled torch decoder
#: (:mod:`anyseg.models.sam_decoder`) where the model has one, else the exported graph; ``onnx`` =
#: always the exported graph (e.g. to check it); ``torch`` = the torch decoder. Measured on 2
#: cores: the exported graph (transformers' decoder as is) takes 36-40 ms per click, the
#: rescheduled torch decoder 22-25 ms with the same numbers, so ``auto`` keeps ONNX Runtime for
#: the encoder, where it wins, and torch for clicks. Mask inputs always use the exported graph.
DECODERS = ("auto", "onnx", "torch")

#: number of exports done by this process (tests check cache re-use with it)
EXPORT_COUNT = 0
_LOCK = threading.RLock()


# -- cache key and folder ------------------------------------------------------------------
def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import torch
    import transformers

    from anyseg.version import __version__

    return {"anyseg": __version__, "torch": torch.__version__, "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__, "transformers": transformers.__version__}


def _weights_identity(predictor: Any) -> dict[str, Any]:
    folder = getattr(predictor, "folder", None)
    if folder is not None and (Path(folder) / "config.json").is_file():
        folder = Path(folder)
        files = {}
        for f in sorted(folder.iterdir()):
            if f.is_file() and f.suffix in (".safetensors", ".bin", ".pt", ".pth"):
                st = f.stat()
                files[f.name] = [st.st_size, st.st_mtime_ns]
        return {"config": hashlib.sha256((folder / "config.json").read_bytes()).hexdigest(), "files": files}
    # no folder: hash the parameters themselves (slower, but exact)
    import torch

    h = hashlib.sha256(predictor.model.config.to_json_string().encode())
    with torch.no_grad():
        for name, p in sorted(predictor.model.state_dict().items()):
            h.update(name.encode())
            h.update(p.detach().float().cpu().numpy().tobytes())
    return {"params": h.hexdigest()}


def cache_key(predictor: Any, options: dict[str, Any]) -> str:
    payload = {"model": predictor.name, "family": predictor.family, "frame": predictor.frame,
               "weights": _weights_identity(predictor), "versions": _versions(), "format": EXPORT_FORMAT,
               "options": options}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def _writable(root: Path) -> bool:
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=root, prefix=".probe-"):
            pass
        return True
    except OSError:
        return False


def cache_root(predictor: Any) -> Path:
    """``<weights folder>/.anyseg-onnx``, or ``~/.cache/anyseg/onnx`` when that is not writable."""
    folder = getattr(predictor, "folder", None)
    if folder is not None:
        root = Path(folder) / ".anyseg-onnx"
        if _writable(root):
            return root
    return Path(os.path.expanduser("~")) / ".cache" / "anyseg" / "onnx"


# -- export --------------------------------------------------------------------------------
def _options(quantize: bool, quantize_decoder: bool = False) -> dict[str, Any]:
    opts: dict[str, Any] = {"opset": OPSET, "quantize": bool(quantize)}
    if quantize:
        opts.update(weight_type="QInt8", per_channel=True, op_types=list(INT8_OPS), decoder=bool(quantize_decoder),
                    encoder_fp32=list(INT8_KEEP_FP32))
    return opts


def _export_fp32(predictor: Any, out: Path) -> None:
    import onnx
    import torch

    model = predictor.model
    dev = next(model.parameters()).device
    enc = encoder_module(model)
    dec = decoder_module(model)
    s = predictor.frame
    pixel = torch.zeros(1, 3, s, s, device=dev)
    sam2 = _sam2(predictor.family)
    with torch.no_grad():
        maps = enc(pixel)
    maps = tuple(maps) if isinstance(maps, (list, tuple)) else (maps,)
    low = int(maps[0].shape[-1]) * 4
    dummy = (maps[0], torch.tensor([[[10.0, 20.0], [30.0, 40.0]], [[50.0, 60.0], [0.0, 0.0]]], device=dev),
             torch.tensor([[1, 0], [1, -1]], dtype=torch.int64, device=dev),
             torch.zeros(1, 1, low, low, device=dev), torch.zeros(1, device=dev), *maps[1:])
    enc_out = ["image_embeddings"] + (["high_res_0", "high_res_1"] if sam2 else [])
    with torch.no_grad():
        torch.onnx.export(enc, (pixel,), str(out / "encoder.onnx"), dynamo=False, opset_version=OPSET,
                          input_names=["pixel_values"], output_names=enc_out)
        torch.onnx.export(dec, dummy, str(out / "decoder.onnx"), dynamo=False, opset_version=OPSET,
                          input_names=["image_embeddings", "point_coords", "point_labels", "mask_input",
                                       "has_mask_input"] + enc_out[1:],
                          output_names=["masks", "iou_predictions"],
                          dynamic_axes={"point_coords": {0: "batch", 1: "num_points"},
                                        "point_labels": {0: "batch", 1: "num_points"},
                                        "masks": {0: "batch"}, "iou_predictions": {0: "batch"}})
    for name in ("encoder.onnx", "decoder.onnx"):
        onnx.checker.check_model(str(out / name))  # path form: works for > 2 GB models too


def _fp32_nodes(path: Path) -> list[str]:
    """The encoder's MatMuls in :data:`INT8_KEEP_FP32` (Hiera backbone node names; none for SAM's ViT)."""
    import re

    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    weights = {t.name for t in graph.initializer}
    block = re.compile(r"/backbone/blocks\.(\d+)/")
    stage_proj = re.compile(r"/backbone/blocks\.\d+/proj/")
    matmuls = [n.name for n in graph.node if n.op_type in INT8_OPS and block.search(n.name)
               and any(i in weights for i in n.input)]  # activation x activation MatMuls are not quantized
    # the last stage starts at the last block with a stage-transition projection
    starts = [int(block.search(n).group(1)) for n in matmuls if stage_proj.search(n)]
    last = max(starts) if starts else None
    return [n for n in matmuls if stage_proj.search(n) or "/mlp/proj_out/" in n
            or (last is not None and int(block.search(n).group(1)) >= last)]


def _quantize(src: Path, out: Path, decoder: bool) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    if not decoder:  # the decoder stays fp32: see OnnxRuntimePredictor
        shutil.copyfile(src / "decoder.onnx", out / "decoder.onnx")
    for name in ("encoder.onnx", "decoder.onnx") if decoder else ("encoder.onnx",):
        keep = _fp32_nodes(src / name) if name == "encoder.onnx" else []
        quantize_dynamic(str(src / name), str(out / name), weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=list(INT8_OPS), nodes_to_exclude=keep)
        onnx.checker.check_model(str(out / name))


def export(predictor: Any, out_dir: str | os.PathLike | None = None, quantize: bool = False,
           quantize_decoder: bool = False) -> Path:
    """Export (or re-use) the encoder and decoder of ``predictor``; returns the artifact folder.

    With ``out_dir`` the graphs are written there unconditionally; without it they go to the
    cache folder keyed on the weights, versions and options, and are re-used when present.
    """
    family = getattr(predictor, "family", "")
    record = find_family(family)
    if record is None or "onnx" not in record.runtimes:
        supported = ", ".join(f.name for f in families_with("promptable") if "onnx" in f.runtimes)
        raise ModelError(f"the ONNX runtime supports the {supported} family; "
                         f"{getattr(predictor, 'name', predictor)!r} is {family!r} (use --runtime torch)")
    options = _options(quantize, quantize_decoder)
    if out_dir is not None:
        target = Path(out_dir)
        target.mkdir(parents=True, exist_ok=True)
        if quantize:
            with tempfile.TemporaryDirectory() as tmp:
                _run_export(predictor, Path(tmp), quantize=False)
                _run_export_quant(Path(tmp), target, quantize_decoder)
        else:
            _run_export(predictor, target, quantize=False)
        _write_manifest(target, predictor, options, cache_key(predictor, options))
        return target
    key = cache_key(predictor, options)
    final = cache_root(predictor) / key
    with _LOCK:
        if (final / "manifest.json").is_file():
            return final
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}.tmp-", dir=final.parent))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it 0700; the cache is shared like the weights
        try:
            if quantize:
                src = export(predictor, None, quantize=False)  # the cached fp32 graphs
                _run_export_quant(src, tmp, quantize_decoder)
            else:
                _run_export(predictor, tmp, quantize=False)
            _write_manifest(tmp, predictor, options, key)
            try:
                os.replace(tmp, final)
            except OSError:  # another process got there first
                if not (final / "manifest.json").is_file():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _run_export(predictor: Any, out: Path, quantize: bool) -> None:
    global EXPORT_COUNT
    try:
        _export_fp32(predictor, out)
    except (ModelError, InputError):
        raise
    except Exception as exc:
        raise ModelError(f"ONNX export of {predictor.name} failed: {type(exc).__name__}: {exc}") from exc
    EXPORT_COUNT += 1


def _run_export_quant(src: Path, out: Path, decoder: bool) -> None:
    global EXPORT_COUNT
    try:
        _quantize(src, out, decoder)
    except Exception as exc:
        raise ModelError(f"int8 quantization of the ONNX graphs failed: {type(exc).__name__}: {exc}") from exc
    EXPORT_COUNT += 1


def _write_manifest(folder: Path, predictor: Any, options: dict[str, Any], key: str) -> None:
    (folder / "manifest.json").write_text(json.dumps(
        {"key": key, "model": predictor.name, "family": predictor.family, "frame": predictor.frame,
         "options": options, "versions": _versions(), "format": EXPORT_FORMAT}, indent=1))


def _np(t: Any) -> np.ndarray:
    t = t.detach().cpu().numpy() if hasattr(t, "detach") else np.asarray(t)
    return np.ascontiguousarray(t, dtype=np.float32)


def _sam2(family: str) -> bool:
    """SAM 2's prompt encoding and high-resolution maps (the family record's ``sam2_decoder`` trait)."""
    record = find_family(family)
    return record is not None and "sam2_decoder" in record.traits


# -- the parts -------------------------------------------------------------------------------
class OnnxEncoder:
    """The encoder part: the exported image encoder in an onnxruntime session, returning what
    ``model.get_image_embeddings`` does (SAM 2: ``[high_res_0, high_res_1, embedding]``)."""

    def __init__(self, session: Any) -> None:
        self.session = session

    def run(self, pixel_values: Any) -> list[np.ndarray]:
        """The graph's outputs: ``[image_embeddings]`` or ``[image_embeddings, high_res_0, high_res_1]``."""
        x = np.ascontiguousarray(np.asarray(pixel_values, dtype=np.float32))
        return self.session.run(None, {"pixel_values": x})

    def __call__(self, pixel_values: Any) -> Any:
        import torch

        maps = [torch.from_numpy(m) for m in self.run(pixel_values.cpu().numpy())]
        return [maps[1], maps[2], maps[0]] if len(maps) == 3 else maps[0]  # the torch predictor's layout


class OnnxDecoder:
    """The decoder part: point / box prompts through the torch predictor's rescheduled decoder
    (``mode="auto"``, where it has one; ``"torch"`` insists), mask inputs and ``mode="onnx"``
    through the exported graph, which runs as ``predictor.decode`` (the ONNX predictor's graph
    interface, see :class:`OnnxRuntimePredictor`).

    Args:
        session: the decoder graph's onnxruntime session.
        base: the torch :class:`~anyseg.models.sam.SamFamilyPredictor` the runtime was built from.
        mode: one of :data:`DECODERS`.
    """

    def __init__(self, session: Any, base: SamFamilyPredictor, mode: str = "auto") -> None:
        if mode not in DECODERS:
            raise InputError(f"unknown decoder {mode!r}: expected one of {', '.join(DECODERS)}")
        self.session, self.base, self.mode = session, base, mode

    def run(self, image_embeddings: Any, coords: np.ndarray, labels: np.ndarray,
            mask_input: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The graph on ``(B, N, 2)`` model coordinates and ``(B, N)`` labels: all masks and scores."""
        extra: dict[str, np.ndarray] = {}
        if isinstance(image_embeddings, (list, tuple)):
            s0, s1, image_embeddings = (_np(t) for t in image_embeddings)
            extra = {"high_res_0": s0, "high_res_1": s1}
        emb = _np(image_embeddings)
        low = int(emb.shape[-1]) * 4
        has = mask_input is not None
        mask = (np.asarray(mask_input, dtype=np.float32).reshape(1, 1, low, low) if has
                else np.zeros((1, 1, low, low), dtype=np.float32))
        masks, iou = self.session.run(None, {
            "image_embeddings": emb,
            "point_coords": np.ascontiguousarray(coords, dtype=np.float32),
            "point_labels": np.ascontiguousarray(labels, dtype=np.int64),
            "mask_input": mask,
            "has_mask_input": np.array([1.0 if has else 0.0], dtype=np.float32),
            **extra,
        })
        return masks, iou

    def torch_decoder(self) -> Any:
        """The base predictor's rescheduled decoder when this part decodes with it, else ``None``."""
        if self.mode == "onnx":
            return None
        fast = self.base.fast_mask_decoder()
        if fast is None and self.mode == "torch":
            raise InputError(f"{self.base.name} has no rescheduled torch decoder; use decoder='onnx'")
        return fast

    def _as_base(self, embedding: Embedding) -> Embedding:
        """The same features under the torch predictor's id (its decoder reads any encoder's output)."""
        return dataclasses.replace(embedding, model_id=self.base.model_id)

    def decode(self, predictor: Any, embedding: Embedding, geo: Any, prompts: list[Prompt],
               multimask: bool) -> list[Masks]:
        import torch

        first = prompts[0]
        has_mask = first.mask_logits is not None or first.mask is not None
        if not has_mask and self.torch_decoder() is not None:
            return self.base.decode_prompts(self._as_base(embedding), geo, prompts, multimask)
        pts = [self._prompt_points(predictor.family, geo, p) for p in prompts]
        coords = np.stack([c for c, _ in pts])
        labels = np.stack([lab for _, lab in pts])
        mask_input = self.base.mask_input(geo, first, self.base.low_res_size(embedding)) if has_mask else None
        all_masks, all_scores = predictor.decode(embedding.features["image_embeddings"], coords, labels, mask_input)
        logits_all, scores_all = self._select(all_masks, all_scores, multimask)
        results = []
        for j in range(len(prompts)):
            scores = scores_all[j]
            order = np.argsort(-scores, kind="stable") if multimask else np.arange(1)
            lr = torch.from_numpy(np.ascontiguousarray(logits_all[j][order]))
            results.append(Masks(masks=predictor.postprocess(lr, geo), scores=scores[order], logits=lr.numpy()))
        return results

    def decode_points(self, predictor: Any, embedding: Embedding, points_xy: np.ndarray, multimask: bool = True,
                      mask_inputs: Any | None = None) -> tuple[Any, Any]:
        """As :meth:`SamFamilyPredictor.decode_points` (one positive click per row), without mask inputs."""
        import torch

        if mask_inputs is not None:
            raise InputError("the ONNX runtime decodes point grids without mask inputs; use --runtime torch")
        if self.torch_decoder() is not None:
            return self.base.decode_points(self._as_base(embedding), points_xy, multimask=multimask)
        geo = predictor.geometry(embedding.original_size)
        pts = geo.to_model(np.asarray(points_xy, dtype=np.float64).reshape(-1, 2)).astype(np.float32)
        b = len(pts)
        coords = np.concatenate([pts[:, None], np.zeros((b, 1, 2), np.float32)], axis=1)
        labels = np.tile(np.array([[1, -1]], dtype=np.int64), (b, 1))
        masks, iou = predictor.decode(embedding.features["image_embeddings"], coords, labels)
        masks, iou = self._select(masks, iou, multimask)
        return torch.from_numpy(np.ascontiguousarray(masks)), torch.from_numpy(np.ascontiguousarray(iou))

    @staticmethod
    def _prompt_points(family: str, geo: Any, p: Prompt) -> tuple[np.ndarray, np.ndarray]:
        """One prompt as transformers' prompt encoder sees it: points, then box corners or a pad point."""
        sam2 = _sam2(family)
        coords, labels = [], []
        if p.points is not None:
            coords.append(geo.to_model(p.points))
            labels.append(p.labels.astype(np.int64))
        if p.box is not None:
            coords.append(geo.to_model(p.box.reshape(2, 2)))
            labels.append(np.array([2, 3], dtype=np.int64))
        elif p.points is not None:
            coords.append(np.zeros((1, 2)))
            labels.append(np.array([-1], dtype=np.int64))
        if p.box is not None and sam2:  # SAM 2 pads the box corners with a point
            coords.append(np.zeros((1, 2)))
            labels.append(np.array([-1], dtype=np.int64))
        if not coords:  # mask only: SAM adds no sparse token (N = 0 is a valid size), SAM 2 one padding point
            if sam2:  # transformers adds a (0, 0) / -1 point, then pads it like points
                return np.zeros((2, 2), dtype=np.float32), np.array([-1, -1], dtype=np.int64)
            return np.zeros((0, 2), dtype=np.float32), np.zeros(0, dtype=np.int64)
        return np.concatenate(coords).astype(np.float32), np.concatenate(labels)

    def _select(self, masks: np.ndarray, iou: np.ndarray, multimask: bool) -> tuple[np.ndarray, np.ndarray]:
        """The decoder's output selection: tokens 1-3, token 0, or SAM 2's stability fallback."""
        if multimask:
            return masks[:, 1:], iou[:, 1:]
        md = self.base.model.mask_decoder
        if not getattr(md, "dynamic_multimask_via_stability", False):
            return masks[:, :1], iou[:, :1]
        single, single_iou = masks[:, :1], iou[:, :1]
        best = np.argmax(iou[:, 1:], axis=1) + 1  # (B,)
        rows = np.arange(len(best))
        flat = single.reshape(len(single), -1)
        area_i = (flat > md.dynamic_multimask_stability_delta).sum(-1).astype(np.float32)
        area_u = (flat > -md.dynamic_multimask_stability_delta).sum(-1).astype(np.float32)
        stab = np.where(area_u > 0, area_i / np.maximum(area_u, 1), 1.0)
        stable = stab >= md.dynamic_multimask_stability_thresh
        out_m = np.where(stable[:, None, None, None], single, masks[rows, best][:, None])
        out_s = np.where(stable[:, None], single_iou, iou[rows, best][:, None])
        return out_m, out_s


# -- the predictor ---------------------------------------------------------------------------
class OnnxRuntimePredictor(SamFamilyPredictor):
    """A :class:`~anyseg.models.sam.SamFamilyPredictor` whose two networks run in onnxruntime.

    Built from a torch predictor (``base``, whose model, geometry, prompt mapping and
    postprocessing it shares) with :class:`OnnxEncoder` and :class:`OnnxDecoder` parts.
    ``onnx-int8`` quantizes the image encoder's MatMul / Gemm weights (dynamic int8,
    per-channel; SAM 2's accuracy-sensitive Hiera MatMuls stay fp32, see :data:`INT8_KEEP_FP32`)
    and keeps the prompt decoder in fp32 unless ``quantize_decoder``: on ViT-B
    the int8 decoder saved ~7 ms of ~37 ms per click but its logit error was of the order of
    the (random-weight) logits themselves, while the int8 encoder is ~2x faster.

    Attributes:
        base: the torch predictor; ``artifacts``: the folder of the exported graphs;
        ``exported``: whether building this predictor exported them (else a cached export);
        ``decoder``: the decoder mode (:data:`DECODERS`).
    """

    def __init__(self, predictor: Any, runtime: str = "onnx", intra_op_num_threads: int | None = None,
                 providers: list[str] | None = None, artifacts: str | os.PathLike | None = None,
                 spinning: bool = False, quantize_decoder: bool = False, decoder: str = "auto"):
        if runtime not in ONNX_RUNTIMES:
            raise InputError(f"unknown ONNX runtime {runtime!r}: expected {' or '.join(map(repr, ONNX_RUNTIMES))}")
        if decoder not in DECODERS:
            raise InputError(f"unknown decoder {decoder!r}: expected one of {', '.join(DECODERS)}")
        if not isinstance(predictor, SamFamilyPredictor):
            raise InputError(f"the ONNX runtime needs a SAM-family predictor; got {type(predictor).__name__}")
        self.base, self.decoder = predictor, decoder
        exports_before = EXPORT_COUNT
        self.artifacts = Path(artifacts) if artifacts is not None else export(
            predictor, quantize=runtime == "onnx-int8", quantize_decoder=quantize_decoder)
        self.exported = EXPORT_COUNT != exports_before
        self.intra_op_num_threads = intra_op_num_threads
        # onnxruntime's idle worker threads busy-wait by default, stealing the cores torch (or a
        # second session) runs on between calls; off unless asked for
        self.spinning = spinning
        self.providers = providers or ["CPUExecutionProvider"]
        super().__init__(predictor.spec, predictor.model, folder=predictor.folder, device="cpu", mean=predictor.mean,
                         std=predictor.std, encoder=OnnxEncoder(self._session("encoder.onnx")),
                         decoder=OnnxDecoder(self._session("decoder.onnx"), predictor, decoder), runtime=runtime,
                         model_id=f"{predictor.model_id}:{runtime}")

    def _session(self, name: str) -> Any:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self.intra_op_num_threads:
            so.intra_op_num_threads = int(self.intra_op_num_threads)
        if not self.spinning:
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
            so.add_session_config_entry("session.inter_op.allow_spinning", "0")
        try:
            return ort.InferenceSession(str(self.artifacts / name), sess_options=so, providers=self.providers)
        except Exception as exc:
            raise ModelError(f"onnxruntime cannot load {self.artifacts / name}: {type(exc).__name__}: {exc}") from exc

    @property
    def num_parameters(self) -> int:
        return self.base.num_parameters

    # -- the graphs -----------------------------------------------------------------------------
    def encode(self, pixel_values: Any) -> list[np.ndarray]:
        """Encoder outputs: ``[image_embeddings]`` (SAM) or ``[image_embeddings, high_res_0, high_res_1]`` (SAM 2)."""
        return self.image_encoder.run(pixel_values)

    def decode(self, image_embeddings: Any, coords: np.ndarray, labels: np.ndarray,
               mask_input: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Run the decoder graph: ``(B, N, 2)`` model coordinates, ``(B, N)`` labels -> all masks, scores.

        ``image_embeddings`` is ``Embedding.features["image_embeddings"]``: a tensor (SAM) or
        SAM 2's list ``[high_res_0, high_res_1, image_embeddings]``.
        """
        return self.prompt_decoder.run(image_embeddings, coords, labels, mask_input)


def load_runtime(predictor: Predictor, runtime: str, intra_op_num_threads: int | None = None,
                 quantize_decoder: bool = False, decoder: str = "auto") -> Predictor:
    """``predictor`` itself for ``"torch"``, else an :class:`OnnxRuntimePredictor` over it."""
    if runtime not in RUNTIMES:
        raise InputError(f"unknown runtime {runtime!r}: expected one of {', '.join(RUNTIMES)}")
    if runtime == "torch":
        return predictor
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise ModelError(f"runtime {runtime!r} needs onnx and onnxruntime ({exc}); install them or use --runtime torch") from exc
    return OnnxRuntimePredictor(predictor, runtime=runtime, intra_op_num_threads=intra_op_num_threads,
                                quantize_decoder=quantize_decoder, decoder=decoder)
