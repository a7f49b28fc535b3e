"""The work one scanning process does: read messages from a task, scan each, maybe rewrite.

Each worker process builds its own engine once (``init_worker``) and then runs tasks: a
byte range of an mbox, a batch of message files, or messages already read from stdin.
A task returns small results; the only bulky thing it sends back is the rewritten bytes
of a message that changed, which the writer in the main process needs.

The messages of an mbox come back as plain tuples (``MboxRow``), not as ``MessageResult``
objects: a tuple of numbers and strings pickles and unpickles in C, a dataclass holding a
dict and a ``Verdict`` goes through ``__reduce_ex__`` in Python, and at ~20 KB a message
that difference was a visible share of the main process's time (issue 4). A clean verdict
with nothing in it, by far the most common, travels as ``CLEAN`` and is rebuilt as one
shared object (its ``stats`` are not reported by any output).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Callable, Iterable, Protocol

from mailguard.mailbox import maildir
from mailguard.mailbox.atomic import file_identity
from mailguard.mailbox.discover import MboxFile, MessageFile
from mailguard.mailbox.headers import summary_fields
from mailguard.mailbox.mbox import HEAD_SIZE, MboxMessage, NotAnMbox, read_mbox
from mailguard.mailbox.results import MessageResult
from mailguard.mailbox.sniff import FileFormat, sniff_bytes
from mailguard.processes import die_with_parent
from mailguard.scanpool.job import failed_verdict, scan_message

if TYPE_CHECKING:
    from mailguard.scan.policy import Policy
    from mailguard.scan.verdict import Verdict


class ScanEngine(Protocol):
    def scan(self, raw: bytes) -> "Verdict": ...
    def apply(self, raw: bytes, verdict: "Verdict") -> bytes: ...
    def close(self) -> None: ...


EngineFactory = Callable[["Policy"], ScanEngine]


def default_engine(policy: "Policy") -> ScanEngine:
    from mailguard.scan.engine import Engine

    return Engine(policy)


@dataclass(frozen=True)
class MboxChunk:
    item: MboxFile
    start: int
    stop: int | None
    last: bool              # the writer commits the rewritten mbox after this chunk
    mailbox_no: int         # which mbox of the run, for numbering its messages in order


@dataclass(frozen=True)
class FileBatch:
    items: tuple[MessageFile, ...]


@dataclass(frozen=True)
class InlineMessages:
    """Messages read from stdin by the main process (stdin cannot be re-opened by a worker)."""

    source: str
    messages: tuple[MboxMessage, ...]
    single: bool            # one message, not an mbox
    mailbox_no: int         # as MboxChunk's; -1 for a single message


@dataclass(frozen=True)
class Done:
    """Results known without scanning (problems found while walking), kept in order with the rest."""

    results: tuple[MessageResult, ...]


Task = MboxChunk | FileBatch | InlineMessages | Done


# One mbox message scanned: (offset, length, newlines, size, message_id, subject, verdict, error,
# rewritten). verdict is a Verdict, CLEAN for a clean one with nothing to report, or None
# when there is none (the engine failed).
MboxRow = tuple
CLEAN = 1


@dataclass
class Outcome:
    task: Task
    results: list[MessageResult] = field(default_factory=list)  # files, problems, a single stdin message
    rows: list[MboxRow] = field(default_factory=list)           # mbox messages (MboxChunk, InlineMessages)
    failure: str = ""       # the task could not run to its end (the mbox vanished, an I/O error)
    vanished: list[str] = field(default_factory=list)  # message files deleted by another program before read


def row_result(source: str, path: str, row: MboxRow) -> MessageResult:
    """The ``MessageResult`` of an mbox row, as the main process reports it."""
    offset, length, newlines, size, message_id, subject, verdict, error, rewritten = row
    if verdict.__class__ is int:  # CLEAN
        verdict = _clean_verdict()
    return MessageResult(source, path, {"format": "mbox", "offset": offset}, size, message_id, subject,
                         verdict, error, rewritten=rewritten, span=(offset, length, newlines))


_CLEAN_VERDICT: "Verdict | None" = None


def _clean_verdict() -> "Verdict":
    global _CLEAN_VERDICT
    if _CLEAN_VERDICT is None:
        from mailguard.scan.verdict import Status, Verdict

        _CLEAN_VERDICT = Verdict(Status.CLEAN)
    return _CLEAN_VERDICT


class Worker:
    """One engine and what to do with its verdicts."""

    def __init__(self, factory: EngineFactory, policy: "Policy", rewrite: bool) -> None:
        self.engine = factory(policy)
        self.policy = policy
        self.max_size = policy.max_object_size
        self.rewrite = rewrite

    def close(self) -> None:
        self.engine.close()

    def run(self, task: Task) -> Outcome:
        if isinstance(task, Done):
            return Outcome(task, list(task.results))
        if isinstance(task, MboxChunk):
            return self._mbox_chunk(task)
        if isinstance(task, FileBatch):
            outcome = Outcome(task)
            for item in task.items:
                result = self._file(item)
                if result is None:
                    outcome.vanished.append(item.path)
                else:
                    outcome.results.append(result)
            return outcome
        if task.single:
            return Outcome(task, [self._single(task.source, message) for message in task.messages])
        outcome = Outcome(task)
        self._mbox_rows(task.messages, outcome.rows)
        return outcome

    def _mbox_chunk(self, task: MboxChunk) -> Outcome:
        outcome = Outcome(task)
        try:
            # Unbuffered: the reader asks for large blocks, a buffer would only add a copy.
            with open(task.item.path, "rb", buffering=0) as stream:
                stream.seek(max(0, task.start - 1))
                self._mbox_rows(read_mbox(stream, max_size=self.max_size, start=task.start, stop=task.stop),
                                outcome.rows)
        except (OSError, NotAnMbox) as exc:
            outcome.failure = getattr(exc, "strerror", None) or str(exc)
        return outcome

    def _mbox_rows(self, messages: Iterable[MboxMessage], rows: list[MboxRow]) -> None:
        """Scan each message into a row (appended as it is done, so a failure keeps the rows before it)."""
        append = rows.append
        verdict_of = self._verdict
        for offset, length, newlines, _, content, size, head, problem in messages:
            message_id, subject = summary_fields(head)
            verdict, error, rewritten = verdict_of(content, problem, head)
            if verdict is not None and _is_plain_clean(verdict):
                verdict = CLEAN
            append((offset, length, newlines, size, message_id, subject, verdict, error, rewritten))

    def _single(self, source: str, message: MboxMessage) -> MessageResult:
        result = MessageResult(source=source, file=source, location={"format": "eml"}, size=message.size)
        self._scan(result, message.content, message.head, message.problem)
        return result

    def _file(self, item: MessageFile) -> MessageResult | None:
        """The result of one message file; None when another program deleted it before it was
        read (a mail client expunging it while the scan runs: nothing is left to scan)."""
        result = MessageResult(source=item.source, file=item.path, location=dict(item.location), size=item.size)
        is_maildir = item.location.get("format") == "maildir"
        what = "broken Maildir entry" if is_maildir else "broken MH entry"
        # A client may have renamed it since it was listed (a flag change, new/ to cur/): followed.
        for path in maildir.renames(item.path, is_maildir):
            if path != result.file:
                maildir.follow_rename(result, path)
            try:
                with open(path, "rb") as stream:
                    info = os.fstat(stream.fileno())
                    result.size = info.st_size
                    result.identity = file_identity(info)
                    content: bytes | None = stream.read(self.max_size + 1)
                    head = content[:HEAD_SIZE]
                    if len(content) > self.max_size:
                        content = None
                break
            except FileNotFoundError:
                continue
            except OSError as exc:
                result.error = exc.strerror or str(exc)
                return result
        else:
            return None
        if not item.sniffed:
            kind = sniff_bytes(head, complete=content is not None)
            if kind is not FileFormat.MESSAGE:
                result.error = f"{what}: " + ("empty file" if kind is FileFormat.EMPTY else "not a message")
                return result
        self._scan(result, content, head, "")
        return result

    def _scan(self, result: MessageResult, content: bytes | None, head: bytes, problem: str) -> None:
        """Fill in the verdict (and the rewrite) of one message; never raises for a bad message."""
        result.message_id, result.subject = summary_fields(head)
        result.verdict, result.error, result.rewritten = self._verdict(content, problem, head)

    def _header_rewrite(self, head: bytes, verdict: "Verdict") -> "bytes | HeaderSplice | None":
        """The rewrite of a message too large to scan, made from its header block alone
        (docs/architecture.md#what-a-scanned-message-looks-like: unscanned messages are always
        tagged; on-scan-error = block treats them as infected, so clean and replace both replace
        them by the notice, as nothing can be cleaned unscanned)."""
        from mailguard.scan.rewrite import replacement_message, tag
        from mailguard.scan.verdict import Status

        end = header_block_end(head)
        if end is None:
            return (TOO_LARGE, b"")
        header = head[:end]
        policy = self.policy
        if verdict.status is Status.UNSCANNED and policy.on_scan_error == "block" and policy.action != "none":
            return tag(replacement_message(header, verdict), verdict, policy)
        new = tag(header, verdict, policy)
        return None if new == header else (end, new)

    def _verdict(self, content: bytes | None, problem: str,
                 head: bytes = b"") -> tuple["Verdict | None", str, "Rewritten | None"]:
        """``(verdict, error, rewritten)`` of one message; never raises for a bad message."""
        if content is None:
            from mailguard.scan.verdict import Incomplete, Reason, Verdict

            verdict = Verdict.build([], [Incomplete(Reason.LIMIT, "", "message larger than max-object-size")])
            if self.rewrite and not problem:
                try:
                    return verdict, problem, self._header_rewrite(head, verdict)
                except Exception as exc:  # noqa: BLE001 - as for any message: an error for this one only
                    return verdict, f"engine failed on this message: {type(exc).__name__}: {exc}", None
            return verdict, problem, None
        try:
            # The one job both doors run (scanpool/job.py); no folder, as the writer keeps the
            # originals, in the main process, just before it writes (rewrite.py).
            outcome = scan_message(content, "", self.policy, None, engine=self.engine,
                                   respond=self.rewrite and not problem)
        except Exception as exc:  # noqa: BLE001 - one bad message must not end the scan of the rest
            return failed_verdict(exc), f"engine failed on this message: {type(exc).__name__}: {exc}", None
        return outcome.verdict, problem, outcome.delivered


# What a message too large to hold becomes: ``(length, new)``, its first ``length`` bytes (the
# header block) replaced by ``new``; ``(TOO_LARGE, b"")`` when that cannot be done. A whole
# new message is plain ``bytes``. (A tuple of an int and bytes pickles in C, as rows must.)
HeaderSplice = tuple
Rewritten = "bytes | HeaderSplice"
TOO_LARGE = -1
TOO_LARGE_TO_REWRITE = "too large to rewrite: left unchanged"


def header_block_end(head: bytes) -> int | None:
    """Where the body starts: just after the empty line ending the header block, if it is in ``head``."""
    if head.startswith((b"\n", b"\r\n")):
        return 0
    at = head.find(b"\n\n")
    crlf = head.find(b"\n\r\n")
    ends = [i + 2 for i in (at,) if i != -1] + [i + 3 for i in (crlf,) if i != -1]
    return min(ends) if ends else None


def splice_rewritten(original: bytes, rewritten: "bytes | HeaderSplice") -> bytes:
    """The new message: ``rewritten`` itself, or the original with its header block replaced."""
    if isinstance(rewritten, bytes):
        return rewritten
    length, new = rewritten
    return new + original[length:]


def _is_plain_clean(verdict: "Verdict") -> bool:
    return verdict.status == "clean" and not verdict.findings and not verdict.incomplete


# The worker of this process, set by init_worker in each pool process.
_worker: Worker | None = None


def init_worker(factory: EngineFactory, policy: "Policy", rewrite: bool, parent: int | None = None) -> None:
    global _worker
    import multiprocessing.util

    die_with_parent(parent)
    _worker = Worker(factory, policy, rewrite)
    # Pool processes end through os._exit, so atexit would not run; Finalize does.
    multiprocessing.util.Finalize(None, _worker.close, exitpriority=10)




def run_in_worker(task: Task) -> Outcome:
    assert _worker is not None, "init_worker was not run in this process"
    return _worker.run(task)


def policy_for_action(policy: "Policy", action: str) -> "Policy":
    """The policy whose ``apply`` gives the rewrite asked for by ``--action``.

    tag: only the X-MailGuard-Result header and the subject (response.action none, tagging as
    configured). clean: the configured response (clean or replace); "none" would change
    nothing but tags, so an explicit request to clean uses clean.
    """
    if action == "tag":
        return replace(policy, action="none")
    if action == "clean" and policy.action == "none":
        return replace(policy, action="clean")
    return policy
