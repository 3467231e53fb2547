"""provenance.blas: one BLAS thread inside queries, the process's own count restored after the last."""

import threading

import numpy as np
import pytest
from threadpoolctl import ThreadpoolController

from provenance.blas import single_threaded_blas


def blas_threads() -> set[int]:
    return {library["num_threads"] for library in ThreadpoolController().info() if library["user_api"] == "blas"}


@pytest.fixture
def several_blas_threads():
    """The BLAS libraries' own thread counts (a one-core machine has nothing to limit)."""
    np.ones((4, 4)) @ np.ones((4, 4))  # numpy's BLAS is loaded
    counts = blas_threads()
    if not counts or min(counts) < 2:
        pytest.skip("no BLAS library with more than one thread")
    return counts


def test_one_thread_inside_and_restored_after(several_blas_threads):
    with single_threaded_blas():
        assert blas_threads() == {1}
        with single_threaded_blas():  # nested, as a query inside a service request would be
            assert blas_threads() == {1}
        assert blas_threads() == {1}
    assert blas_threads() == several_blas_threads


def test_overlapping_callers_restore_only_after_the_last(several_blas_threads):
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    seen = {}

    def first():
        with single_threaded_blas():
            first_in.set()
            second_in.wait(5)
        first_out.set()

    def second():
        first_in.wait(5)
        with single_threaded_blas():
            second_in.set()
            first_out.wait(5)
            seen["after the first left"] = blas_threads()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert seen["after the first left"] == {1}
    assert blas_threads() == several_blas_threads


def test_restored_when_the_block_raises(several_blas_threads):
    with pytest.raises(RuntimeError):
        with single_threaded_blas():
            raise RuntimeError("a failed query")
    assert blas_threads() == several_blas_threads


def test_a_forked_child_can_limit_again(several_blas_threads):
    import multiprocessing

    with single_threaded_blas():  # the parent's changer thread exists before the fork
        pass
    context = multiprocessing.get_context("fork")
    with context.Pool(1) as pool:
        assert pool.apply_async(_limited_in_child).get(timeout=30) == {1}


def _limited_in_child() -> set[int]:
    with single_threaded_blas():
        return blas_threads()
