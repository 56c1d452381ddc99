"""Writing a running deploy's output into the log as it comes, for every dashboard to show.

``andon deploy`` and a rollback's runner (:mod:`backend.deployer`, :mod:`backend.rollback`)
give every piece of their command's output (and andon's own lines about it: a rollback's
target, verification) to a :class:`LiveOutput`, which appends it to the deploy's stream in
the log (:mod:`backend.store.output`); the row's final output is still written once, when
it ends.

* **Never in the way.** :meth:`LiveOutput.write` only adds to a buffer: it never waits for
  the log and never raises. A thread of its own writes the buffer, so a log held by another
  writer (even longer than the busy timeout) never slows the command's output nor fails the
  deploy: a write that fails is tried again at the next turn, and the final output lands at
  the end as always.
* **Throttled.** At most one write transaction every ``every`` seconds (0.3): the first
  output goes at once, what comes after it waits for the next turn. A write is one
  transaction of rows of at most ``chunk`` characters.
* **Bounded** as the final output is (:data:`backend.runner.OUTPUT_LIMIT`, split as
  :func:`backend.runner.split_limit` splits it): the log keeps the stream's first part and
  its most recent part, and so does the buffer while the log cannot be written, its middle
  becoming a jump in positions that readers show as characters not kept.
* :meth:`LiveOutput.close` stops it without writing what is still buffered: the row's
  final output, written right after, holds it all (and replaces the stream).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from backend.runner import OUTPUT_LIMIT, split_limit
from backend.store.core import BUSY_TIMEOUT
from backend.text import clean_line

if TYPE_CHECKING:
    from backend.store import DeployLog

FLUSH_EVERY = 0.3  # seconds between two writes into the log, at least
CHUNK = 16 * 1024  # characters in one row of the stream, at most


class LiveOutput:
    """The live output of running deploy ``deploy_id`` in ``log`` (see the module's docstring)."""

    def __init__(self, log: DeployLog, deploy_id: int, *, every: float = FLUSH_EVERY, chunk: int = CHUNK,
                 limit: int = OUTPUT_LIMIT, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.log = log
        self.deploy_id = deploy_id
        self.every = every
        self.chunk = chunk
        self.head, self.tail = split_limit(limit)
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._pending: list[tuple[int, str]] = []  # (start, text) not written yet, in order
        self._buffered = 0  # characters in _pending
        self._position = 0  # characters of output so far: where the next write() starts
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        self.writes = 0  # write transactions that succeeded
        self.failures = 0  # and that failed (tried again at the next turn)
        self.error = ""  # why the last one failed

    def write(self, text: str) -> None:
        """Add ``text`` (cleaned output) to the stream; it reaches the log within ``every`` seconds."""
        if not text or self._closed.is_set():
            return
        with self._lock:
            self._pending.append((self._position, text))
            self._position += len(text)
            self._buffered += len(text)
            if self._buffered > 2 * (self.head + self.tail):  # the log has not been written for a while
                self._trim()
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="andon-live-output", daemon=True)
                self._thread.start()
        self._wake.set()

    def close(self) -> None:
        """Stop writing (what is still buffered is left to the row's final output)."""
        self._closed.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(BUSY_TIMEOUT + 5.0)  # at most one write under way

    def __enter__(self) -> LiveOutput:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- the writing thread -----------------------------------------------------------------

    def _run(self) -> None:
        last: float | None = None
        while True:
            self._wake.wait()
            if self._closed.is_set():
                return
            if last is not None:
                left = last + self.every - self._monotonic()
                if left > 0 and self._closed.wait(left):
                    return
            self._wake.clear()
            self._flush()
            last = self._monotonic()

    def _flush(self) -> None:
        with self._lock:
            pending, self._pending, self._buffered = self._pending, [], 0
        if not pending:
            return
        try:
            self.log.append_output(self.deploy_id, self._rows(pending), keep_head=self.head, keep_tail=self.tail)
        except Exception as error:  # noqa: BLE001 - a failed write never fails the deploy: try again next time
            with self._lock:
                self._pending = pending + self._pending
                self._buffered += sum(len(text) for _, text in pending)
            self.failures += 1
            self.error = clean_line(str(error))
            self._wake.set()  # tried again at the next turn, output or not
            return
        self.writes += 1

    def _rows(self, pending: list[tuple[int, str]]) -> list[tuple[int, str]]:
        """The pending pieces as rows: contiguous ones joined, then cut at ``chunk`` characters."""
        joined: list[tuple[int, list[str]]] = []
        end = -1
        for start, text in pending:
            if start == end:
                joined[-1][1].append(text)
            else:
                joined.append((start, [text]))
            end = start + len(text)
        rows = []
        for start, parts in joined:
            text = "".join(parts)
            rows += [(start + at, text[at:at + self.chunk]) for at in range(0, len(text), self.chunk)]
        return rows

    def _trim(self) -> None:
        """Drop the buffer's characters that the log would not keep: past the stream's first
        ``head`` and before its last ``tail`` (under the lock)."""
        cut = self._position - self.tail
        kept: list[tuple[int, str]] = []
        for start, text in self._pending:
            stop = start + len(text)
            if stop <= self.head or start >= cut:
                kept.append((start, text))
                continue
            if start < self.head:
                kept.append((start, text[:self.head - start]))
            if stop > cut:
                kept.append((max(start, cut), text[max(start, cut) - start:]))
        self._pending = kept
        self._buffered = sum(len(text) for _, text in kept)
