"""The index's descriptor codes: FAISS's layout, nearest centroids, both quantiser shapes readable."""

import numpy as np
import pytest

from provenance.features import StoredKeypoints, decode_local_features, encode_local_features
from provenance.index import codecs as codecs_module
from provenance.index.codecs import Codecs, pack_codes, train_codecs, unpack_codes


def _root_sift(rng: np.random.Generator, count: int) -> np.ndarray:
    raw = rng.gamma(0.6, size=(count, 128)).astype(np.float32)
    return np.sqrt(raw / raw.sum(axis=1, keepdims=True))


@pytest.fixture(scope="module")
def wide() -> tuple[Codecs, np.ndarray]:
    rng = np.random.default_rng(3)
    descriptors = _root_sift(rng, codecs_module.MIN_WIDE_TRAIN_DESCRIPTORS * 10 // 9 + 1)  # a tenth is held out
    return train_codecs(rng.normal(size=(64, 32)).astype(np.float32), descriptors), descriptors


@pytest.mark.parametrize("bits", [6, 8, 12])
def test_packed_codes_round_trip(bits):
    rng = np.random.default_rng(bits)
    codes = rng.integers(0, 1 << bits, size=(50, 8))
    packed = pack_codes(codes, bits)
    assert packed.dtype == np.uint8 and packed.shape == (50, (8 * bits + 7) // 8)
    assert np.array_equal(unpack_codes(packed, 8, bits), codes)


def _errors(codecs: Codecs, descriptors: np.ndarray, codes: np.ndarray) -> np.ndarray:
    return np.sum((descriptors - codecs.decode_descriptors(codes)) ** 2, axis=1)


def test_codes_are_faiss_product_quantiser_codes(wide):
    import faiss

    codecs, descriptors = wide
    subvectors, centroids, width = codecs.descriptor_centroids.shape
    assert (subvectors, centroids, width) == (8, 4096, 16) and codecs.descriptor_bytes == 12
    pq = faiss.ProductQuantizer(128, subvectors, 12)
    faiss.copy_array_to_vector(np.ascontiguousarray(codecs.descriptor_centroids.ravel()), pq.centroids)
    sample = np.ascontiguousarray(descriptors[:500])
    ours, theirs = codecs.encode_descriptors(sample), pq.compute_codes(sample)
    # the same bit layout both ways; the same nearest centroids up to float ties
    np.testing.assert_array_equal(codecs.decode_descriptors(ours), pq.decode(ours))
    np.testing.assert_array_equal(codecs.decode_descriptors(theirs), pq.decode(theirs))
    np.testing.assert_allclose(_errors(codecs, sample, ours), _errors(codecs, sample, theirs), atol=1e-5)


def test_each_sub_vector_decodes_to_its_nearest_centroid(wide):
    codecs, descriptors = wide
    sample = descriptors[:40]
    decoded = codecs.decode_descriptors(codecs.encode_descriptors(sample)).reshape(40, 8, 16)
    for sub in range(8):
        centres = codecs.descriptor_centroids[sub]
        distances = ((sample.reshape(40, 8, 16)[:, sub, None, :] - centres[None]) ** 2).sum(axis=2)
        chosen = ((decoded[:, sub] - sample.reshape(40, 8, 16)[:, sub]) ** 2).sum(axis=1)
        np.testing.assert_allclose(chosen, distances.min(axis=1), rtol=1e-4, atol=1e-6)


def test_a_small_sample_trains_the_eight_bit_quantiser():
    rng = np.random.default_rng(5)
    small = train_codecs(rng.normal(size=(64, 32)).astype(np.float32), _root_sift(rng, 4000))
    assert small.descriptor_centroids.shape == (16, 256, 8) and small.descriptor_bytes == 16


def test_records_of_either_shape_decode_with_their_own_codecs(wide):
    rng = np.random.default_rng(7)
    narrow = train_codecs(rng.normal(size=(64, 32)).astype(np.float32), _root_sift(rng, 4000))
    xy = (rng.uniform(0, 1, size=(30, 2)) * [200, 150]).astype(np.float32)
    root = _root_sift(rng, 30)
    keypoints = StoredKeypoints(xy, root, 200, 150)
    for codecs in (wide[0], narrow):
        record = encode_local_features(keypoints, codecs)
        assert len(record) - len(encode_local_features(StoredKeypoints(xy[:0], root[:0], 200, 150), codecs)) \
            == 30 * (3 + codecs.descriptor_bytes)
        decoded = decode_local_features(record, Codecs.from_bytes(codecs.to_bytes()))
        np.testing.assert_allclose(decoded.xy, xy, atol=200 / 4095 + 1e-4)
        expected = codecs.decode_descriptors(codecs.encode_descriptors(root))
        expected /= np.linalg.norm(expected, axis=1, keepdims=True)
        np.testing.assert_allclose(decoded.root_sift, expected, atol=1e-6)
        assert np.mean(np.sum(root * decoded.root_sift, axis=1)) > 0.8  # close to what was coded
    with pytest.raises(ValueError, match="wrong length"):
        decode_local_features(encode_local_features(keypoints, wide[0]), narrow)


def test_codecs_of_another_shape_are_refused(wide):
    codecs = wide[0]
    odd = Codecs(codecs.vector_ranges, np.zeros((4, 256, 32), np.float32), codecs.word_codebook)
    with pytest.raises(ValueError, match="wrong shape"):
        Codecs.from_bytes(odd.to_bytes())


def _coding_error(codecs: Codecs, descriptors: np.ndarray) -> float:
    decoded = codecs.decode_descriptors(codecs.encode_descriptors(descriptors))
    decoded /= np.linalg.norm(decoded, axis=1, keepdims=True)
    return float(np.mean(np.sum((descriptors - decoded) ** 2, axis=1)))


def test_the_coding_error_is_what_new_descriptors_get(wide):
    codecs, trained_on = wide
    fresh = _coding_error(codecs, _root_sift(np.random.default_rng(11), 5000))
    assert codecs.descriptor_error == pytest.approx(fresh, rel=0.05)
    # on the descriptors it was fitted to the quantiser does better than on new ones
    assert _coding_error(codecs, trained_on[:5000]) < 0.95 * fresh


def test_coding_in_blocks_on_threads_equals_coding_row_by_row(wide, monkeypatch):
    codecs, descriptors = wide
    monkeypatch.setattr(codecs_module, "ENCODE_BLOCK", 64)
    sample = descriptors[:1000]  # 16 blocks a sub-vector: the threaded path
    together = codecs.encode_descriptors(sample)
    apart = np.concatenate([codecs.encode_descriptors(sample[start:start + 7]) for start in range(0, 1000, 7)])
    assert together.shape == apart.shape == (1000, 12)
    np.testing.assert_allclose(_errors(codecs, sample, together), _errors(codecs, sample, apart), atol=1e-5)
