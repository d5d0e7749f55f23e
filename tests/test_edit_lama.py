"""The LaMa engine (anyseg.edit.lama) through the users' path: tiny TorchScript and ONNX files
with big-lama's call signature, saved to tmp_path and loaded with ``--weights``."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from anyseg.edit.base import InpaintEngine, engine_factory, run_inpaint
from anyseg.edit.lama import LamaEngine, pad_to_multiple
from anyseg.errors import InputError, ModelError

H, W = 61, 93  # odd: padding to multiples of 8 must be undone


class MeanFill(torch.nn.Module):
    """big-lama's signature: ``(image (1,3,H,W) 0..1, mask (1,1,H,W) 0/1) -> (1,3,H,W)``; fills the
    hole with the known pixels' mean and refuses inputs not padded to a multiple of 8."""

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if image.shape[2] % 8 != 0 or image.shape[3] % 8 != 0 or mask.shape[1] != 1:
            raise RuntimeError("the input is not padded to a multiple of 8")
        known = 1.0 - mask
        mean = (image * known).sum(dim=(2, 3), keepdim=True) / known.sum(dim=(2, 3), keepdim=True).clamp(min=1.0)
        return (image * known + mean * mask) * self.scale


class TinyConv(torch.nn.Module):
    """A conv net on the 4-channel input LaMa builds (masked image, mask), sigmoid output."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(4, 3, 3, padding=1)

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.conv(torch.cat([image * (1 - mask), mask], dim=1)))


def _scripted(tmp_path, module: torch.nn.Module, name: str = "big-lama.pt"):
    path = tmp_path / name
    torch.jit.script(module).save(str(path))
    return path


def _scene() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    mask = np.zeros((H, W), bool)
    mask[20:41, 30:61] = True
    return image, mask


def _onnx(path, inputs, nodes, output_shape) -> None:
    graph = helper.make_graph(nodes, "lama", inputs,
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, output_shape)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, str(path))


def _fill_nodes(value: float, scale: float) -> list:
    """``output = (image * (1 - mask) + mask * value) * scale``."""
    def const(name: str, v: float):
        return helper.make_node("Constant", [], [name], value=helper.make_tensor(name, TensorProto.FLOAT, [], [v]))

    return [const("one", 1.0), const("value", value), const("scale", scale),
            helper.make_node("Sub", ["one", "mask"], ["known"]),
            helper.make_node("Mul", ["image", "known"], ["kept"]),
            helper.make_node("Mul", ["mask", "value"], ["hole"]),
            helper.make_node("Add", ["kept", "hole"], ["sum"]),
            helper.make_node("Mul", ["sum", "scale"], ["output"])]


def _two_input_onnx(path, size=("h", "w"), value=0.5, scale=255.0) -> None:
    h, w = size
    inputs = [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, h, w]),
              helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1, 1, h, w])]
    _onnx(path, inputs, _fill_nodes(value, scale), [1, 3, h, w])


def test_torchscript_big_lama_signature_odd_size_and_hole_alignment(tmp_path):
    image, mask = _scene()
    engine = engine_factory("lama")(weights=_scripted(tmp_path, MeanFill()), device="cpu")
    assert isinstance(engine, InpaintEngine) and engine.working_size == 512 and not engine.generative
    assert engine.model_id == "lama:torchscript:big-lama.pt"
    out = engine.inpaint(image, mask)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.array_equal(out[~mask], image[~mask])
    hole = out[mask].astype(int)
    assert (hole == hole[0]).all()  # exactly the hole got the flat fill: the padding is bottom-right and undone
    assert np.abs(hole[0] - image[~mask].mean(axis=0)).max() < 8  # the mean of the (mirror-padded) known pixels


def test_the_output_range_is_detected_or_forced(tmp_path):
    image, mask = _scene()
    ref = LamaEngine(_scripted(tmp_path, MeanFill(), "a.pt"), device="cpu").inpaint(image, mask)
    wide = _scripted(tmp_path, MeanFill(255.0), "b.pt")
    assert np.array_equal(LamaEngine(wide, device="cpu").inpaint(image, mask), ref)
    assert np.array_equal(LamaEngine(wide, device="cpu", output_range="0-255").inpaint(image, mask), ref)
    forced = LamaEngine(wide, device="cpu", output_range="0-1").inpaint(image, mask)
    assert (forced[mask] == 255).mean() > 0.9  # read as 0..1, a 0..255 answer saturates


def test_a_traced_conv_net_through_run_inpaint_keeps_every_other_pixel(tmp_path):
    image, mask = _scene()
    path = tmp_path / "traced.jit"
    torch.jit.trace(TinyConv().eval(), (torch.rand(1, 3, 64, 96), torch.zeros(1, 1, 64, 96))).save(str(path))
    engine = LamaEngine.from_options(weights=path, device="cpu")
    result = run_inpaint(engine, image, mask, "remove", dilate=3)
    assert result.image.shape == image.shape
    assert np.array_equal(result.image[~result.mask], image[~result.mask])
    assert result.record["engine"] == "lama" and result.record["model"] == "lama:torchscript:traced.jit"


def test_a_dynamic_onnx_graph_gets_padded_input_and_its_0_255_output_read(tmp_path):
    image, mask = _scene()
    path = tmp_path / "lama_fp32.onnx"
    _two_input_onnx(path)
    engine = engine_factory("lama")(weights=path)
    assert engine.runner.fixed_size is None and engine.working_size == 512
    shapes = []
    session = engine.runner.session

    class Spy:
        def run(self, names, feeds):
            shapes.append({k: v.shape for k, v in feeds.items()})
            return session.run(names, feeds)

    engine.runner.session = Spy()
    out = engine.inpaint(image, mask)
    assert shapes == [{"image": (1, 3, 64, 96), "mask": (1, 1, 64, 96)}]
    assert out.shape == image.shape and (out[mask] == 128).all() and np.array_equal(out[~mask], image[~mask])


def test_a_static_onnx_graph_sees_the_crop_resized_to_its_size(tmp_path):
    image, mask = _scene()
    path = tmp_path / "static.onnx"
    _two_input_onnx(path, size=(64, 64), value=0.25, scale=1.0)
    engine = LamaEngine.from_options(weights=path, device="cpu")
    assert engine.runner.fixed_size == (64, 64) and engine.working_size == 64
    out = engine.inpaint(image, mask)
    assert out.shape == image.shape and np.array_equal(out[~mask], image[~mask])
    assert np.abs(out[25:36, 35:56].astype(int) - 64).max() <= 2  # the hole's inside: 0.25 in 0..1


def test_a_single_four_channel_input_graph_gets_the_masked_image_and_the_mask(tmp_path):
    image, mask = _scene()
    path = tmp_path / "lama4.onnx"
    inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 4, "h", "w"])]
    split = helper.make_tensor("split", TensorProto.INT64, [2], [3, 1])
    nodes = [helper.make_node("Constant", [], ["split"], value=split),
             helper.make_node("Split", ["input", "split"], ["masked", "m"], axis=1),
             helper.make_node("Constant", [], ["q"], value=helper.make_tensor("q", TensorProto.FLOAT, [], [0.25])),
             helper.make_node("Mul", ["m", "q"], ["hole"]),
             helper.make_node("Add", ["masked", "hole"], ["output"])]
    _onnx(path, inputs, nodes, [1, 3, "h", "w"])
    out = LamaEngine.from_options(weights=path, device="cpu").inpaint(image, mask)
    assert (out[mask] == 64).all() and np.array_equal(out[~mask], image[~mask])  # hole zeroed, then 0.25


def test_a_folder_holding_big_lama_is_accepted(tmp_path):
    _scripted(tmp_path, MeanFill())
    assert LamaEngine.from_options(weights=tmp_path, device="cpu").path.name == "big-lama.pt"


def test_pad_to_multiple_mirrors_bottom_and_right():
    a = np.arange(15, dtype=np.float32).reshape(3, 5)
    p = pad_to_multiple(a, 8)
    assert p.shape == (8, 8) and np.array_equal(p[:3, :5], a) and p[3, 0] == a[2, 0] and p[0, 5] == a[0, 4]
    assert pad_to_multiple(np.zeros((8, 16, 3)), 8).shape == (8, 16, 3)


@pytest.mark.parametrize("content, name, words", [
    (b"not a model at all", "big-lama.pt", "not a loadable TorchScript"),
    (b"\x00\x01garbage", "lama_fp32.onnx", "onnxruntime cannot load"),
    (b"x", "big-lama.bin", "expected a TorchScript file"),
])
def test_bad_files_are_one_line_model_errors(tmp_path, content, name, words):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ModelError) as err:
        LamaEngine.from_options(weights=path, device="cpu")
    assert words in str(err.value) and "\n" not in str(err.value)


def test_a_state_dict_is_not_torchscript(tmp_path):
    path = tmp_path / "best.pth"
    torch.save(TinyConv().state_dict(), str(path))
    with pytest.raises(ModelError, match="best.ckpt must be exported"):
        LamaEngine.from_options(weights=path, device="cpu")


def test_a_graph_with_other_inputs_is_not_lama(tmp_path):
    path = tmp_path / "other.onnx"
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 3, 8, 8]) for n in ("a", "b", "c")]
    _onnx(path, inputs, [helper.make_node("Sum", ["a", "b", "c"], ["output"])], [1, 3, 8, 8])
    with pytest.raises(ModelError, match="not a LaMa graph"):
        LamaEngine.from_options(weights=path)


def test_weights_are_required_and_options_checked(tmp_path):
    with pytest.raises(ModelError) as err:
        engine_factory("lama")()
    assert "big-lama.pt" in str(err.value) and "does not download" in str(err.value)
    with pytest.raises(ModelError, match="no such file"):
        LamaEngine.from_options(weights=tmp_path / "missing.pt")
    with pytest.raises(ModelError, match="holds none"):
        LamaEngine.from_options(weights=tmp_path)
    path = _scripted(tmp_path, MeanFill())
    for kwargs, words in [({"model": "big-lama"}, "--weights, not --model"), ({"steps": 3}, "unknown option"),
                          ({"output_range": "0-100"}, "output_range"), ({"working_size": 10}, "working_size"),
                          ({"device": "tpu"}, "unknown device")]:
        with pytest.raises(InputError, match=words):
            LamaEngine.from_options(weights=path, **kwargs)
    engine = LamaEngine.from_options(weights=path, device="cpu", working_size=1024)
    assert engine.working_size == 1024
    with pytest.raises(InputError, match="whole crop"):
        engine.inpaint(np.zeros((8, 8, 3), np.uint8), np.ones((8, 8), bool))


def test_a_model_that_fails_or_answers_wrongly_is_one_line(tmp_path):
    class Wrong(torch.nn.Module):
        def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            return image[:, :1]

    image, mask = _scene()
    with pytest.raises(ModelError, match="returned shape"):
        LamaEngine(_scripted(tmp_path, Wrong(), "w.pt"), device="cpu").inpaint(image, mask)
    with pytest.raises(ModelError, match="failed on a 93x61 input"):  # the module refuses an unpadded input
        LamaEngine(_scripted(tmp_path, MeanFill(), "p.pt"), device="cpu", pad_multiple=1).inpaint(image, mask)


def test_a_large_image_called_directly_is_bounded_by_the_working_size(tmp_path):
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (150, 201, 3), dtype=np.uint8)
    mask = np.zeros((150, 201), bool)
    mask[50:100, 60:140] = True
    engine = LamaEngine(_scripted(tmp_path, MeanFill()), device="cpu", working_size=64)
    out = engine.inpaint(image, mask)
    assert out.shape == image.shape and np.array_equal(out[~mask], image[~mask])
