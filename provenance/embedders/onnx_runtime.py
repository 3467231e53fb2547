"""ONNX Runtime as the forward pass of a torch embedder: exported at first use, checked, cached.

The torch module (pixel normalisation, model and pooling) is exported once to ONNX
(``torch.onnx``). Before it is used, its outputs on a fixed probe batch must match torch's
to :data:`MAX_COSINE_GAP`; otherwise it is refused
(:class:`~provenance.errors.EmbedderUnavailableError`). A checked export is kept in
``cache_dir`` under a name made of what determines it (weights, input shape and type, torch
version) with its digest beside it, so later processes load it without building the torch
model or importing torch: a query process then maps no CUDA libraries.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import threading
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import EmbedderUnavailableError

#: Vectors from ONNX Runtime may differ from torch's by float rounding only.
MAX_COSINE_GAP = 1e-4
#: Inputs per ONNX Runtime call (larger batches than torch's suit its kernels on CPU).
ONNX_BATCH = 16


class OnnxForward:
    """Runs a checked ONNX export; :meth:`load` finds or makes one.

    ``threads`` is asked at every call for the intra-op thread count to use.
    """

    def __init__(self, path: Path, threads: Callable[[], int]):
        try:
            import onnxruntime
        except ImportError:
            raise EmbedderUnavailableError("runtime=onnx needs onnxruntime, a dependency of provenance: "
                                           "pip install onnxruntime onnx") from None
        self._onnxruntime = onnxruntime
        self.path = path
        self._threads = threads
        self._sessions: dict[int, Any] = {}
        self._lock = threading.Lock()

    @classmethod
    def load(cls, build_module: Callable[[], Any], probe: np.ndarray, key: str, cache_dir: str | None,
             threads: Callable[[], int]) -> "OnnxForward":
        """The export of ``build_module()`` for inputs shaped and typed as ``probe``.

        A cached export that passed its check loads without building the torch module (or
        importing torch); otherwise the module is exported, checked and only then cached.
        """
        path = _cache_path(probe, key, cache_dir)
        if _verified(path):
            forward = cls(path, threads)
            forward.session()  # a file ONNX Runtime cannot load fails here, where "auto" can fall back
            return forward
        module = build_module()
        temporary = path.with_name(f"{path.stem}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            _export(module, probe, temporary)
            forward = cls(temporary, threads)
            _check_against_torch(module, forward, probe)
            _write_stamp(path, temporary)
            os.replace(temporary, path)  # whole or absent: a concurrent process may export the same file
        except OSError as exc:
            raise EmbedderUnavailableError(f"cannot keep the ONNX export in {path.parent}: {exc.strerror}") from None
        finally:
            temporary.unlink(missing_ok=True)
        forward.path = path  # sessions made later read the cached file
        return forward

    def session(self) -> Any:
        """The session for the thread count asked for now (one per count: ORT fixes it at creation)."""
        threads = max(1, int(self._threads()))
        with self._lock:
            if threads not in self._sessions:
                self._sessions[threads] = self._new_session(threads)
            return self._sessions[threads]

    def _new_session(self, threads: int) -> Any:
        options = self._onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # Idle threads that spin take the cores from the decode workers beside them.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = self._onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            return self._onnxruntime.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own types for a damaged file
            raise EmbedderUnavailableError(f"ONNX Runtime cannot load {self.path} ({' '.join(str(exc).split())[:200]})") from None

    def __call__(self, tensor: np.ndarray) -> np.ndarray:
        session = self.session()
        outputs = [session.run(None, {"input": np.ascontiguousarray(tensor[start : start + ONNX_BATCH])})[0]
                   for start in range(0, len(tensor), ONNX_BATCH)]
        return np.concatenate(outputs) if outputs else np.zeros((0, 0), np.float32)


def default_cache_dir() -> Path:
    """Where exports are kept unless a folder is given: the user's cache (``$XDG_CACHE_HOME``
    or ``~/.cache``), not a shared temporary folder where another user could plant a file."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "provenance" / "onnx"


def _cache_path(probe: np.ndarray, key: str, cache_dir: str | None) -> Path:
    folder = Path(cache_dir) if cache_dir else default_cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EmbedderUnavailableError(f"cannot keep the ONNX export in {folder}: {exc.strerror}") from None
    # the installed torch's version, read without importing it: the exporter's output depends on it
    torch_version = importlib.metadata.version("torch")
    digest = hashlib.sha256(f"{key}|{probe.shape[1:]}|{probe.dtype}|{torch_version}".encode()).hexdigest()[:16]
    return folder / f"{digest}.onnx"


def _stamp_path(path: Path) -> Path:
    return path.with_suffix(".sha256")


def _file_digest(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _write_stamp(path: Path, checked: Path) -> None:
    """Record the checked file's digest: a cached export is used only while it is that file."""
    stamp = _stamp_path(path)
    temporary = stamp.with_name(f"{stamp.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    temporary.write_text(_file_digest(checked))
    os.replace(temporary, stamp)


def _verified(path: Path) -> bool:
    try:
        return path.exists() and _stamp_path(path).read_text().strip() == _file_digest(path)
    except OSError:
        return False


def _export(module: Any, probe: np.ndarray, target: Path) -> None:
    import torch

    example = torch.from_numpy(probe[:2].copy())
    try:
        with warnings.catch_warnings():
            # the TorchScript exporter is deprecated but needs no onnxscript; its warnings are not the user's
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(module, (example,), str(target), input_names=["input"], output_names=["pooled"],
                              dynamic_axes={"input": {0: "n"}, "pooled": {0: "n"}}, opset_version=17, dynamo=False)
    except Exception as exc:
        raise EmbedderUnavailableError(f"could not export the model to ONNX ({' '.join(str(exc).split())[:300]})") from None


def _check_against_torch(module: Any, forward: Callable[[np.ndarray], np.ndarray], probe: np.ndarray) -> None:
    import torch

    with torch.inference_mode():
        expected = module(torch.from_numpy(probe)).float().numpy()
    got = forward(probe)
    cosines = (_unit(expected) * _unit(got)).sum(axis=1)
    if got.shape != expected.shape or not np.all(cosines >= 1 - MAX_COSINE_GAP):
        raise EmbedderUnavailableError(f"the ONNX export does not match torch (cosine {cosines.min():.6f}); use runtime=torch")


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
