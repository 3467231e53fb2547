"""ONNX Runtime as the forward pass of a torch embedder: exported at first use, checked, cached.

The torch module (model and pooling) is exported once to ONNX (``torch.onnx``), and the
file is kept in ``cache_dir`` under a name made of what determines it (weights, input size,
torch version), so later processes load it directly. Before it is used, its outputs on a
fixed probe batch must match torch's to :data:`MAX_COSINE_GAP`; otherwise it is refused
(:class:`~provenance.errors.EmbedderUnavailableError`). Needs the ``[onnx]`` extra.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import EmbedderUnavailableError

#: Vectors from ONNX Runtime may differ from torch's by float rounding only.
MAX_COSINE_GAP = 1e-4
#: Inputs per ONNX Runtime call (larger batches than torch's suit its kernels on CPU).
ONNX_BATCH = 16


class OnnxForward:
    """Runs an exported copy of ``module`` (input: normalised NCHW float32; output: pooled features)."""

    def __init__(self, module: Any, image_size: int, key: str, cache_dir: str | None, threads: int):
        try:
            import onnxruntime
        except ImportError:
            raise EmbedderUnavailableError("runtime=onnx needs onnxruntime: pip install -e '.[onnx]'") from None
        path = _exported(module, image_size, key, cache_dir)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = max(1, threads)
        options.inter_op_num_threads = 1
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.path = path
        _check_against_torch(module, self, image_size)

    def __call__(self, tensor: np.ndarray) -> np.ndarray:
        outputs = [self.session.run(None, {"input": np.ascontiguousarray(tensor[start : start + ONNX_BATCH])})[0]
                   for start in range(0, len(tensor), ONNX_BATCH)]
        return np.concatenate(outputs) if outputs else np.zeros((0, 0), np.float32)


def _exported(module: Any, image_size: int, key: str, cache_dir: str | None) -> Path:
    import torch

    folder = Path(cache_dir) if cache_dir else Path(tempfile.gettempdir()) / "provenance-onnx"
    folder.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(f"{key}|{image_size}|{torch.__version__}".encode()).hexdigest()[:16]
    path = folder / f"{digest}.onnx"
    if path.exists():
        return path
    example = torch.zeros(2, 3, image_size, image_size)
    temporary = folder / f"{digest}.{os.getpid()}.tmp"
    try:
        torch.onnx.export(module, (example,), str(temporary), input_names=["input"], output_names=["pooled"],
                          dynamic_axes={"input": {0: "n"}, "pooled": {0: "n"}}, opset_version=17, dynamo=False)
        os.replace(temporary, path)  # whole or absent: a concurrent process may export the same file
    except Exception as exc:
        temporary.unlink(missing_ok=True)
        raise EmbedderUnavailableError(f"could not export the model to ONNX ({' '.join(str(exc).split())[:300]})") from None
    return path


def _check_against_torch(module: Any, forward: Callable[[np.ndarray], np.ndarray], image_size: int) -> None:
    import torch

    probe = np.random.default_rng(0).normal(0, 1, size=(3, 3, image_size, image_size)).astype(np.float32)
    with torch.inference_mode():
        expected = module(torch.from_numpy(probe)).float().numpy()
    got = forward(probe)
    cosines = (_unit(expected) * _unit(got)).sum(axis=1)
    if got.shape != expected.shape or not np.all(cosines >= 1 - MAX_COSINE_GAP):
        raise EmbedderUnavailableError(f"the ONNX export does not match torch (cosine {cosines.min():.6f}); use runtime=torch")


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
