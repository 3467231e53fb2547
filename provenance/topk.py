"""Top-k inner products of row vectors, in torch when the process already has it, else numpy.

Torch, once loaded for the model, owns a thread pool that its matrix products reuse;
numpy's BLAS threads would spin beside it. A process whose forward runs in ONNX Runtime
never loads torch (and so maps none of its CUDA libraries); there numpy does the work.
"""

from __future__ import annotations

import sys

import numpy as np


def top_dots(queries: np.ndarray, stored: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per query row, the ``k`` largest dots with ``stored``'s rows and their row numbers, best first."""
    k = min(k, len(stored))
    torch = sys.modules.get("torch")
    if torch is not None:
        with torch.inference_mode():
            scores, rows = torch.topk(torch.from_numpy(queries) @ torch.from_numpy(stored).T, k, dim=1)
        return scores.numpy(), rows.numpy()
    scores = np.ascontiguousarray(queries, dtype=np.float32) @ stored.T
    if k <= 2:  # the ratio test's two nearest: repeated argmax is several times faster than argpartition
        return _top_few(scores, k)
    if k < scores.shape[1]:
        candidates = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    else:
        candidates = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
    order = np.argsort(-np.take_along_axis(scores, candidates, axis=1), axis=1, kind="stable")
    rows = np.take_along_axis(candidates, order, axis=1)
    return np.take_along_axis(scores, rows, axis=1), rows


def _top_few(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    rows = np.arange(len(scores))
    found_scores, found_rows = [], []
    for _ in range(k):
        best = np.argmax(scores, axis=1)
        found_rows.append(best)
        found_scores.append(scores[rows, best].copy())
        scores[rows, best] = -np.inf  # the product is ours: mark the taken column in place
    return np.stack(found_scores, axis=1), np.stack(found_rows, axis=1)
