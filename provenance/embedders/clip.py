"""OpenCLIP image tower as an embedder; weights by pretrained tag or local checkpoint."""

from __future__ import annotations

import os
import threading
from typing import Any

import numpy as np

from ..errors import EmbedderUnavailableError
from .base import Embedder, Preprocessing, l2_normalise

_OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
_OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


class ClipEmbedder(Embedder):
    """open_clip image embeddings.

    ``pretrained`` is an open_clip tag (needs the hub cache or a network), a path to a
    ``.pt``/``.safetensors`` checkpoint, or ``None`` for random weights (tests only; must
    be asked for explicitly). Missing weights fail fast instead of falling back.
    """

    name = "clip"

    def __init__(self, model: str = "ViT-B-32", pretrained: str | None = "", image_size: int | None = None):
        if pretrained == "":
            raise EmbedderUnavailableError(
                "the clip embedder needs weights: pass pretrained=PATH to a local .pt/.safetensors "
                "checkpoint, an open_clip pretrained tag already in the local cache, or pretrained=None "
                "for random weights (testing only)"
            )
        self.model_name = model
        self.pretrained = pretrained
        self.image_size = image_size
        self._model = None
        self._lock = threading.Lock()
        size = image_size or _default_image_size(model)
        self.preprocessing = Preprocessing(size=size, resample="bicubic", mean=_OPENAI_MEAN, std=_OPENAI_STD)
        self.dim = _embed_dim(model)

    def config(self) -> dict[str, Any]:
        weights = self.pretrained
        if weights and os.path.exists(weights):
            stat = os.stat(weights)
            weights = f"{os.path.basename(weights)}:{stat.st_size}"
        return {"model": self.model_name, "pretrained": weights, "image_size": self.preprocessing.size}

    def _load(self):
        with self._lock:
            if self._model is None:
                self._model = _build_model(self.model_name, self.pretrained, self.image_size)
        return self._model

    def embed_arrays(self, batch: np.ndarray) -> np.ndarray:
        import torch

        model = self._load()
        if len(batch) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        pre = self.preprocessing
        with torch.inference_mode():
            tensor = torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2).float().div_(255.0)
            tensor = (tensor - torch.tensor(pre.mean).view(1, 3, 1, 1)) / torch.tensor(pre.std).view(1, 3, 1, 1)
            vectors = model.encode_image(tensor)
        return l2_normalise(vectors.float().numpy())


def _open_clip():
    try:
        import open_clip
    except ImportError as exc:
        raise EmbedderUnavailableError(f"the clip embedder needs open_clip_torch ({exc})") from None
    return open_clip


def _model_config(model: str) -> dict:
    config = _open_clip().get_model_config(model)
    if config is None:
        raise EmbedderUnavailableError(f"open_clip has no model named {model!r}")
    return config


def _default_image_size(model: str) -> int:
    size = _model_config(model).get("vision_cfg", {}).get("image_size", 224)
    return int(size if isinstance(size, int) else size[0])


def _embed_dim(model: str) -> int:
    return int(_model_config(model)["embed_dim"])


def _resolve_weights(model: str, pretrained: str) -> tuple[str, dict]:
    """A local checkpoint path for ``pretrained`` (a path or a cached tag), never the network."""
    if os.path.exists(pretrained):
        return pretrained, {}
    open_clip = _open_clip()
    cfg = open_clip.get_pretrained_cfg(model, pretrained)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(model)
        raise EmbedderUnavailableError(
            f"{pretrained!r} is neither a file nor an open_clip pretrained tag for {model} "
            f"(tags: {', '.join(tags) or 'none'})"
        )
    extra = {"force_quick_gelu": True} if cfg.get("quick_gelu") else {}
    repo = (cfg.get("hf_hub") or "").strip("/")
    if repo:
        from huggingface_hub import try_to_load_from_cache

        for filename in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
            cached = try_to_load_from_cache(repo, filename)
            if isinstance(cached, str) and os.path.exists(cached):
                return cached, extra
    raise EmbedderUnavailableError(
        f"CLIP weights {model}/{pretrained} are not on this machine and provenance never downloads at "
        f"run time. Download them where a network exists (for example open_clip.create_model_and_transforms"
        f"({model!r}, pretrained={pretrained!r}) fills the Hugging Face cache, or fetch the checkpoint "
        f"file) and pass pretrained=PATH to the .pt/.safetensors file"
    )


def _build_model(model: str, pretrained: str | None, image_size: int | None):
    open_clip = _open_clip()
    path, extra = _resolve_weights(model, pretrained) if pretrained else (None, {})
    if image_size:
        extra["force_image_size"] = image_size
    try:
        created = open_clip.create_model_and_transforms(model, pretrained=path, **extra)
    except Exception as exc:
        raise EmbedderUnavailableError(f"could not load CLIP weights {pretrained!r} for {model} ({exc})") from None
    clip_model = created[0]
    clip_model.eval()
    return clip_model
