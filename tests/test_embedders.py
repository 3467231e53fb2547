"""Conformance: every registered embedder must pass these."""

import copy
import time

import numpy as np
import pytest

from provenance.embedders import available_embedders, create_embedder, register_embedder
from provenance.errors import BadInputError, EmbedderUnavailableError

from .conftest import synthetic_photo

EMBEDDER_CASES = {
    "effnet-lite0": {},
    # random weights, asked for explicitly: the tests check behaviour, not quality
    "clip": {"model": "RN50", "pretrained": None, "image_size": 96},
}


@pytest.fixture(scope="module", params=sorted(EMBEDDER_CASES))
def embedder(request, effnet):
    if request.param == "effnet-lite0":
        return effnet
    return create_embedder(request.param, **EMBEDDER_CASES[request.param])


def test_every_registered_embedder_is_covered():
    assert set(available_embedders()) == set(EMBEDDER_CASES)


def test_shape_dtype_and_unit_norm(embedder):
    vectors = embedder.embed([synthetic_photo(1), synthetic_photo(2, size=(100, 300))])
    assert vectors.shape == (2, embedder.dim)
    assert vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert embedder.embed([]).shape == (0, embedder.dim)


def test_deterministic_and_batch_equals_single(embedder):
    images = [synthetic_photo(seed) for seed in range(3)]
    batch = embedder.embed(images)
    again = embedder.embed(images)
    singles = np.concatenate([embedder.embed([image]) for image in images])
    assert np.allclose(batch, again, atol=1e-6)
    assert np.allclose(batch, singles, atol=1e-4)


def test_fingerprint_is_stable_and_describes_config(embedder):
    assert embedder.fingerprint == embedder.fingerprint
    described = embedder.describe()
    assert described["name"] == embedder.name and described["dim"] == embedder.dim
    assert len(embedder.fingerprint) == 16


def test_effnet_fingerprint_changes_with_config(effnet):
    other = create_embedder("effnet-lite0", gem_p=4.0)
    assert other.fingerprint != effnet.fingerprint


def test_effnet_separates_different_photos_and_matches_edits(effnet):
    original, other = synthetic_photo(10), synthetic_photo(11)
    edited = original.resize((200, 150)).rotate(0)
    vectors = effnet.embed([original, edited, other])
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]


def test_clip_without_weights_fails_fast_with_instructions():
    started = time.perf_counter()
    with pytest.raises(EmbedderUnavailableError, match="pretrained=PATH"):
        create_embedder("clip")
    with pytest.raises(EmbedderUnavailableError, match="pretrained=PATH"):
        create_embedder("clip", model="RN50", pretrained="openai")._load()
    with pytest.raises(EmbedderUnavailableError, match="neither a file nor"):
        create_embedder("clip", model="RN50", pretrained="no-such-tag")._load()
    assert time.perf_counter() - started < 20


def test_clip_loads_local_checkpoint(tmp_path):
    import torch

    random_model = create_embedder("clip", model="RN50", pretrained=None, image_size=64)
    checkpoint = tmp_path / "rn50.pt"
    torch.save(random_model._load().state_dict(), checkpoint)
    from_file = create_embedder("clip", model="RN50", pretrained=str(checkpoint), image_size=64)
    image = [synthetic_photo(4)]
    assert np.allclose(from_file.embed(image), random_model.embed(image), atol=1e-5)


def test_registry_rejects_duplicates_and_unknown_names():
    with pytest.raises(ValueError):
        register_embedder("effnet-lite0", "x:y")
    with pytest.raises(BadInputError, match="unknown embedder"):
        create_embedder("nope")


@pytest.mark.parametrize("side", [32, 33])
def test_inference_rewrites_keep_outputs(side):
    """Folded batch norms and static padding compute what the original layers compute."""
    import torch
    import torch.nn as nn
    from timm.layers import BatchNormAct2d, Conv2dSame

    from provenance.embedders.inference import fold_batch_norms, static_same_padding

    torch.manual_seed(side)
    block = nn.Sequential(Conv2dSame(3, 8, 3, stride=2), BatchNormAct2d(8), Conv2dSame(8, 8, 5, stride=2, groups=8),
                          nn.BatchNorm2d(8), nn.Conv2d(8, 4, 1), BatchNormAct2d(4, apply_act=False))
    for layer in block:
        if isinstance(layer, nn.BatchNorm2d):  # eval-mode norms with non-trivial statistics
            layer.running_mean.uniform_(-1, 1)
            layer.running_var.uniform_(0.5, 2)
            layer.weight.data.uniform_(0.5, 1.5)
            layer.bias.data.uniform_(-0.5, 0.5)
    block.eval()
    inputs = torch.randn(2, 3, side, side)
    with torch.inference_mode():
        expected = block(inputs)
    rewritten = static_same_padding(fold_batch_norms(copy.deepcopy(block)), inputs[:1])
    assert not any(isinstance(layer, (nn.BatchNorm2d, Conv2dSame)) for layer in rewritten.modules())
    with torch.inference_mode():
        assert torch.allclose(rewritten(inputs), expected, atol=1e-5)


