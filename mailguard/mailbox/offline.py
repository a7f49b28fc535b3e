"""``mailguard scan`` without the command line: scan paths, in parallel, results in input order.

The main process walks the inputs (discover.py) and cuts them into tasks: byte ranges of
each mbox (``CHUNK_SIZE``), batches of message files, messages read from stdin. Worker
processes, each with its own engine, run the tasks (worker.py); at most ``2 × jobs`` tasks
are in flight, so memory stays bounded whatever the input. Outcomes are taken back in
task order, so the results come out in the same order for any ``--jobs``. With
``--action tag|clean`` the main process is the only writer (rewrite.py).
"""

from __future__ import annotations

import collections
import os
import sys
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO, Callable, Iterator

from mailguard.errors import MailguardError, ScanError, StorageError, UsageError
from mailguard.mailbox.discover import (
    STDIN, VANISHED, MboxFile, MessageFile, Problem, Skipped, Stdin, discover,
)
from mailguard.mailbox.held import NOT_COMMITTED, HeldResults
from mailguard.mailbox.mbox import HEAD_SIZE, MboxMessage, NotAnMbox, read_mbox
from mailguard.mailbox.results import MessageResult, Summary
from mailguard.mailbox.rewrite import Keeper, MboxRewriter, rewrite_message_file
from mailguard.mailbox.sniff import SNIFF_SIZE, FileFormat, sniff_bytes
from mailguard.mailbox.worker import (
    Done, EngineFactory, FileBatch, InlineMessages, MboxChunk, MboxRow, Outcome, ScanEngine, Task, Worker,
    default_engine,
    TOO_LARGE, TOO_LARGE_TO_REWRITE, init_worker, policy_for_action, row_result, run_in_worker,
)

if TYPE_CHECKING:
    from mailguard.scan.policy import Policy

CHUNK_SIZE = 16 << 20          # most bytes of an mbox per task (results of a task are held until it ends)
MIN_CHUNK_SIZE = 1 << 20       # fewest: smaller tasks cost more in hand-offs than they win in balance
FILES_PER_TASK = 32            # message files per task
INLINE_BYTES_PER_TASK = 8 << 20  # bytes of stdin messages per task
ACTIONS = ("report", "tag", "clean")


@dataclass
class _MboxState:
    """Numbering (and the writer) of one mbox while its results come back."""

    source: str
    next_index: int = 0
    next_line: int = 1
    rewriter: MboxRewriter | None = None
    write_failed: bool = False   # a rewrite failed: the mbox is left unchanged, the rest is not rewritten
    held: HeldResults | None = None  # while rewriting: its results, until the new file is in place


