"""Top-k inner products: the numpy path (no torch loaded) agrees with a brute-force sort and with torch."""

import json
import subprocess
import sys

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from provenance.topk import top_dots


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 6), stored=st.integers(1, 40), k=st.integers(1, 50), seed=st.integers(0, 10_000))
def test_top_dots_is_the_brute_force_top_k(rows, stored, k, seed):
    rng = np.random.default_rng(seed)
    queries = rng.normal(size=(rows, 8)).astype(np.float32)
    vectors = rng.normal(size=(stored, 8)).astype(np.float32)
    scores, columns = top_dots(queries, vectors, k)
    expected = np.sort(queries @ vectors.T, axis=1)[:, ::-1][:, : min(k, stored)]
    assert columns.shape == expected.shape
    assert np.allclose(scores, expected, atol=1e-5)
    assert np.allclose(np.take_along_axis(queries @ vectors.T, columns, axis=1), scores, atol=1e-5)


def test_the_numpy_path_matches_torch():
    script = ("import numpy as np; from provenance.topk import top_dots; import sys; "
              "rng = np.random.default_rng(3); q = rng.normal(size=(5, 64)).astype(np.float32); "
              "s = rng.normal(size=(300, 64)).astype(np.float32); "
              "assert 'torch' not in sys.modules; _, rows = top_dots(q, s, 7); print(rows.tolist())")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    import torch  # loaded here: top_dots now takes the torch path

    assert "torch" in sys.modules and torch.get_num_threads() >= 1

    rng = np.random.default_rng(3)
    queries, stored = rng.normal(size=(5, 64)).astype(np.float32), rng.normal(size=(300, 64)).astype(np.float32)
    assert top_dots(queries, stored, 7)[1].tolist() == json.loads(done.stdout)
