"""The engine: one message's bytes in, a ``Verdict`` out; and what the client receives.

    engine = Engine(policy)                 # detectors built from the policy
    verdict = engine.scan(raw)              # never raises; limits give ``unscanned``
    out = engine.apply(raw, verdict)        # tags, subject, response.action (rewrite.py)
    engine.close()

Scan objects, each given to every detector once: the raw message itself, every decoded
leaf part (every decoding, when clients could disagree), every file found inside a text
body (uuencode, yEnc, BinHex, ``data:`` URIs), and every member the container readers
unpack, recursively. An object that is no container but a mail file (an .eml or mbox
attached as any type) is walked as a message, and one that is an encoded text file (a
.uu, .hqx, .b64 or .html file) gives the files it encodes.
Object paths are IMAP section numbers, then member names: ``2/invoice.zip/payload.exe``,
``2/fwd.eml/2`` (part 2 of the message attached as fwd.eml), ``2/mac.hqx/clam.exe``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

from mailguard.scan.containers import mailfile
from mailguard.scan.decoders import decodings_for, encoded_files, inline_blocks, looks_textual
from mailguard.scan.detectors.base import Detector, DetectorFailed, ScanObject
from mailguard.scan.limits import Budget, ScanIncomplete
from mailguard.scan.mime import Part, parse_message
from mailguard.scan.policy import Policy
from mailguard.scan.verdict import Finding, Incomplete, Reason, Verdict

# containers.expand: the direct members of a container (named under the path given), or None
# when ``obj`` is not one.
Expander = Callable[[ScanObject, Budget, Policy, str], "list[ScanObject] | None"]

# Encodings that are not MIME transfer encodings but that clients decode all the same.
_UUENCODE_TOKENS = frozenset({"x-uuencode", "uuencode", "x-uue", "uue"})
# Tokens whose decoding differs from the raw bytes (the rest are scanned as they are).
_DECODED_TOKENS = _UUENCODE_TOKENS | {"base64", "quoted-printable"}


class Engine:
    def __init__(self, policy: Policy, detectors: Sequence[Detector] | None = None) -> None:
        if detectors is None:
            from mailguard.scan.detectors.build import build_detectors

            detectors = build_detectors(policy)
        self.policy = policy
        self.detectors: list[Detector] = list(detectors)
        #: the detectors for what is no attachment (an archive member, the raw message): all but
        #: those that judge only attachments, as Outlook's blocked types (blocked_types.py)
        self.inner_detectors: list[Detector] = [d for d in self.detectors
                                                if not getattr(d, "attachments_only", False)]
        self._expand = _load_expander()

    def scan(self, raw: bytes) -> Verdict:
        """The verdict for one message. Deterministic; never raises for any input.

        A failure of our own code is reported as ``unscanned`` (engine-error), never as
        ``clean``: fail closed (docs/architecture.md#fail-closed).
        """
        run = _MessageScan(self, bytes(raw))
        try:
            run.run()
        except ScanIncomplete as exc:  # the per-message clock ran out: the rest is unscanned
            run.incomplete.append(Incomplete(exc.reason, "", exc.detail))
        except Exception as exc:  # noqa: BLE001 - see docstring
            run.incomplete.append(Incomplete(Reason.ENGINE_ERROR, "", f"{type(exc).__name__}: {exc}"))
        verdict = Verdict.build(run.findings, run.incomplete, self.policy.generation)
        verdict.stats.update(bytes=len(raw), objects=run.objects, scanned_bytes=run.scanned_bytes)
        return verdict

    def apply(self, raw: bytes, verdict: Verdict) -> bytes:
        """What the client receives for ``raw`` given its ``verdict`` (see rewrite.py)."""
        from mailguard.scan.rewrite import apply

        return apply(bytes(raw), verdict, self.policy, rescan=self.scan)

    def close(self) -> None:
        for detector in self.detectors:
            detector.close()


def _load_expander() -> Expander | None:
    """The container readers (zip, 7z, tar, ...) when that module is installed."""
    try:
        from mailguard.scan.containers import expand
    except ImportError:
        return None
    return expand


class _MessageScan:
    """The state of scanning one message: its budget and what was found so far."""

    def __init__(self, engine: Engine, raw: bytes) -> None:
        self.engine = engine
        self.policy = engine.policy
        self.raw = raw
        self.budget = Budget.for_message(engine.policy)
        self.findings: list[Finding] = []
        self.incomplete: list[Incomplete] = []
        self.objects = 0
        self.scanned_bytes = 0

    def run(self) -> None:
        if len(self.raw) > self.budget.max_object_size:
            self.incomplete.append(Incomplete(Reason.LIMIT, "", "message larger than max-object-size"))
        else:
            self.scan_object(ScanObject(self.raw, "", is_message_root=True))
        self.walk(parse_message(self.raw, email_files=self.policy.email_files), _Where("", 0))

    def walk(self, tree: Part, where: _Where) -> None:
        """Every part of one message: the raw message, or a mail file found inside it."""
        check_time = self.budget.check_time
        for part in tree.walk():
            check_time()
            if part.problems:
                for problem in part.problems:
                    self.incomplete.append(Incomplete(Reason.LIMIT, where.path(part.section), problem))
            if part.children:
                self.scan_container_part(part, where)
            else:
                self.scan_leaf(part, where)

    def scan_container_part(self, part: Part, where: _Where) -> None:
        """A multipart or attached message: its own bytes, where clients may still look."""
        for region in (part.preamble, part.epilogue):
            if region and part.source[region[0]:region[1]].strip():
                # Not shown by strict clients, but a lenient one may show (and decode) it.
                label = "preamble" if region is part.preamble else "epilogue"
                path = where.path(f"{part.number}.{label}" if part.number else label)
                self.scan_decoded(part, where, part.source[region[0]:region[1]], path, text_only=True)
        child = part.children[0]
        if child.is_message and child.detached:
            # A base64/QP-encoded message/rfc822: the decoded .eml is itself a file to scan
            # (and the MIME walk has walked it already: not again as a mail file).
            self.scan_decoded(part, where, child.source, where.path(part.number), look_inside=False)

    def scan_leaf(self, part: Part, where: _Where) -> None:
        path = where.path(part.section)
        media_type = part.media_type
        if media_type == "message/partial":
            # RFC 2046 §5.2.2: one fragment cannot be judged alone
            # (docs/pitfalls.md#fragmented-messages).
            self.incomplete.append(Incomplete(Reason.UNSUPPORTED, path, "message/partial"))
        if where.depth + part.message_depth > self.budget.max_nesting:
            self.incomplete.append(Incomplete(Reason.LIMIT, path, "attached messages nested too deep"))
            return
        start, end = part.body_start, part.body_end
        if end - start > self.budget.max_object_size:
            self.incomplete.append(Incomplete(Reason.LIMIT, path, "part larger than max-object-size"))
            return
        encodings = part.info.encodings
        if not encodings or (len(encodings) == 1 and encodings[0] not in _DECODED_TOKENS):
            # 7bit, 8bit, binary or an unknown token (nearly every text part): the bytes as
            # they are are the one decoding (decoders.decodings_for), one copy, no views.
            self.scan_decoded(part, where, part.source[start:end], path, media_type)
            return
        decodings: list[bytes] = []
        uuencoded = False
        for encoding in encodings:  # part.encodings: never empty here
            if encoding in _UUENCODE_TOKENS:
                uuencoded = True
                decodings.extend(b.data for b in inline_blocks(bytes(part.body()), self.budget.max_object_size))
            decodings.extend(decodings_for(encoding, part.source, start, end))
        if len(decodings) > 1:  # only when clients could disagree; hashing big bodies costs
            decodings = list(dict.fromkeys(decodings))
        for data in decodings:
            # An x-uuencode body's blocks are its decodings: no need to look for them again.
            self.scan_decoded(part, where, data, path, media_type, text_searched=uuencoded)

    def scan_decoded(self, part: Part, where: _Where, data: bytes, path: str, media_type: str | None = None, *,
                     text_only: bool = False, look_inside: bool = True, text_searched: bool = False) -> None:
        """One decoded body: itself (unless ``text_only``), then files hidden inside it.

        ``media_type``: ``part.media_type``, when the caller has it already.
        """
        if len(data) > self.budget.max_object_size:
            self.incomplete.append(Incomplete(Reason.LIMIT, path, "decoded part larger than max-object-size"))
            return
        depth = where.depth + part.message_depth
        if media_type is None:
            media_type = part.media_type
        is_text = text_only or media_type.startswith("text/")
        if not text_only:
            filenames = part.info.filenames
            obj = ScanObject(data, path, filenames, media_type, False, depth)
            # Members are named under the attachment's file name: 2/invoice.zip/payload.exe.
            self.scan_object(obj, members_under=f"{path}/{filenames[0]}" if filenames else path,
                             look_inside=look_inside, text_searched=text_searched or is_text,
                             attachment=where.attachments)
        # Clients extract uuencode/yEnc/BinHex from text bodies only
        # (docs/pitfalls.md#files-inside-text-bodies).
        if not is_text:
            return
        for block in inline_blocks(data, self.budget.max_object_size):
            name = block.name or block.encoding
            self.scan_object(ScanObject(block.data, f"{path}/{name}", (block.name,) if block.name else (),
                                        "", depth=depth))

    def scan_object(self, obj: ScanObject, members_under: str | None = None, *,
                    look_inside: bool = True, text_searched: bool = False, attachment: bool = False) -> None:
        """Every detector on ``obj``, then the same for each member it contains.

        ``members_under`` is the path its members are named under, when not ``obj.path``.
        An object that is no container may still be a mail file or an encoded text file
        (``look_inside``); ``text_searched`` says its inline blocks were taken out already.
        ``attachment``: a MIME part of a message a client shows (see ``_Where.attachments``).
        """
        self.budget.check_time()
        self.objects += 1
        self.scanned_bytes += len(obj.data)
        for detector in self.engine.detectors if attachment else self.engine.inner_detectors:
            try:
                if found := detector.scan(obj):
                    self.findings.extend(found)
            except DetectorFailed as exc:
                self.incomplete.append(Incomplete(Reason.ENGINE_ERROR, obj.path, f"{detector.name}: {exc}"))
            except ScanIncomplete as exc:
                if exc.reason is Reason.TIMEOUT:
                    raise
                self.incomplete.append(Incomplete(exc.reason, obj.path, exc.detail))
            except Exception as exc:  # noqa: BLE001 - a detector bug must not pass the object as clean
                self.incomplete.append(Incomplete(Reason.ENGINE_ERROR, obj.path,
                                                  f"{detector.name}: {type(exc).__name__}: {exc}"))
        if obj.is_message_root:
            return  # walked part by part (run)
        under = obj.path if members_under is None else members_under
        expand = self.engine._expand
        members = None
        if expand is not None:
            try:
                members = expand(obj, self.budget, self.policy, under)  # members named under ``under``
            except ScanIncomplete as exc:
                if exc.reason is Reason.TIMEOUT:
                    raise
                # ExpansionIncomplete: the members that could be unpacked are still scanned,
                # and the one that could not is recorded as unscanned.
                self.incomplete.append(Incomplete(exc.reason, getattr(exc, "part", under), exc.detail))
                members = getattr(exc, "children", ())
        if members is not None:
            for member in members:
                self.scan_object(member)
        elif look_inside:
            self.scan_file_inside(obj.data, under, obj.depth, text_searched, attachment)

    def scan_file_inside(self, data: bytes, under: str, depth: int, text_searched: bool,
                         attachment: bool = False) -> None:
        """What a file that is no container holds: the parts of a mail file (an .eml or an
        mbox, whatever its declared type: ``threatsense.objects.email-files``), or the files
        encoded in a text file (uuencode, yEnc, BinHex, base64, HTML ``data:`` URIs).

        Both are recognised by their first bytes (a few comparisons for anything else), and
        what they hold is one level deeper, under the message's nesting and size limits.
        """
        is_mail = mailfile.recognise(data)
        if is_mail and not self.policy.email_files:
            return  # scanned as a file only, as an attached message/rfc822 would be
        if not is_mail and (text_searched or not looks_textual(data)):
            return
        try:
            if is_mail:
                self.budget.check_depth(depth + 1)
                self.scan_mail_file(data, under, depth + 1, attachments=attachment)
                return
            blocks = encoded_files(data, self.budget.max_object_size)
            if blocks:  # a plain text file deep in archives is not over the nesting limit
                self.budget.check_depth(depth + 1)
            for block in blocks:
                self.budget.charge(len(block.data))
                name = block.name or block.encoding
                self.scan_object(ScanObject(block.data, f"{under}/{name}", (block.name,) if block.name else (),
                                            "", depth=depth + 1))
        except ScanIncomplete as exc:
            if exc.reason is Reason.TIMEOUT:
                raise
            self.incomplete.append(Incomplete(exc.reason, under, exc.detail))

    def scan_mail_file(self, data: bytes, under: str, depth: int, attachments: bool = False) -> None:
        """Walk a mail file's messages as messages: ``2/fwd.eml/2``, ``2/box.mbox/message-3/1``;
        their parts are ``attachments`` when the mail file is one (not inside an archive)."""
        self.budget.charge(len(data))  # its decoded parts, like an archive's members, count
        found = mailfile.messages(data)
        for number, message in enumerate(found, 1):
            self.budget.check_time()
            where = _Where(under if len(found) == 1 else f"{under}/message-{number}", depth, attachments)
            self.walk(parse_message(message, email_files=True), where)


class _Where(NamedTuple):
    """Where a walked message sits: the path its parts are named under and its depth.

    The raw message is ``("", 0)``; a mail file found as attachment 2 is ``("2/fwd.eml", 1)``.
    ``attachments``: its parts are attachments a client shows and lets the user open, as Outlook
    does those of the message and of messages attached to it (message/rfc822 parts are walked
    as parts of the message, an attached .eml file here); a mail file inside an archive is not
    opened from the message, and Outlook does not look into archives.
    """

    prefix: str
    depth: int
    attachments: bool = True

    def path(self, section: str) -> str:
        return f"{self.prefix}/{section}" if self.prefix else section