@pytest.mark.parametrize("image_size", [224, 200])
def test_effnet_inference_model_matches_timm_model(image_size):
    import torch

    from provenance.embedders.effnet import build_lite0_model

    inputs = torch.rand(2, 3, image_size, image_size) * 2 - 1
    with torch.inference_mode():
        expected = build_lite0_model().forward_features(inputs)
        rewritten = build_lite0_model(image_size=image_size).forward_features(inputs)
    assert torch.allclose(rewritten, expected, atol=1e-4 * float(expected.abs().max()))


class _Payload:
    """Unpickling this runs code: what a hostile checkpoint would carry."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_a_checkpoint_carrying_code_is_refused_unrun(tmp_path):
    import torch

    from provenance.errors import EmbedderUnavailableError

    marker = tmp_path / "pwned"
    checkpoint = tmp_path / "hostile.pt"
    torch.save({"state_dict": {"x": _Payload(str(marker))}}, checkpoint)
    with pytest.raises(EmbedderUnavailableError, match="could not load CLIP weights"):
        create_embedder("clip", model="RN50", pretrained=str(checkpoint), image_size=64)._load()
    assert not marker.exists()


def test_onnx_runtime_matches_torch_and_is_cached(tmp_path):
    torch_model = create_embedder("effnet-lite0", runtime="torch")
    onnx = create_embedder("effnet-lite0", runtime="onnx", onnx_cache=str(tmp_path))
    assert onnx.fingerprint == torch_model.fingerprint  # same vectors to rounding: indexes stay compatible
    images = [synthetic_photo(seed, size=(200 + 20 * seed, 180)) for seed in range(6)]
    expected, got = torch_model.embed(images), onnx.embed(images)
    assert got.shape == expected.shape and np.all((expected * got).sum(axis=1) >= 1 - 1e-4)
    assert (torch_model.active_runtime, onnx.active_runtime) == ("torch", "onnx")
    (exported,) = tmp_path.glob("*.onnx")
    stamp = exported.stat().st_mtime_ns
    again = create_embedder("effnet-lite0", runtime="onnx", onnx_cache=str(tmp_path))
    assert np.allclose(again.embed(images[:2]), got[:2], atol=1e-6)
    assert exported.stat().st_mtime_ns == stamp  # loaded, not exported again
    with pytest.raises(BadInputError, match="runtime must be"):
        create_embedder("effnet-lite0", runtime="tensorflow")


def test_onnx_threads_follow_torch_and_stay_off_idle_cores(tmp_path):
    import torch

    onnx = create_embedder("effnet-lite0", runtime="onnx", onnx_cache=str(tmp_path))
    images = [synthetic_photo(seed) for seed in range(3)]
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = onnx.embed(images)
        torch.set_num_threads(2)
        two = onnx.embed(images)
    finally:
        torch.set_num_threads(previous)
    sessions = onnx._onnx._sessions
    assert {1, 2} <= set(sessions)
    for threads in (1, 2):
        assert sessions[threads].get_session_options().intra_op_num_threads == threads
    assert np.allclose(one, two, atol=1e-5)


def test_auto_runtime_is_onnx_by_default_and_falls_back_to_torch(tmp_path, effnet):
    images = [synthetic_photo(seed) for seed in range(2)]
    assert effnet.runtime == "auto"
    effnet.embed(images[:1])
    assert effnet.active_runtime == "onnx", effnet.onnx_unavailable
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")  # the export cannot be kept here
    fallback = create_embedder("effnet-lite0", onnx_cache=str(blocked))
    assert fallback.active_runtime is None  # not decided before the first forward
    vectors = fallback.embed(images)
    assert fallback.active_runtime == "torch" and "cannot keep the ONNX export" in fallback.onnx_unavailable
    assert np.all((vectors * effnet.embed(images)).sum(axis=1) >= 1 - 1e-4)
    with pytest.raises(EmbedderUnavailableError, match="cannot keep the ONNX export"):
        create_embedder("effnet-lite0", runtime="onnx", onnx_cache=str(blocked)).embed(images)


def test_a_checked_export_loads_in_a_process_without_torch(tmp_path):
    import subprocess
    import sys

    create_embedder("effnet-lite0", runtime="onnx", onnx_cache=str(tmp_path)).embed([synthetic_photo(1)])
    script = ("import sys, numpy as np; from provenance.embedders import create_embedder; "
              f"e = create_embedder('effnet-lite0', runtime='onnx', onnx_cache={str(tmp_path)!r}); "
              "v = e.embed_arrays(np.zeros((2, 224, 224, 3), np.uint8)); "
              "print(v.shape, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["(2,", "1280)", "False"]
    # a damaged cached export no longer matches its digest: it is exported and checked again
    (exported,) = tmp_path.glob("*.onnx")
    exported.write_bytes(exported.read_bytes()[:1000])
    again = create_embedder("effnet-lite0", runtime="onnx", onnx_cache=str(tmp_path))
    assert again.embed([synthetic_photo(1)]).shape == (1, 1280)
    assert exported.stat().st_size > 1000