class OfflineScan:
    """Use as a context manager; iterate ``results()``; read ``summary`` at the end."""

    def __init__(self, paths: list[str], policy: "Policy", *, jobs: int = 1, action: str = "report",
                 keep: Keeper | None = None, engine_factory: EngineFactory | None = None,
                 stdin: BinaryIO | None = None, exclude: tuple[str, ...] = (),
                 protected: tuple[str, ...] = ()) -> None:
        """``exclude``: folders never scanned (mailguard's state folder and quarantine);
        ``protected``: folders whose files are never rewritten (the quarantine)."""
        if action not in ACTIONS:
            raise UsageError(f"unknown action {action!r}: use one of {', '.join(ACTIONS)}")
        self.rewrite = action != "report"
        if self.rewrite and STDIN in paths:
            raise UsageError("standard input cannot be rewritten; use --action report with '-'")
        self.paths = paths
        self.policy = policy_for_action(policy, action) if self.rewrite else policy
        self.jobs = max(1, jobs)
        self.keep: Keeper = keep or (lambda raw, result: "")
        # Told of every result once, as soon as it is known, even while it is held back
        # until its mbox is rewritten (a progress display should move during a rewrite).
        self.progress: Callable[[MessageResult], None] | None = None
        self.factory = engine_factory or default_engine
        self.stdin = stdin
        self.exclude = tuple(str(folder) for folder in exclude)
        self.protected = tuple(str(folder) for folder in protected)
        self.summary = Summary()
        # Left alone and worth telling on stderr: mailguard's own folders met in the paths, and
        # message files another program deleted before they could be read.
        self.skipped_to_tell: list[Skipped] = []
        self._pool: ProcessPoolExecutor | None = None
        self._local: Worker | None = None
        self._mboxes: dict[int, _MboxState] = {}
        self._failed_mboxes: dict[int, str] = {}  # mboxes whose reading stopped: number -> why
        self._mbox_counter = 0

    def __enter__(self) -> "OfflineScan":
        # The engine is built once here first, so that a set-up error (a missing signature
        # file) is one ScanError for the user, not a dead worker pool and a traceback.
        engine = _build_engine(self.factory, self.policy)
        if self.jobs == 1:
            self._local = Worker(lambda policy: engine, self.policy, self.rewrite)
            return self
        engine.close()
        import multiprocessing

        self._pool = ProcessPoolExecutor(
            self.jobs, mp_context=multiprocessing.get_context("fork"),
            initializer=init_worker, initargs=(self.factory, self.policy, self.rewrite, os.getpid()))
        try:
            # Fork the workers now, before the caller starts threads (a progress display).
            self._pool.submit(int).result()
        except BrokenProcessPool:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
            raise ScanError("the scanning processes could not be started (a worker died while "
                            "setting up its engine); nothing was scanned") from None
        return self

    def __exit__(self, *exc_info: object) -> None:
        for state in self._mboxes.values():
            if state.rewriter is not None:
                state.rewriter.abort()
            if state.held is not None:
                state.held.close()
        self._mboxes.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        if self._local is not None:
            self._local.close()

    # -- results, in input order ------------------------------------------------------------

    def results(self) -> Iterator[MessageResult]:
        started = time.monotonic()
        try:
            for outcome in self._outcomes():
                yield from self._settle(outcome)
        finally:
            self.summary.seconds = time.monotonic() - started

    def _settle(self, outcome: Outcome) -> Iterator[MessageResult]:
        task = outcome.task
        state = self._mboxes.get(getattr(task, "mailbox_no", -1))
        for path in outcome.vanished:
            self._skip(Skipped(path, VANISHED))
        for result in outcome.results:
            if self.rewrite and result.rewritten is not None:
                self._write(result, state)
            self._count(result)
            yield result
        if outcome.rows:
            if state is None:
                # A later range of an mbox whose reading stopped in an earlier one: these messages
                # cannot be numbered, and the mbox is not rewritten; errors, not silence.
                assert isinstance(task, MboxChunk) and task.mailbox_no in self._failed_mboxes, \
                    "mbox rows come from an mbox task"
                yield from self._unsettled_rows(outcome.rows, task)
            else:
                yield from self._settle_rows(outcome.rows, state, task)
        if isinstance(task, MboxChunk) and state is None and outcome.failure:
            yield self._count(MessageResult(task.item.source, task.item.path, {"format": "mbox"},
                                            error=f"mbox reading stopped: {outcome.failure}"))
        if isinstance(task, MboxChunk) and state is not None:
            if outcome.failure:
                self._failed_mboxes[task.mailbox_no] = outcome.failure
                self._close_mbox(task.mailbox_no, commit=False)
                yield from self._release(state, committed=False)
                yield self._count(MessageResult(state.source, task.item.path, {"format": "mbox"},
                                                error=f"mbox reading stopped: {outcome.failure}"))
            elif task.last:
                failure = self._close_mbox(task.mailbox_no, commit=True)
                yield from self._release(state, committed=not failure and not state.write_failed)
                if failure:
                    yield self._count(MessageResult(state.source, task.item.path, {"format": "mbox"},
                                                    error=failure))

    def _settle_rows(self, rows: list[MboxRow], state: _MboxState, task: Task) -> Iterator[MessageResult]:
        """The results of an mbox task, numbered in file order (the hot loop of the main process)."""
        path = task.item.path if isinstance(task, MboxChunk) else state.source
        source = state.source
        index, line = state.next_index, state.next_line
        add = self.summary.add
        progress = self.progress
        rewrite = self.rewrite
        try:
            for row in rows:
                result = row_result(source, path, row)
                location = result.location
                location["index"] = index
                location["line"] = line
                index += 1
                line += row[2]
                if rewrite and result.rewritten is not None:
                    self._write(result, state)
                if progress is not None:
                    progress(result)
                if state.held is not None:
                    state.held.add(result)  # counted and shown once the mbox is closed
                    continue
                add(result)
                yield result
        finally:
            state.next_index, state.next_line = index, line

    def _release(self, state: _MboxState, *, committed: bool) -> Iterator[MessageResult]:
        """The results held while ``state``'s mbox was rewritten, now that it is closed."""
        if state.held is not None:
            held, state.held = state.held, None
            for result in held.release(committed):
                self.summary.add(result)  # its progress was told when it was held
                yield result

    def _unsettled_rows(self, rows: list[MboxRow], task: MboxChunk) -> Iterator[MessageResult]:
        why = self._failed_mboxes[task.mailbox_no]
        for row in rows:
            result = row_result(task.item.source, task.item.path, row)
            result.error = f"reading this mbox stopped before this message ({why}): its position is unknown"
            if self.rewrite and result.rewritten is not None:
                result.write_error = NOT_COMMITTED
            result.rewritten = None
            yield self._count(result)

    def _skip(self, item: Skipped) -> None:
        self.summary.skipped += 1
        if item.own or item.reason == VANISHED:
            self.skipped_to_tell.append(item)

    def _count(self, result: MessageResult) -> MessageResult:
        self.summary.add(result)
        if self.progress is not None:
            self.progress(result)
        return result

    def _write(self, result: MessageResult, state: _MboxState | None) -> None:
        if isinstance(result.rewritten, tuple) and result.rewritten[0] == TOO_LARGE:
            result.write_error = TOO_LARGE_TO_REWRITE  # its header block is not within what was kept
            result.rewritten = None
            return
        try:
            if state is not None:
                if state.rewriter is not None:
                    state.rewriter.message(result)
                elif state.write_failed:
                    result.write_error = NOT_COMMITTED
            else:
                rewrite_message_file(result, self.keep, self.protected)
        except Exception as exc:  # noqa: BLE001 - quarantine or disk failure: leave this mailbox as it was
            result.write_error = f"not rewritten: {exc}"
            if state is not None and state.rewriter is not None:
                state.rewriter.abort()
                state.rewriter = None
                state.write_failed = True
        result.rewritten = None

    def _close_mbox(self, number: int, *, commit: bool) -> str:
        state = self._mboxes.pop(number)
        if state.rewriter is None:
            return ""
        try:
            if commit:
                state.rewriter.finish()
            else:
                state.rewriter.abort()
        except (OSError, StorageError) as exc:
            return f"rewriting failed, the mailbox was left unchanged: {exc}"
        return ""

    # -- running tasks --------------------------------------------------------------------

    def _outcomes(self) -> Iterator[Outcome]:
        if self._pool is None:
            assert self._local is not None
            for task in self._tasks():
                yield self._local.run(task)
            return
        in_flight: collections.deque[Future[Outcome] | Outcome] = collections.deque()
        for task in self._tasks():
            in_flight.append(Outcome(task, list(task.results)) if isinstance(task, Done)
                             else self._pool.submit(run_in_worker, task))
            while len(in_flight) > 2 * self.jobs:
                yield _take(in_flight.popleft())
        while in_flight:
            yield _take(in_flight.popleft())

    def _tasks(self) -> Iterator[Task]:
        batch: list[MessageFile] = []
        for item in discover(self.paths, self.exclude):
            if isinstance(item, MessageFile):
                batch.append(item)
                if len(batch) >= FILES_PER_TASK:
                    yield FileBatch(tuple(batch))
                    batch = []
                continue
            if batch:
                yield FileBatch(tuple(batch))
                batch = []
            if isinstance(item, Skipped):
                self._skip(item)
            elif isinstance(item, Problem):
                yield Done((MessageResult(item.source, item.path, dict(item.location), error=item.reason),))
            elif isinstance(item, Stdin):
                yield from self._stdin_tasks()
            else:
                yield from self._mbox_tasks(item)
        if batch:
            yield FileBatch(tuple(batch))

    def _mbox_tasks(self, item: MboxFile) -> Iterator[Task]:
        number = self._next_number()
        state = _MboxState(item.source)
        size = item.size
        if self.rewrite:
            try:
                state.rewriter = MboxRewriter(item.path, self.keep, self.protected)
            except (OSError, StorageError) as exc:
                reason = getattr(exc, "strerror", None) or str(exc)
                yield Done((MessageResult(item.source, item.path, {"format": "mbox"},
                                          error=f"cannot lock the mailbox: {reason}"),))
                return
            size = state.rewriter.size  # measured under the lock
            state.held = HeldResults()
        self._mboxes[number] = state
        # About eight tasks per process, so a slow range does not leave the others idle at the end.
        chunk = max(MIN_CHUNK_SIZE, min(CHUNK_SIZE, size // (8 * self.jobs) + 1))
        starts = list(range(0, size, chunk)) or [0]
        for position, start in enumerate(starts):
            last = position == len(starts) - 1
            yield MboxChunk(item, start, None if last else start + chunk, last, number)

    def _next_number(self) -> int:
        self._mbox_counter += 1
        return self._mbox_counter

    def _stdin_tasks(self) -> Iterator[Task]:
        stream = self.stdin if self.stdin is not None else sys.stdin.buffer
        head = _read_up_to(stream, SNIFF_SIZE)
        kind = sniff_bytes(head, complete=len(head) < SNIFF_SIZE)
        if kind is FileFormat.MESSAGE:
            content: bytes | None = head + _read_up_to(stream, self.policy.max_object_size + 1 - len(head))
            size = len(content)
            if size > self.policy.max_object_size:
                size += _drain(stream)
                content = None
            message = MboxMessage(0, size, 0, b"", content, size, head[:HEAD_SIZE])
            yield InlineMessages(STDIN, (message,), True, -1)
            return
        if kind is not FileFormat.MBOX:
            reason = "no input" if kind is FileFormat.EMPTY else "not a message or mailbox (content not recognised)"
            yield Done((MessageResult(STDIN, STDIN, {"format": "unknown"}, error=reason),))
            return
        number = self._next_number()
        self._mboxes[number] = _MboxState(STDIN)
        pending: list[MboxMessage] = []
        pending_bytes = 0
        try:
            for message in read_mbox(_Prefixed(head, stream), max_size=self.policy.max_object_size):
                pending.append(message)
                pending_bytes += message.size
                if pending_bytes >= INLINE_BYTES_PER_TASK:
                    yield InlineMessages(STDIN, tuple(pending), False, number)
                    pending, pending_bytes = [], 0
        except (OSError, NotAnMbox) as exc:
            if pending:
                yield InlineMessages(STDIN, tuple(pending), False, number)
            yield Done((MessageResult(STDIN, STDIN, {"format": "mbox"}, error=f"reading stdin failed: {exc}"),))
            return
        if pending:
            yield InlineMessages(STDIN, tuple(pending), False, number)


def _take(entry: "Future[Outcome] | Outcome") -> Outcome:
    if isinstance(entry, Outcome):
        return entry
    try:
        return entry.result()
    except BrokenProcessPool:
        # A worker was killed (out of memory, a signal) or crashed: what it held is lost, so
        # the run cannot be complete. An error (exit 2), never "threats found".
        raise ScanError("a scanning process died during the scan; the scan is incomplete and "
                        "mailboxes not yet rewritten were left unchanged") from None


def _build_engine(factory: EngineFactory, policy: "Policy") -> "ScanEngine":
    """The engine, or a ScanError saying why it cannot be set up."""
    try:
        return factory(policy)
    except MailguardError:
        raise
    except Exception as exc:  # noqa: BLE001 - any set-up failure is the user's to see, not a traceback
        raise ScanError(f"the scanning engine could not be set up: {type(exc).__name__}: {exc}") from exc


class _Prefixed:
    """A stream that first returns bytes already read from it (stdin cannot seek back)."""

    def __init__(self, head: bytes, stream: BinaryIO) -> None:
        self.head = head
        self.stream = stream

    def read(self, size: int) -> bytes:
        if self.head:
            data, self.head = self.head[:size], self.head[size:]
            return data
        return self.stream.read(size)


def _read_up_to(stream: BinaryIO, size: int) -> bytes:
    """Up to ``size`` bytes; fewer only at the end (a pipe returns what it has)."""
    parts: list[bytes] = []
    while size > 0:
        block = stream.read(min(size, 1 << 20))
        if not block:
            break
        parts.append(block)
        size -= len(block)
    return b"".join(parts)


def _drain(stream: BinaryIO) -> int:
    total = 0
    while block := stream.read(1 << 20):
        total += len(block)
    return total
