"""Torch-side fast paths for :class:`~anyseg.models.sam.SamFamilyPredictor`.

    from anyseg.runtime.torch_fast import apply_runtime
    fast = apply_runtime(predictor, "torch-bf16")   # a new predictor; ``predictor`` is unchanged
    emb = fast.embed(image); masks = fast.predict(emb, prompt)

A runtime is a composition, built through ``SamFamilyPredictor``'s public constructor: the
same model with an encoder part (:class:`RuntimeEncoder`: autocast or ``torch.compile`` around
``get_image_embeddings``) and a decoder part (:class:`~anyseg.models.sam.TorchDecoder` with
chunks and shared rows, and the fast decoder's GEMM dtype).

Runtimes (:data:`RUNTIMES`, a view of :mod:`anyseg.runtime.table`):

* ``torch``: the predictor's fp32 path, plus two decoder fast paths for ``predict_batch``
  that give the same numbers: prompts go to the decoder in chunks of ``decode_chunk``
  (:data:`DEFAULT_DECODE_CHUNK`) rather than all at once, and, for prompts without mask
  inputs, the first two-way block's image-side projections run once per chunk instead of
  once per prompt (identical rows; the trick :meth:`SamFamilyPredictor.decode_points` uses).
* ``torch-bf16``: the image encoder under ``torch.autocast("cpu", dtype=torch.bfloat16)``,
  its outputs cast back to float32, and the fast mask decoder's GEMMs under the same autocast
  (LayerNorms and softmaxes stay fp32; on CPUs with native bf16 its GEMMs run ~4x faster than
  fp32). Embeddings get a distinct ``model_id`` (``...@bf16``) so that caches never mix them
  with fp32 ones. Reduced precision: see docs/BENCHMARKS.md for the measured mask IoU.
* ``torch-fp16``: the same under fp16 autocast, on CUDA only (``...@fp16``).
* ``torch-compile``: the image encoder wrapped in ``torch.compile`` (inductor with
  ``freezing``: weights are folded into the compiled graph as constants, so later in-place
  weight changes are not seen; compiled on the first call, ~25-50 s on 2 cores, once since
  the frame is fixed). If compiling fails the predictor warns once and runs eager.

The shared model's weights are never modified, and ``SamFamilyPredictor``'s own defaults
are untouched: only the returned predictor behaves differently. Which families may run these
runtimes is their record's :attr:`~anyseg.models.families.Family.runtimes`.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

from anyseg.errors import InputError
from anyseg.models.sam import SamFamilyPredictor, TorchDecoder
from anyseg.runtime.table import TORCH_RUNTIMES

__all__ = ["RUNTIMES", "apply_runtime", "cpu_bf16_support", "RuntimeEncoder"]

#: the torch backend's runtimes (defined in :mod:`anyseg.runtime.table`)
RUNTIMES = TORCH_RUNTIMES
#: reduced-precision runtimes: autocast dtype name per runtime
AUTOCAST = {"torch-bf16": "bfloat16", "torch-fp16": "float16"}
#: prompts per decoder call in ``predict_batch``: the decoder repeats the image embedding (and
#: SAM 2's high-resolution features) once per prompt, so 64 prompts in one call move ~GBs
#: through memory; chunks of a few run ~2x faster on CPU and bound the peak RSS.
DEFAULT_DECODE_CHUNK = 4


def cpu_bf16_support() -> dict[str, Any]:
    """Whether this CPU does bf16 natively: cpuinfo flags (avx512_bf16, amx_bf16) and oneDNN's view."""
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    info: dict[str, Any] = {"avx512_bf16": "avx512_bf16" in flags, "amx_bf16": "amx_bf16" in flags}
    try:
        import torch

        info["mkldnn_available"] = bool(torch.backends.mkldnn.is_available())
        info["mkldnn_bf16_supported"] = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        info["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    except Exception:  # noqa: BLE001 - informational only
        pass
    info["native"] = bool(info["avx512_bf16"] or info["amx_bf16"])
    return info


#: attention implementation name registered with transformers by :func:`use_chunked_attention`
CHUNKED_ATTENTION = "anyseg_chunked_bf16"
#: query rows per chunk: the (heads x chunk x keys) score block stays in cache
ATTENTION_CHUNK = 512


def _chunked_attention(module: Any, query: Any, key: Any, value: Any, attention_mask: Any = None,
                       dropout: float = 0.0, scaling: float | None = None, is_causal: bool | None = None,
                       **kwargs: Any) -> tuple[Any, None]:
    """Global attention over long bf16 sequences as chunked matmul + softmax; else transformers' SDPA.

    SDPA's CPU flash kernel does not speed up in bf16 (measured: 173 ms for a 4 x 4096 x 96
    global block of Hiera-T both in fp32 and bf16), while bf16 GEMMs run ~4x faster than fp32
    on CPUs with native bf16; chunks of :data:`ATTENTION_CHUNK` query rows keep the score block
    in cache (104 ms for the same block). fp32 inputs, masks, causal attention, dropout and
    short sequences go to transformers' SDPA path unchanged, so a model sharing this setting
    computes exactly as before in fp32.
    """
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    long_bf16 = (query.dtype == torch.bfloat16 and attention_mask is None and not is_causal and not dropout
                 and query.shape[-2] >= 2 * ATTENTION_CHUNK and query.device.type == "cpu")
    if not long_bf16:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, is_causal=is_causal, **kwargs)
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    with torch.autocast("cpu", enabled=False):
        kt = (key * scale).transpose(-1, -2).contiguous()
        v = value.contiguous()
        out = torch.empty(*query.shape[:-1], v.shape[-1], dtype=query.dtype)
        for i in range(0, query.shape[-2], ATTENTION_CHUNK):
            a = torch.matmul(query[..., i:i + ATTENTION_CHUNK, :], kt).softmax(dim=-1)
            out[..., i:i + ATTENTION_CHUNK, :] = torch.matmul(a, v)
    return out.transpose(1, 2).contiguous(), None


