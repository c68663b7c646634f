"""In-memory rewrites of the shipped ONNX graphs. Weights are never changed, only how they are run.

* ``sface_for_onnxruntime``: the int8 SFace file declares its quantised weights as graph inputs
  that no node reads, so onnxruntime demands them as feeds; its weights are de-quantised on every
  call; and onnxruntime's PRelu kernel is slow for per-channel slopes. Dropping the dangling
  inputs, folding the constant de-quantisation once, and spelling PRelu as Relu arithmetic gives
  the same vectors (to float rounding) about 2x faster on CPU.
* ``yunet_as_scrfd`` / ``sface_for_insightface``: the same YuNet and SFace weights repackaged so
  insightface's own model router loads them as a SCRFD detector and an ArcFace recognizer. That
  is how the insightface backend is exercised on real weights where no buffalo pack exists.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

YUNET_STRIDES = (8, 16, 32)


def quiet_session_options(threads: int = 0) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.log_severity_level = 3  # the shipped graphs trigger pages of harmless warnings
    options.intra_op_num_threads = threads
    return options


def drop_unread_inputs(model: onnx.ModelProto) -> None:
    """Remove graph inputs no node reads, and inputs that merely shadow an initializer."""
    read = {name for node in model.graph.node for name in node.input}
    initialized = {tensor.name for tensor in model.graph.initializer}
    keep = [
        item for item in model.graph.input if item.name in read and item.name not in initialized
    ]
    del model.graph.input[:]
    model.graph.input.extend(keep)


def _dequantize(node: onnx.NodeProto, values: list[np.ndarray]) -> np.ndarray:
    """ONNX DequantizeLinear (opset 21, blocked or not): ``(q - zero_point) * scale``.

    Done in numpy because onnxruntime rejects the int8 YuNet file's per-tensor nodes, which carry
    a ``block_size`` and a one-element scale (OpenCV accepts them).
    """
    attrs = {attr.name: helper.get_attribute_value(attr) for attr in node.attribute}
    quantized, scale = values[0], values[1].astype(np.float32)
    zero_point = values[2] if len(values) > 2 else np.zeros_like(scale, dtype=quantized.dtype)
    block = int(attrs.get("block_size", 0))
    axis = int(attrs.get("axis", 1)) % max(quantized.ndim, 1)
    if scale.size == 1:
        scale, zero_point = scale.reshape(()), zero_point.reshape(())
    elif block > 0:
        length = quantized.shape[axis]
        scale = np.repeat(scale, block, axis=axis).take(range(length), axis=axis)
        zero_point = np.repeat(zero_point, block, axis=axis).take(range(length), axis=axis)
    else:
        shape = [1] * quantized.ndim
        shape[axis] = -1
        scale, zero_point = scale.reshape(shape), zero_point.reshape(shape)
    centred = quantized.astype(np.int32) - zero_point.astype(np.int32)
    return (centred * scale).astype(np.float32)


def _reshape(node: onnx.NodeProto, values: list[np.ndarray]) -> np.ndarray:
    data, shape = values[0], [int(v) for v in values[1]]
    allow_zero = any(a.name == "allowzero" and a.i == 1 for a in node.attribute)
    if not allow_zero:
        shape = [data.shape[i] if v == 0 else v for i, v in enumerate(shape)]
    return data.reshape(shape)


_FOLDERS = {"DequantizeLinear": _dequantize, "Reshape": _reshape}


def fold_constant_weights(model: onnx.ModelProto) -> None:
    """Turn de-quantise/reshape chains over constant weights into plain float initializers."""
    values = {tensor.name: numpy_helper.to_array(tensor) for tensor in model.graph.initializer}
    remaining: list[onnx.NodeProto] = []
    folded: set[str] = set()
    for node in model.graph.node:
        fold = _FOLDERS.get(node.op_type)
        if fold is not None and all(name in values for name in node.input if name):
            values[node.output[0]] = fold(node, [values[name] for name in node.input if name])
            folded.add(node.output[0])
        else:
            remaining.append(node)
    if not folded:
        return
    needed = {name for node in remaining for name in node.input} | {
        item.name for item in model.graph.output
    }
    initializers = [tensor for tensor in model.graph.initializer if tensor.name in needed]
    initializers += [numpy_helper.from_array(values[name], name) for name in folded & needed]
    del model.graph.node[:]
    model.graph.node.extend(remaining)
    del model.graph.initializer[:]
    model.graph.initializer.extend(sorted(initializers, key=lambda tensor: tensor.name))


def prelu_as_relu(model: onnx.ModelProto) -> None:
    """PRelu(x, a) == Relu(x) + a * (x - Relu(x)); onnxruntime runs the latter much faster."""
    nodes: list[onnx.NodeProto] = []
    for index, node in enumerate(model.graph.node):
        if node.op_type != "PRelu":
            nodes.append(node)
            continue
        x, slope = node.input
        stem = f"{node.name or 'prelu'}_{index}"
        nodes += [
            helper.make_node("Relu", [x], [f"{stem}_pos"]),
            helper.make_node("Sub", [x, f"{stem}_pos"], [f"{stem}_neg"]),
            helper.make_node("Mul", [f"{stem}_neg", slope], [f"{stem}_neg_scaled"]),
            helper.make_node("Add", [f"{stem}_pos", f"{stem}_neg_scaled"], [node.output[0]]),
        ]
    del model.graph.node[:]
    model.graph.node.extend(nodes)


def sface_for_onnxruntime(model_bytes: bytes) -> bytes:
    model = onnx.load_from_string(model_bytes)
    drop_unread_inputs(model)
    fold_constant_weights(model)
    prelu_as_relu(model)
    drop_unread_inputs(model)
    return model.SerializeToString()


def sface_for_insightface(model_bytes: bytes) -> bytes:
    """SFace with its built-in ``(x - 127.5) / 128`` steps first in the node list.

    insightface's ArcFaceONNX looks for Sub and Mul among the first 8 nodes to decide that a model
    normalises its own input (the MXNet export convention). In the int8 file they sit behind 56
    de-quantise nodes, so insightface would normalise twice; after folding they come first.
    """
    model = onnx.load_from_string(sface_for_onnxruntime(model_bytes))
    data_name = model.graph.input[0].name
    first = [n for n in model.graph.node if n.op_type == "Sub" and data_name in n.input]
    if len(first) != 1:
        raise ValueError("SFace graph does not start with the expected input normalisation")
    sub = first[0]
    mul = [n for n in model.graph.node if n.op_type == "Mul" and sub.output[0] in n.input]
    rest = [n for n in model.graph.node if n is not sub and not any(n is m for m in mul)]
    del model.graph.node[:]
    model.graph.node.extend([sub, *mul, *rest])
    return model.SerializeToString()


def yunet_as_scrfd(model_bytes: bytes) -> bytes:
    """YuNet wrapped to look like a 9-output SCRFD-with-keypoints model to insightface.

    Input: SCRFD's ``(rgb - 127.5) / 128``, undone to YuNet's raw BGR. Outputs per stride:
    scores ``sqrt(cls * obj)``, box distances to the anchor point (left, top, right, bottom) and
    keypoint offsets, all in stride units as SCRFD's decoder expects. SCRFD's 9-output layout
    assumes two anchors per grid point, so each prediction is emitted twice (NMS drops the copy).
    """
    model = onnx.load_from_string(model_bytes)
    fold_constant_weights(model)
    graph = model.graph
    original_input = graph.input[0]
    yunet_input = original_input.name
    outputs = {item.name for item in graph.output}
    expected = {f"{kind}_{s}" for kind in ("cls", "obj", "bbox", "kps") for s in YUNET_STRIDES}
    if outputs != expected:
        raise ValueError(f"not a YuNet 2023 graph: outputs {sorted(outputs)}")

    new_input = "scrfd_input"
    constants = [
        numpy_helper.from_array(np.array(128.0, dtype=np.float32), "w_std"),
        numpy_helper.from_array(np.array(127.5, dtype=np.float32), "w_mean"),
        numpy_helper.from_array(np.array([2, 1, 0], dtype=np.int64), "w_bgr"),
        numpy_helper.from_array(np.array(0.0, dtype=np.float32), "w_zero"),
        numpy_helper.from_array(np.array(1.0, dtype=np.float32), "w_one"),
        numpy_helper.from_array(np.array(0.5, dtype=np.float32), "w_half"),
        numpy_helper.from_array(np.array([1, 1, 1, 1], dtype=np.int64), "w_split4"),
        numpy_helper.from_array(np.array([2], dtype=np.int64), "w_axis2"),
    ]
    pre = [
        helper.make_node("Mul", [new_input, "w_std"], ["w_scaled"]),
        helper.make_node("Add", ["w_scaled", "w_mean"], ["w_rgb255"]),
        helper.make_node("Gather", ["w_rgb255", "w_bgr"], [yunet_input], axis=1),
    ]
    post: list[onnx.NodeProto] = []
    new_outputs: dict[str, list[str]] = {"score": [], "bbox": [], "kps": []}
    for stride in YUNET_STRIDES:
        s = str(stride)
        post += [
            helper.make_node("Clip", [f"cls_{s}", "w_zero", "w_one"], [f"w_cls_{s}"]),
            helper.make_node("Clip", [f"obj_{s}", "w_zero", "w_one"], [f"w_obj_{s}"]),
            helper.make_node("Mul", [f"w_cls_{s}", f"w_obj_{s}"], [f"w_prod_{s}"]),
            helper.make_node("Sqrt", [f"w_prod_{s}"], [f"w_score1_{s}"]),
            helper.make_node(
                "Split",
                [f"bbox_{s}", "w_split4"],
                [f"w_dx_{s}", f"w_dy_{s}", f"w_lw_{s}", f"w_lh_{s}"],
                axis=2,
            ),
            helper.make_node("Exp", [f"w_lw_{s}"], [f"w_w_{s}"]),
            helper.make_node("Exp", [f"w_lh_{s}"], [f"w_h_{s}"]),
            helper.make_node("Mul", [f"w_w_{s}", "w_half"], [f"w_hw_{s}"]),
            helper.make_node("Mul", [f"w_h_{s}", "w_half"], [f"w_hh_{s}"]),
            helper.make_node("Sub", [f"w_hw_{s}", f"w_dx_{s}"], [f"w_left_{s}"]),
            helper.make_node("Sub", [f"w_hh_{s}", f"w_dy_{s}"], [f"w_top_{s}"]),
            helper.make_node("Add", [f"w_hw_{s}", f"w_dx_{s}"], [f"w_right_{s}"]),
            helper.make_node("Add", [f"w_hh_{s}", f"w_dy_{s}"], [f"w_bottom_{s}"]),
            helper.make_node(
                "Concat",
                [f"w_left_{s}", f"w_top_{s}", f"w_right_{s}", f"w_bottom_{s}"],
                [f"w_dist1_{s}"],
                axis=2,
            ),
        ]
        for kind, source, width in (
            ("score", f"w_score1_{s}", 1),
            ("bbox", f"w_dist1_{s}", 4),
            ("kps", f"kps_{s}", 10),
        ):
            name = f"{kind}_{s}_x2"
            shape_name = f"w_shape_{kind}_{s}"
            constants.append(
                numpy_helper.from_array(np.array([1, -1, width], dtype=np.int64), shape_name)
            )
            post += [
                helper.make_node("Unsqueeze", [source, "w_axis2"], [f"w_u_{kind}_{s}"]),
                helper.make_node(
                    "Concat", [f"w_u_{kind}_{s}", f"w_u_{kind}_{s}"], [f"w_d_{kind}_{s}"], axis=2
                ),
                helper.make_node("Reshape", [f"w_d_{kind}_{s}", shape_name], [name]),
            ]
            new_outputs[kind].append(name)

    dims = [d.dim_value for d in original_input.type.tensor_type.shape.dim]
    height, width = dims[2], dims[3]
    del graph.input[:]
    graph.input.append(helper.make_tensor_value_info(new_input, TensorProto.FLOAT, dims))
    nodes = [*pre, *graph.node, *post]
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(constants)
    del graph.output[:]
    # insightface reads "batched" from a rank-3 first output, so shapes are spelled out.
    for kind, channels in (("score", 1), ("bbox", 4), ("kps", 10)):
        for stride, name in zip(YUNET_STRIDES, new_outputs[kind], strict=True):
            anchors = 2 * (height // stride) * (width // stride)
            graph.output.append(
                helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, anchors, channels])
            )
    drop_unread_inputs(model)
    onnx.checker.check_model(model)
    return model.SerializeToString()
