"""PDQ hashing and the faiss-backed PdqIndex (provenance.verify.pdq)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from provenance.verify.pdq import (
    DIHEDRAL_NAMES,
    MATCH_THRESHOLD,
    PdqIndex,
    from_hex,
    hamming,
    pdq_dihedral,
    pdq_hash,
    to_hex,
)

from .test_verify_keypoints import synthetic_photo


def _jpeg(image: Image.Image, quality: int = 70) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def _brute_hamming(queries: np.ndarray, database: np.ndarray) -> np.ndarray:
    return np.unpackbits(queries[:, None, :] ^ database[None, :, :], axis=2).sum(axis=2)


@settings(max_examples=50, deadline=None)
@given(st.binary(min_size=32, max_size=32))
def test_hex_round_trip(hash_):
    text = to_hex(hash_)
    assert len(text) == 64 and text == text.lower()
    assert from_hex(text) == hash_
    assert from_hex(text.upper()) == hash_


@pytest.mark.parametrize("bad", ["", "ab" * 31, "zz" * 32, "ab" * 33])
def test_from_hex_rejects_bad_strings(bad):
    with pytest.raises(ValueError):
        from_hex(bad)


def test_to_hex_rejects_wrong_length():
    with pytest.raises(ValueError):
        to_hex(b"\x00" * 31)


def test_hash_is_stable_under_reencoding_and_differs_between_images():
    image = synthetic_photo(41)
    hash_, quality = pdq_hash(image)
    assert len(hash_) == 32 and 0 <= quality <= 100 and quality >= 50
    copy_hash, _ = pdq_hash(_jpeg(image.resize((240, 180), Image.Resampling.LANCZOS)))
    assert hamming(hash_, copy_hash) <= MATCH_THRESHOLD
    other, _ = pdq_hash(synthetic_photo(42))
    assert hamming(hash_, other) > 2 * MATCH_THRESHOLD


def test_hex_order_matches_pdqhash_bit_vector():
    """ThreatExchange's hex: first hex digit = bits 255..252 = pdqhash's vector[0:4]."""
    import pdqhash

    image = synthetic_photo(43)
    bits, _ = pdqhash.compute(np.asarray(image))
    text = to_hex(pdq_hash(image)[0])
    assert int(text[0], 16) == int("".join(str(int(b)) for b in bits[:4]), 2)
    assert int(text, 16) == int("".join(str(int(b)) for b in bits), 2)


def test_dihedral_variants_and_max_side():
    image = synthetic_photo(44)
    variants = pdq_dihedral(image)
    assert len(variants) == len(DIHEDRAL_NAMES) == 8
    assert variants[0] == pdq_hash(image)[0]
    assert len(set(variants)) == 8
    small, _ = pdq_hash(image, max_side=200)
    assert hamming(small, variants[0]) <= MATCH_THRESHOLD


@pytest.mark.parametrize(
    "transpose",
    [Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180, Image.Transpose.FLIP_LEFT_RIGHT, Image.Transpose.TRANSVERSE],
)
def test_dihedral_query_finds_rotated_or_flipped_copy(transpose):
    references = [synthetic_photo(seed) for seed in (50, 51, 52, 53)]
    index = PdqIndex()
    index.add([100, 101, 102, 103], [pdq_hash(im)[0] for im in references])
    query = _jpeg(references[2].transpose(transpose))
    plain_d, plain_ids = index.search(pdq_hash(query)[0], 1)
    distances, ids = index.search(pdq_dihedral(query), 2)
    assert ids[0] == 102 and distances[0] <= MATCH_THRESHOLD
    assert distances[1] > MATCH_THRESHOLD
    assert plain_d[0] > MATCH_THRESHOLD  # the plain hash alone misses it


def test_search_matches_brute_force():
    rng = np.random.default_rng(7)
    database = rng.integers(0, 256, (300, 32), dtype=np.uint8)
    # Plant near neighbours so that small distances occur.
    database[:20] = database[20:40] ^ (rng.random((20, 32)) < 0.03).astype(np.uint8)
    ids = rng.permutation(10_000)[:300].astype(np.int64)
    index = PdqIndex()
    index.add(ids, database)
    assert len(index) == 300
    for trial in range(10):
        variants = database[rng.integers(0, 300, 3)] ^ (rng.random((3, 32)) < 0.05).astype(np.uint8)
        expected = _brute_hamming(variants, database).min(axis=0)
        k = 15
        distances, found = index.search([bytes(v) for v in variants], k)
        assert len(found) == k and len(set(found.tolist())) == k
        assert list(distances) == sorted(expected)[:k]
        by_id = dict(zip(ids.tolist(), expected.tolist()))
        assert all(by_id[i] == d for i, d in zip(found.tolist(), distances.tolist()))
        close_d, close_ids = index.search([bytes(v) for v in variants], 300, max_distance=60)
        assert set(close_ids.tolist()) == {i for i, d in by_id.items() if d <= 60}


def test_remove_and_serialise_round_trip():
    rng = np.random.default_rng(8)
    hashes = [bytes(rng.integers(0, 256, 32, dtype=np.uint8)) for _ in range(50)]
    index = PdqIndex()
    index.add(range(1000, 1050), hashes)
    with pytest.raises(ValueError):
        index.add([1000], [hashes[0]])
    with pytest.raises(ValueError):
        index.add([1, 2], [hashes[0]])
    assert index.remove([1000, 1001, 99999]) == 2
    assert len(index) == 48
    distances, ids = index.search(hashes[0], 1)
    assert ids[0] != 1000 and distances[0] > 0
    restored = PdqIndex.deserialize(index.serialize())
    assert len(restored) == 48
    assert sorted(restored.ids().tolist()) == list(range(1002, 1050))
    assert restored.search(hashes[10], 1)[1][0] == 1010
    with pytest.raises(Exception):
        PdqIndex.deserialize(b"not an index")


def test_empty_index_and_empty_queries():
    index = PdqIndex()
    distances, ids = index.search(b"\x00" * 32, 5)
    assert len(distances) == 0 and len(ids) == 0
    index.add([], [])
    assert len(index) == 0
