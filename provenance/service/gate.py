"""Admission and consistency for a service's queries: bounded concurrency, one committed state each.

:class:`QueryGate` lets at most ``running`` queries run and ``waiting`` more wait; anything
beyond is refused at once (:class:`Overloaded`), so a burst never builds an unbounded queue.
Queries run under the shared side of a readers-writer lock; when another process has
committed a save (a reindex, a removal), the next query takes the exclusive side, waits for
the running ones to finish, reloads, and lets queries in again, so no answer mixes two states.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator, TypeVar

Result = TypeVar("Result")


class Overloaded(Exception):
    """Every running and waiting slot is taken."""


class QueryGate:
    """Runs query functions against ``engine`` (read-only, ``follow_writers`` off) within bounds."""

    def __init__(self, engine: Any, running: int = 2, waiting: int = 8):
        if running < 1 or waiting < 0:
            raise ValueError("running must be at least 1 and waiting at least 0")
        self.engine = engine
        engine.follow_writers = False  # reloads happen here, never under a running query
        self.running_limit, self.waiting_limit = running, waiting
        self._admitted = 0  # running or waiting
        self._admit_lock = threading.Lock()
        self._slots = threading.Semaphore(running)
        self._state = threading.Condition()
        self._readers = 0
        self._reloading = False
        self.reloads = 0

    @property
    def admitted(self) -> int:
        return self._admitted

    def admit(self) -> None:
        """Take a place (running or waiting), or raise :class:`Overloaded`; pair with :meth:`release`."""
        with self._admit_lock:
            if self._admitted >= self.running_limit + self.waiting_limit:
                raise Overloaded(f"{self._admitted} queries running or waiting")
            self._admitted += 1

    def release(self) -> None:
        with self._admit_lock:
            self._admitted -= 1

    def run(self, query: Callable[[], Result]) -> Result:
        """Run ``query`` once a slot is free, on the newest committed state (call after :meth:`admit`)."""
        with self._slots:
            self._follow_writers()
            with self._shared():
                return query()

    def _follow_writers(self) -> None:
        if not self.engine.is_stale():
            return
        with self._state:
            while self._reloading:
                self._state.wait()
            self._reloading = True
            while self._readers:
                self._state.wait()
        try:
            if self.engine.refresh():
                self.reloads += 1
        finally:
            with self._state:
                self._reloading = False
                self._state.notify_all()

    @contextmanager
    def _shared(self) -> Iterator[None]:
        with self._state:
            while self._reloading:
                self._state.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._state:
                self._readers -= 1
                self._state.notify_all()
