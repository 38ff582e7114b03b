"""Export a trained network to ONNX and prove the export right with onnxruntime.

The exported graph takes the same raw input as the PyTorch network (pixels 0..255 as
``float32`` ``(batch, C, H, W)``, tabular features ``(batch, F)``, waveforms ``(batch, S)`` with
the log-mel front end inside the graph, or ``int64`` token ids ``(batch, L)``), normalises
inside, and returns ``probabilities`` ``(batch, K)`` (softmax included, so a consumer needs
nothing else). The batch axis is dynamic, and so is the token axis of text models.
``metadata_props`` carry the class names and the input spec as JSON,
readable with ``InferenceSession(...).get_modelmeta().custom_metadata_map``.

:func:`export_onnx` refuses to return a model whose onnxruntime outputs differ from PyTorch's
by more than ``ATOL`` / ``RTOL`` on the given sample records (batches of 1 and of many).
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

ATOL = 1e-5   # absolute tolerance on probabilities (fp32 typically agrees to ~1e-7)
RTOL = 1e-4


class ExportError(RuntimeError):
    """The ONNX model does not reproduce the PyTorch network."""


class WithSoftmax(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(x), dim=1)


def session(model: onnx.ModelProto | bytes | str) -> ort.InferenceSession:
    """An onnxruntime CPU session for a model given as a proto, bytes or a path."""
    if isinstance(model, onnx.ModelProto):
        model = model.SerializeToString()
    return ort.InferenceSession(model, providers=["CPUExecutionProvider"])


def _input_dtype(x: np.ndarray) -> type:
    """Token ids stay ``int64``; everything else is fed as ``float32``."""
    return np.int64 if x.dtype.kind in "iu" and x.dtype != np.uint8 else np.float32


def run_onnx(sess: ort.InferenceSession, x: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """Probabilities for ``x`` (raw inputs: float32, or int64 token ids) in batches."""
    name = sess.get_inputs()[0].name
    dtype = np.int64 if sess.get_inputs()[0].type == "tensor(int64)" else np.float32
    out = [sess.run(None, {name: x[i:i + batch_size].astype(dtype, copy=False)})[0]
           for i in range(0, len(x), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def export_onnx(net: nn.Module, sample: np.ndarray, metadata: dict[str, object]) -> tuple[onnx.ModelProto, dict]:
    """Export ``net`` (in eval mode, on the CPU) with a dynamic batch axis, attach ``metadata``
    (values are JSON-encoded unless strings), and check it against PyTorch on ``sample``.

    Returns the model and a parity report (``max_abs_diff``, ``argmax_agreement``, tolerances).
    Raises :class:`ExportError` when the check fails."""
    wrapped = WithSoftmax(net.cpu().eval()).eval()
    sample = np.ascontiguousarray(sample.astype(_input_dtype(sample)))
    example = torch.from_numpy(sample[: min(len(sample), 8)])
    axes = {0: torch.export.Dim("batch", min=1)}
    if sample.dtype == np.int64:  # token ids: texts of any length
        axes[1] = torch.export.Dim("tokens", min=1)
    program = torch.onnx.export(
        wrapped, (example,), dynamo=True, input_names=["input"], output_names=["probabilities"],
        dynamic_shapes=(axes,), verbose=False, optimize=True)
    model = program.model_proto
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key = key
        entry.value = value if isinstance(value, str) else json.dumps(value)
    onnx.checker.check_model(model)

    sess = session(model)
    with torch.inference_mode():
        expected = wrapped(torch.from_numpy(sample)).numpy()
    got = run_onnx(sess, sample)
    single = run_onnx(sess, sample[:1], batch_size=1)
    diff = float(np.abs(got - expected).max()) if len(sample) else 0.0
    report = {
        "max_abs_diff": diff,
        "batch_of_one_diff": float(np.abs(single - expected[:1]).max()),
        "argmax_agreement": float((got.argmax(1) == expected.argmax(1)).mean()),
        "atol": ATOL, "rtol": RTOL, "records_checked": int(len(sample)),
        "opset": int(model.opset_import[0].version),
    }
    if not np.allclose(got, expected, atol=ATOL, rtol=RTOL) or report["batch_of_one_diff"] > ATOL:
        raise ExportError(
            f"onnxruntime disagrees with PyTorch: max |diff| {diff:.2e} "
            f"(batch of one {report['batch_of_one_diff']:.2e}) > atol {ATOL:g}, rtol {RTOL:g}")
    return model, report
