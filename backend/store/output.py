"""Live output: a running deploy's output, kept in the log as it comes, readable by any andon.

A deploy row gets its output once, when it finishes (a row changes only once:
:mod:`backend.store.deploys`). Until then the process running the command (``andon deploy``,
a rollback's runner) appends what the command printed here, in chunks
(:class:`backend.live_output.LiveOutput`: one write transaction every few tenths of a
second at most), and every dashboard reads it while the deploy runs.

* **Positions, no events.** Each row is a chunk of the stream with its ``start``: how many
  characters of output came before it. A reader keeps the position it has read up to and
  asks only for what comes after (:meth:`OutputMixin.streamed`, one index seek); a dashboard
  showing a running deploy asks every half second. No event is written per chunk: an event
  makes every open dashboard ask what changed, and a chunk is not news to the deploy list.
* **Bounded** like the final output (``backend.runner.OUTPUT_LIMIT``): the writer says how
  many characters of the start to keep and how many of the most recent ones; each append
  deletes the chunks in between that have fallen out of that window. A reader sees the jump
  in positions as ``[... N characters of output not kept ...]``, as in the final output.
* **Dropped when the row finishes**, by a trigger, in the same transaction that writes the
  row's final output. The final output is the record (the same text, bounded the same way):
  keeping the chunks as well would store every deploy's output twice, for nobody to read. A
  chunk that comes after the end (a writer slow to stop) is ignored by another trigger, so no
  finished deploy keeps any. A row ended because its andon died (``end_orphan`` in
  :mod:`backend.store.line`, after SIGKILL) gets what was streamed as the start of its final
  output (:func:`streamed_so_far`), so a killed deploy's output is not lost with it.
* **Untrusted**, as everything in the file: the text is cleaned as it is read.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from backend.store.core import LogCore, guard
from backend.text import clean, decode

SCHEMA = """
CREATE TABLE deploy_output (
    id INTEGER PRIMARY KEY,
    deploy_id INTEGER NOT NULL REFERENCES deploys(id),
    start INTEGER NOT NULL,          -- characters of the deploy's output before this chunk
    text TEXT NOT NULL
);
CREATE UNIQUE INDEX deploy_output_position ON deploy_output(deploy_id, start);
CREATE TRIGGER deploy_output_while_running BEFORE INSERT ON deploy_output
WHEN (SELECT status FROM deploys WHERE id = NEW.deploy_id) IS NOT 'running'
BEGIN SELECT RAISE(IGNORE); END;
CREATE TRIGGER deploy_output_dropped AFTER UPDATE OF status ON deploys
WHEN OLD.status = 'running' AND NEW.status != 'running'
BEGIN DELETE FROM deploy_output WHERE deploy_id = NEW.id; END;
"""

TAIL = 2000  # characters of the stream's end read for "the latest line"
TAIL_ROWS = 8  # chunks read at most for it


class Streamed(NamedTuple):
    """A running deploy's output read from position ``since``: the text (cleaned, with a note
    where chunks were not kept) and ``end``, the position to read on from."""

    deploy_id: int
    since: int
    end: int
    text: str


def _gap(characters: int) -> str:
    # The words backend.runner.BoundedOutput uses for what it cut from the final output.
    return f"\n[... {characters} characters of output not kept ...]\n"


def _assemble(rows: Iterable[tuple[Any, Any]], since: int) -> tuple[str, int]:
    """Chunks ``(start, text)`` in order as one text from ``since``, and the position after it.

    Rows another program wrote may be anything: a start that is not a number is skipped,
    bytes are decoded, a chunk overlapping what came before is cut.
    """
    parts: list[str] = []
    at = since
    for start, raw in rows:
        if type(start) is not int:
            continue
        text = decode(raw) if isinstance(raw, bytes) else raw if isinstance(raw, str) else ""
        if start > at:
            parts.append(_gap(start - at))
        elif start < at:
            text = text[at - start:]
            start = at
        parts.append(text)
        at = start + len(text)
    return clean("".join(parts)), at


def streamed_so_far(conn: sqlite3.Connection, deploy_id: int) -> str:
    """Everything streamed for ``deploy_id`` (inside the caller's transaction), ending with a
    newline unless empty: the start of the final output of a deploy whose andon died."""
    text, _ = _assemble(conn.execute("SELECT start, text FROM deploy_output WHERE deploy_id = ? ORDER BY start",
                                     (deploy_id,)), 0)
    return text if not text or text.endswith("\n") else text + "\n"


class OutputMixin(LogCore):
    """The deploy_output table (mixed into :class:`backend.store.DeployLog`)."""

    @guard
    def append_output(self, deploy_id: int, chunks: Sequence[tuple[int, str]], *, keep_head: int,
                      keep_tail: int) -> None:
        """Append ``chunks`` (``(start, text)``, in order) to the running deploy's stream, in one
        transaction, and delete the chunks that fell out of the window: those starting after the
        first ``keep_head`` characters and ending before the last ``keep_tail``. Ignored once the
        deploy has finished (its final output is written)."""
        chunks = [(start, text) for start, text in chunks if text]
        if not chunks:
            return
        end = max(start + len(text) for start, text in chunks)
        with self.immediate() as conn:
            conn.executemany("INSERT INTO deploy_output (deploy_id, start, text) VALUES (?, ?, ?)",
                             [(deploy_id, start, text) for start, text in chunks])
            conn.execute("DELETE FROM deploy_output WHERE deploy_id = ? AND start >= ? AND start < ?"
                         " AND start + length(text) <= ?", (deploy_id, keep_head, end - keep_tail,
                                                            end - keep_tail))

    @guard
    def streamed(self, deploy_id: int, since: int = 0) -> Streamed:
        """The running deploy's output from position ``since`` (0: all of it that is kept).

        Nothing once the deploy has finished: its final output is in its row.
        """
        with self._lock:
            rows = self._conn.execute("SELECT start, text FROM deploy_output WHERE deploy_id = ? AND start >= ?"
                                      " ORDER BY start", (deploy_id, since)).fetchall()
        text, end = _assemble(rows, since)
        return Streamed(deploy_id, since, end, text)

    @guard
    def streamed_tail(self, deploy_id: int, characters: int = TAIL) -> str:
        """The last ``characters`` of the running deploy's output ("" before any or once it ended):
        enough for its latest line, read from its newest chunks only."""
        with self._lock:
            rows = self._conn.execute("SELECT start, text FROM deploy_output WHERE deploy_id = ?"
                                      " ORDER BY start DESC LIMIT ?", (deploy_id, TAIL_ROWS)).fetchall()
        newest: list[tuple[Any, Any]] = []
        length = 0
        for row in rows:
            newest.append(row)
            length += len(row[1]) if isinstance(row[1], str | bytes) else 0
            if length >= characters:
                break
        if not newest:
            return ""
        first = newest[-1][0]
        text, _ = _assemble(reversed(newest), first if type(first) is int else 0)
        return text[-characters:]
