"""A CPU-friendly schedule of the SAM / SAM 2 mask decoder: transformers' weights and math.

transformers' ``SamMaskDecoder`` / ``Sam2MaskDecoder`` recompute everything from the image
embedding on every click. On a CPU a click then costs ~60 ms, most of it not in the network's
arithmetic: adds and layout copies of 4096 x 256 image-token tensors, SDPA's flash kernel
called on 4096-by-7 attentions it is not built for, transposed convolutions and channel-first
LayerNorms that permute their inputs. :class:`FastMaskDecoder` runs the same layers with the
same weights in another order:

* **per image, once** (kept for the last few embeddings, keyed by the embedding tensor): the
  dense positional encoding (constant), ``src`` = embedding + the no-mask dense prompt, and the
  first two-way block's image-side projections, which read only ``src``: keys and values of
  the token-to-image attention and queries of the image-to-token attention, already split into
  heads; SAM 2's high-resolution features in the layout the upscaling adds them in;
* **per click**: attentions between the few prompt tokens and the 4096 image tokens as two
  small matmuls and a softmax; the transposed convolutions as GEMMs in channels-last layout
  (a 2x2 stride-2 transposed convolution is a per-pixel linear map to 2 x 2 x C' values);
  LayerNorm2d as ``layer_norm`` over the last axis; only the mask tokens that are returned go
  through the final product with the upscaled embedding.

Masks and scores equal transformers' decoder up to float rounding (tested against the
model's own forward for SAM, SAM 2 and the SAM 3 tracker on tiny random checkpoints;
``python -m bench.latency`` reports IoU and score differences on the real-size
architectures). Used by :class:`~anyseg.models.sam.SamFamilyPredictor` for point and box
prompts without a mask input; mask inputs, SAM-HQ and unknown decoders take transformers'
forward.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from typing import Any

__all__ = ["FastMaskDecoder", "supports_fast_decoder"]

#: embeddings whose per-image decoder state is kept (a UI alternates between a few images)
CACHE_IMAGES = 4


def supports_fast_decoder(model: Any, family: str) -> bool:
    """Whether ``model``'s mask decoder has the SAM / SAM 2 layout this schedule reproduces
    (its family record has the ``fast_decoder`` trait, and the modules are there)."""
    from anyseg.models.families import find_family

    record = find_family(family)
    if record is None or "fast_decoder" not in record.traits:
        return False
    dec = getattr(model, "mask_decoder", None)
    tr = getattr(dec, "transformer", None)
    need = ("iou_token", "mask_tokens", "upscale_conv1", "upscale_conv2", "upscale_layer_norm",
            "output_hypernetworks_mlps", "iou_prediction_head")
    if dec is None or tr is None or not all(hasattr(dec, n) for n in need):
        return False
    if not hasattr(model, "get_image_wide_positional_embeddings") or not hasattr(model, "prompt_encoder"):
        return False
    return all(hasattr(layer, a) for layer in tr.layers for a in (
        "self_attn", "cross_attn_token_to_image", "cross_attn_image_to_token", "mlp",
        "layer_norm1", "layer_norm2", "layer_norm3", "layer_norm4", "skip_first_layer_pe"))


def _heads(x: Any, n: int) -> Any:
    """``(B, L, H*d)`` -> ``(B, H, L, d)`` (a view)."""
    b, length, c = x.shape
    return x.view(b, length, n, c // n).transpose(1, 2)


def _merge(x: Any) -> Any:
    """``(B, H, L, d)`` -> ``(B, L, H*d)``."""
    b, h, length, d = x.shape
    return x.transpose(1, 2).reshape(b, length, h * d)


def _attend(q: Any, k: Any, v: Any, scaling: float) -> Any:
    """softmax(q k^T * scaling) v for short-by-long or long-by-short shapes (two matmuls)."""
    import torch

    a = torch.matmul(q, k.transpose(-1, -2))
    a.mul_(scaling)
    return torch.matmul(a.softmax(dim=-1), v)


def _mm(a: Any, b: Any, dt: Any) -> Any:
    """``a @ b``; with ``dt`` (e.g. bf16) the operands are cast and the product comes back as float32."""
    import torch

    if dt is None or a.device.type not in ("cpu", "cuda"):
        return torch.matmul(a, b)
    return torch.matmul(a.to(dt), b.to(dt)).float()


def _out(attn: Any) -> Any:
    return attn.o_proj if hasattr(attn, "o_proj") else attn.out_proj


class FastMaskDecoder:
    """The mask decoder of a transformers ``SamModel`` / ``Sam2Model``-like model, rescheduled."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.dec = model.mask_decoder
        self.v2 = hasattr(self.dec, "obj_score_token")  # SAM 2 family: object-score token, high-res skips
        self._pe: Any = None
        self._weights: dict[Any, Any] = {}  # per-head weight views and pe terms, built on first use
        self._images: OrderedDict[int, tuple[Any, dict[str, Any]]] = OrderedDict()
        self._lock = threading.Lock()  # the service decodes from worker threads

    # -- per-image state ------------------------------------------------------------------
    def _positional(self) -> Any:
        if self._pe is None:
            pe = self.model.get_image_wide_positional_embeddings()  # (1, C, h, w)
            self._pe = pe[0].flatten(1).transpose(0, 1).contiguous()  # (N, C)
        return self._pe

    def image_state(self, image_embeddings: Any) -> dict[str, Any]:
        """The per-image tensors for one embedding (computed once, then cached)."""
        last = image_embeddings[-1] if isinstance(image_embeddings, (list, tuple)) else image_embeddings
        key = id(last)
        with self._lock:
            hit = self._images.get(key)
            if hit is not None and hit[0]() is last:
                self._images.move_to_end(key)
                return hit[1]
        state = self._build_state(image_embeddings, last)
        with self._lock:
            self._images[key] = (weakref.ref(last), state)
            while len(self._images) > CACHE_IMAGES:
                self._images.popitem(last=False)
        return state

    def _build_state(self, image_embeddings: Any, last: Any) -> dict[str, Any]:
        if last.shape[0] != 1:
            raise ValueError("FastMaskDecoder takes one image embedding at a time")
        pe = self._positional()
        c, h, w = last.shape[1:]
        dense = self.model.prompt_encoder.no_mask_embed.weight.reshape(1, c)
        src = (last[0].flatten(1).transpose(0, 1) + dense).contiguous()  # (N, C)
        layer = self.dec.transformer.layers[0]
        t2i, i2t = layer.cross_attn_token_to_image, layer.cross_attn_image_to_token
        kin = (src + pe)[None]
        state: dict[str, Any] = {
            "hw": (h, w), "src": src[None],
            "k1": _heads(t2i.k_proj(kin), t2i.num_attention_heads).contiguous(),  # (1, H, N, d)
            "v1": _heads(t2i.v_proj(src[None]), t2i.num_attention_heads).contiguous(),
            "q1": _heads(i2t.q_proj(kin), i2t.num_attention_heads).contiguous(),
        }
        state["add1"], state["add2"] = self._upscale_addends(image_embeddings, h, w)
        return state

    # -- per-model weight views -----------------------------------------------------------
    def _per_head(self, linear: Any, nh: int) -> tuple[Any, Any]:
        """A projection's weight as ``(H, d, C)`` and bias as ``(H, 1, d)``."""
        key = ("heads", id(linear))
        if key not in self._weights:
            w = linear.weight
            self._weights[key] = (w.reshape(nh, w.shape[0] // nh, w.shape[1]).contiguous(),
                                  linear.bias.reshape(nh, 1, -1))
        return self._weights[key]

    def _pe_term(self, linear: Any, nh: int) -> Any:
        """``(pe @ W^T + b)`` per head as ``(H, d, N)``: a projection of ``keys + pe`` minus ``keys``'s part."""
        key = ("pe", id(linear))
        if key not in self._weights:
            c = self._positional() @ linear.weight.t() + linear.bias  # (N, Ci)
            self._weights[key] = c.reshape(c.shape[0], nh, -1).permute(1, 2, 0).contiguous()
        return self._weights[key]

    def _out_heads(self, attn: Any) -> tuple[Any, Any]:
        """``o_proj`` weight split per head, ``(H, d, C)``, and its bias."""
        key = ("out", id(attn))
        if key not in self._weights:
            o = _out(attn)
            nh = attn.num_attention_heads
            c_out, c_in = o.weight.shape
            self._weights[key] = (o.weight.t().reshape(nh, c_in // nh, c_out).contiguous(), o.bias)
        return self._weights[key]

    # -- attentions between T tokens and the N image tokens ---------------------------------
    def _scores(self, tok: Any, proj: Any, keys: tuple[Any, Any], nh: int, dt: Any = None) -> Any:
        """``tok_h @ proj(keys + pe)_h^T`` for every head, ``(B, H, T, N)``, without projecting ``keys``.

        ``keys``: ``(keys, keys^T)`` from :meth:`_low`.

        ``(keys + pe) W_h^T + b_h`` is never formed: the T tokens go through ``W_h`` instead
        (``(tok_h W_h) keys^T + tok_h (pe W_h^T + b_h)^T``), a GEMM of inner size C over H * T rows
        rather than one of N rows: half the multiply-adds for SAM's H * T = 8 * 8 < C / 2 = 128.
        """
        import torch

        w, _ = self._per_head(proj, nh)
        b, _, t, _ = tok.shape
        tw = torch.matmul(tok, w)  # (B, H, T, C)
        s = _mm(tw.reshape(b, nh * t, -1), keys[1], dt).view(b, nh, t, -1)
        return s.add_(torch.matmul(tok, self._pe_term(proj, nh)))

    def _token_to_image(self, attn: Any, queries: Any, qpe: Any, keys: tuple[Any, Any], dt: Any = None) -> Any:
        """The token-to-image attention with its ``o_proj``, ``(B, T, C)``, for ``keys`` of any layer.

        Values: the attention rows sum to 1, so ``A_h (keys W_h^T + b_h) = (A_h keys) W_h^T + b_h``.
        """
        import torch

        nh = attn.num_attention_heads
        q = _heads(attn.q_proj(queries + qpe), nh)
        a = self._scores(q, attn.k_proj, keys, nh, dt).mul_(attn.scaling).softmax(dim=-1)  # (B, H, T, N)
        b, _, t, n = a.shape
        ak = _mm(a.view(b, nh * t, n), keys[0], dt).view(b, nh, t, -1)  # (B, H, T, C)
        wv, bv = self._per_head(attn.v_proj, nh)
        return _out(attn)(_merge(torch.matmul(ak, wv.transpose(1, 2)) + bv))

    def _image_to_token(self, attn: Any, scores: Any, queries: Any, dt: Any = None) -> Any:
        """The image-to-token attention's output, ``o_proj`` included: ``(B, N, C)``.

        ``scores``: ``(B, H, T, N)`` before scaling. The image tokens attend to only ``T`` prompt
        tokens, so the attention matrix has rank ``H * T``:
        ``o_proj(merge_h(A_h V_h)) = [A_1 .. A_H] @ [V_1 W_1; ..; V_H W_H] + b``, a GEMM with inner
        size ``H * T`` instead of the internal width. The softmax runs over the token axis laid
        out as rows, where it is ~20x faster than over a last axis of size T.
        """
        import torch

        nh = attn.num_attention_heads
        vt = _heads(attn.v_proj(queries), nh)  # (B, H, T, d)
        a = scores.mul_(attn.scaling).softmax(dim=-2)
        wh, bias = self._out_heads(attn)
        u = torch.matmul(vt, wh)  # (B, H, T, C)
        b, _, t, n = a.shape
        if dt is None:
            return torch.baddbmm(bias, a.reshape(b, nh * t, n).transpose(1, 2), u.reshape(b, nh * t, -1))
        return _mm(a.reshape(b, nh * t, n).transpose(1, 2), u.reshape(b, nh * t, -1), dt).add_(bias)

    # -- one decoder call -----------------------------------------------------------------
    def __call__(self, image_embeddings: Any, sparse: Any, multimask: bool, gemm_dtype: Any = None) -> tuple[Any, Any]:
        """``sparse``: ``(B, T, C)`` prompt-encoder tokens. Returns ``(masks (B, M, 4h, 4w), iou (B, M))``.

        ``M`` = 3 with ``multimask``, else 1 (SAM 2's stability fallback included), in the
        decoder's order, as transformers' ``pred_masks`` / ``iou_scores`` for one image.

        ``gemm_dtype`` (e.g. ``torch.bfloat16``): the image-sized GEMMs (attention scores and
        values over the image tokens, the image-to-token output, the upscaling and the final
        mask product) run in that dtype with float32 results; everything on the few prompt
        tokens (projections, MLPs, the IoU head), LayerNorms, softmaxes and GELUs stay float32,
        so the scores that rank the candidates lose little. Outputs are float32.
        """
        import torch

        dt = gemm_dtype
        st = self.image_state(image_embeddings)
        dec, tr = self.dec, self.dec.transformer
        b = sparse.shape[0]
        heads = [dec.iou_token.weight, dec.mask_tokens.weight]
        if self.v2:
            heads.insert(0, dec.obj_score_token.weight)
        out_tokens = torch.cat(heads, dim=0)
        n_out = out_tokens.shape[0]
        qpe = torch.cat([out_tokens[None].expand(b, -1, -1), sparse.to(out_tokens.dtype)], dim=1)  # (B, T, C)
        queries, keys = qpe, st["src"]
        for li, layer in enumerate(tr.layers):
            sa = layer.self_attn
            if layer.skip_first_layer_pe:
                queries = self._self_attention(sa, queries, queries, queries)
            else:
                q = queries + qpe
                queries = queries + self._self_attention(sa, q, q, queries)
            queries = layer.layer_norm1(queries)

            t2i, i2t = layer.cross_attn_token_to_image, layer.cross_attn_image_to_token
            if li == 0:  # keys are the image's own: projections cached per image
                q = _heads(t2i.q_proj(queries + qpe), t2i.num_attention_heads)
                attn = _out(t2i)(_merge(_attend(q, st["k1"], st["v1"], t2i.scaling)))
            else:
                keys_dt = self._low(keys, dt)  # cast (and transposed) once for this layer's GEMMs
                attn = self._token_to_image(t2i, queries, qpe, keys_dt, dt)
            queries = layer.layer_norm2(queries + attn)
            queries = layer.layer_norm3(queries + layer.mlp(queries))

            nh = i2t.num_attention_heads
            kt = _heads(i2t.k_proj(queries + qpe), nh)  # (B, H, T, d)
            if li == 0:
                scores = torch.matmul(kt, st["q1"].transpose(-1, -2))  # (B, H, T, N)
            else:
                scores = self._scores(kt, i2t.q_proj, keys_dt, nh, dt)
            keys = layer.layer_norm4(self._image_to_token(i2t, scores, queries, dt).add_(keys))  # fresh: add in place

        fa = tr.final_attn_token_to_image
        keys_dt = self._low(keys, dt)
        queries = tr.layer_norm_final_attn(queries + self._token_to_image(fa, queries, qpe, keys_dt, dt))

        first_mask = n_out - dec.num_mask_tokens
        iou = dec.iou_prediction_head(queries[:, first_mask - 1])  # (B, num_mask_tokens)
        dynamic = self.v2 and not multimask and getattr(dec, "dynamic_multimask_via_stability", False)
        wanted = list(range(1, dec.num_mask_tokens)) if multimask else (
            list(range(dec.num_mask_tokens)) if dynamic else [0])
        hyper = torch.stack([dec.output_hypernetworks_mlps[i](queries[:, first_mask + i]) for i in wanted], dim=1)
        masks = self._upscale(keys_dt[0], st, hyper, dt)  # (B, len(wanted), 4h, 4w)
        iou = iou[:, wanted]
        if dynamic:
            m, s = dec._dynamic_multimask_via_stability(masks[None], iou[None])
            return m[0], s[0]
        return masks, iou

    @staticmethod
    def _low(keys: Any, dt: Any) -> tuple[Any, Any]:
        """``(keys, keys^T)`` for the image-sized GEMMs: fp32 as is with a transposed view (fp32 GEMMs
        take it without copying), else cast to ``dt`` with a contiguous transpose (bf16 GEMMs copy a
        transposed operand on every call; one copy per layer instead)."""
        if dt is None:
            return keys, keys.transpose(1, 2)
        k = keys.to(dt)
        return k, k.transpose(1, 2).contiguous()

    @staticmethod
    def _self_attention(attn: Any, q: Any, k: Any, v: Any) -> Any:
        nh = attn.num_attention_heads
        o = _attend(_heads(attn.q_proj(q), nh), _heads(attn.k_proj(k), nh), _heads(attn.v_proj(v), nh), attn.scaling)
        return _out(attn)(_merge(o))

    def _upscale(self, keys: Any, st: dict[str, Any], hyper: Any, dt: Any = None) -> Any:
        """Transposed convs as GEMMs, skips and biases as the GEMMs' addends, LayerNorm, GELU, hyper product.

        A 2x2 stride-2 transposed convolution maps each input pixel to a 2 x 2 x C' block, and
        LayerNorm2d / GELU are per pixel, so the upscaling runs in the GEMMs' own pixel order
        (``(h, w, i1, j1, i2, j2)`` for output pixel ``(4h + 2 i1 + i2, 4w + 2 j1 + j2)``): the
        skips are stored in that order once per image and only the final masks are permuted.
        """
        import torch
        import torch.nn.functional as F

        dec = self.dec
        b, n, c = keys.shape
        h, w = st["hw"]
        w1, w2 = self._upscale_weights()
        add1, add2 = st["add1"], st["add2"]
        ln = dec.upscale_layer_norm
        o1 = w1.shape[1] // 4
        o2 = w2.shape[1] // 4
        if dt is None:
            y = torch.baddbmm(add1, keys, w1.expand(b, -1, -1))  # (B, N, 4*o1): (h, w, i1, j1, o1)
            y = F.gelu(F.layer_norm(y.view(b, 4 * n, o1), (o1,), ln.weight, ln.bias, ln.eps))
            z = torch.baddbmm(add2, y, w2.expand(b, -1, -1))  # (B, 4N, 4*o2): (h, w, i1, j1, i2, j2, o2)
            z = F.gelu(z)
            masks = torch.bmm(z.view(b, 16 * n, o2), hyper.transpose(1, 2))  # (B, 16N, M)
        else:  # reduced precision: the upscaled maps stay in dt between the GEMMs (LayerNorm accumulates in fp32)
            low = self._low_terms(st, dt)
            y = torch.matmul(keys, low["w1"]).add_(low["add1"])  # keys arrive in dt
            y = F.gelu(F.layer_norm(y.view(b, 4 * n, o1), (o1,), low["ln_w"], low["ln_b"], ln.eps))
            z = F.gelu(torch.matmul(y, low["w2"]).add_(low["add2"]))
            masks = torch.matmul(z.view(b, 16 * n, o2), hyper.transpose(1, 2).to(dt)).float()
        m = hyper.shape[1]
        masks = masks.view(b, h, w, 2, 2, 2, 2, m).permute(0, 7, 1, 3, 5, 2, 4, 6)  # (B, M, h, i1, i2, w, j1, j2)
        return masks.reshape(b, m, 4 * h, 4 * w)

    def _low_terms(self, st: dict[str, Any], dt: Any) -> dict[str, Any]:
        """The upscaling's weights and addends in ``dt`` (per model / per image, cast once)."""
        key = ("low", dt)
        if key not in self._weights:
            ln = self.dec.upscale_layer_norm
            w1, w2 = self._upscale_weights()
            self._weights[key] = {"w1": w1.to(dt), "w2": w2.to(dt), "ln_w": ln.weight.to(dt), "ln_b": ln.bias.to(dt)}
        if key not in st:
            st[key] = {"add1": st["add1"].to(dt), "add2": st["add2"].to(dt)}
        return {**self._weights[key], **st[key]}

    def _upscale_weights(self) -> tuple[Any, Any]:
        """GEMM weights of the two transposed convs, columns ``(i, j, o)``."""
        if "w1" not in self._weights:
            c1, c2 = self.dec.upscale_conv1, self.dec.upscale_conv2
            # ConvTranspose2d(k=2, s=2): out[o, 2y+i, 2x+j] = sum_c in[c, y, x] W[c, o, i, j] + bias[o]
            self._weights["w1"] = c1.weight.permute(0, 2, 3, 1).reshape(c1.weight.shape[0], -1).contiguous()
            self._weights["w2"] = c2.weight.permute(0, 2, 3, 1).reshape(c2.weight.shape[0], -1).contiguous()
        return self._weights["w1"], self._weights["w2"]

    def _upscale_addends(self, image_embeddings: Any, h: int, w: int) -> tuple[Any, Any]:
        """What the two upscaling GEMMs add: their biases, tiled over ``(i, j)``, plus SAM 2's skips in
        the GEMMs' pixel order (per image)."""
        b1 = self.dec.upscale_conv1.bias.repeat(4)  # columns (i, j, o)
        b2 = self.dec.upscale_conv2.bias.repeat(4)
        if not self.v2:
            return b1, b2
        s0, s1 = image_embeddings[0][0], image_embeddings[1][0]  # (o2, 4h, 4w), (o1, 2h, 2w)
        o1, o2 = s1.shape[0], s0.shape[0]
        # s1[o, 2h+i, 2w+j] -> (h, w, i, j, o); s0[o, 4h+2i1+i2, 4w+2j1+j2] -> (h, w, i1, j1, i2, j2, o)
        add1 = (s1.view(o1, h, 2, w, 2).permute(1, 3, 2, 4, 0).reshape(h * w, 4 * o1) + b1)[None]
        s0 = s0.view(o2, h, 2, 2, w, 2, 2).permute(1, 4, 2, 5, 3, 6, 0)
        return add1, (s0.reshape(4 * h * w, 4 * o2) + b2)[None].contiguous()