def use_chunked_attention(model: Any) -> bool:
    """Route the SAM 2 family image encoder's attention through :func:`_chunked_attention`.

    Sets the Hiera backbone config's attention implementation (shared by the model's
    predictors: fp32 calls still reach SDPA, see above). Returns whether a backbone was found.
    """
    from transformers import AttentionInterface

    AttentionInterface.register(CHUNKED_ATTENTION, _chunked_attention)
    configs = {id(m.config): m.config for m in model.modules()
               if type(m).__name__.endswith("MultiScaleAttention") and hasattr(m, "config")}
    for cfg in configs.values():
        cfg._attn_implementation = CHUNKED_ATTENTION
    return bool(configs)


class RuntimeEncoder:
    """The encoder part of a torch runtime: ``model.get_image_embeddings`` under the runtime's
    autocast (float32 outputs) or through ``torch.compile`` (eager when compiling fails)."""

    def __init__(self, model: Any, runtime: str) -> None:
        self.model = model
        self.runtime = runtime
        self.compiled: Callable[..., Any] | None = None
        self.compile_failed: str | None = None
        if runtime == "torch-compile":
            import torch

            try:
                self.compiled = torch.compile(model.get_image_embeddings, dynamic=False, options={"freezing": True})
            except Exception as exc:  # noqa: BLE001 - e.g. no compiler available on this platform
                self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        self.compiled = None
        self.compile_failed = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        warnings.warn(f"torch.compile of the image encoder failed, running eager ({self.compile_failed})",
                      RuntimeWarning, stacklevel=3)

    def __call__(self, pixel_values: Any) -> Any:
        import torch

        if self.runtime in AUTOCAST:
            with torch.autocast(pixel_values.device.type, dtype=getattr(torch, AUTOCAST[self.runtime])):
                out = self.model.get_image_embeddings(pixel_values)
            return _to_float32(out)
        if self.compiled is not None:
            try:
                return self.compiled(pixel_values)
            except Exception as exc:  # noqa: BLE001 - inductor errors surface on the first call
                self._fail(exc)
        return self.model.get_image_embeddings(pixel_values)


def _to_float32(x: Any) -> Any:
    if isinstance(x, (list, tuple)):
        return type(x)(_to_float32(t) for t in x)
    return x.float() if hasattr(x, "float") and x.is_floating_point() else x


def apply_runtime(predictor: SamFamilyPredictor, runtime: str,
                  decode_chunk: int = DEFAULT_DECODE_CHUNK) -> SamFamilyPredictor:
    """A new predictor running ``predictor``'s model with ``runtime`` (one of :data:`RUNTIMES`).

    ``decode_chunk``: prompts per decoder call in ``predict_batch`` (same results, less memory).
    The model (weights) is shared, not copied; ``predictor`` itself is not changed.
    Raises :class:`~anyseg.errors.InputError` for an unknown runtime.
    """
    if int(decode_chunk) < 1:
        raise InputError(f"decode_chunk must be >= 1; got {decode_chunk}")
    if runtime not in RUNTIMES:
        raise InputError(f"unknown torch runtime {runtime!r}; expected one of {', '.join(RUNTIMES)}")
    if not isinstance(predictor, SamFamilyPredictor):
        raise InputError(f"apply_runtime needs a SAM-family predictor; got {type(predictor).__name__}")
    dtype = None
    if runtime in AUTOCAST:
        import torch

        if runtime == "torch-fp16" and not str(predictor.device).startswith("cuda"):
            raise InputError("torch-fp16 runs on CUDA devices only (CPUs have no fast fp16 GEMMs); "
                             "use torch-bf16 or torch on CPU")
        dtype = getattr(torch, AUTOCAST[runtime])
        if runtime == "torch-bf16" and not str(predictor.device).startswith("cuda"):
            use_chunked_attention(predictor.model)  # on CUDA, SDPA's kernels already win in bf16
    base_id = predictor.model_id
    model_id = f"{base_id}@{runtime.removeprefix('torch-')}" if runtime in AUTOCAST else base_id  # ...@bf16 / @fp16
    return SamFamilyPredictor(predictor.spec, predictor.model, folder=predictor.folder, device=predictor.device,
                              mean=predictor.mean, std=predictor.std, encoder=RuntimeEncoder(predictor.model, runtime),
                              decoder=TorchDecoder(chunk=int(decode_chunk), share_rows=True), runtime=runtime,
                              model_id=model_id, decoder_dtype=dtype)
