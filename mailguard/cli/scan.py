"""``mailguard scan``: scan saved mail (mbox, Maildir, MH, .eml, folders, stdin) with the live engine.

Results go to stdout as they come (table, json, jsonl or sarif), in input order whatever
``--jobs``; the progress bar and diagnostics go to stderr, and only on a terminal.
"""

from __future__ import annotations

import enum
import json
import os
import sys
import time
from typing import TYPE_CHECKING, Annotated, Callable, Optional

import typer

from mailguard.cli import exitcodes
from mailguard.cli.common import ConfigOption, open_settings
from mailguard.processes import usable_cpus

if TYPE_CHECKING:
    from mailguard.mailbox.results import MessageResult, Summary

app = typer.Typer()


class Format(str, enum.Enum):
    table = "table"
    json = "json"
    jsonl = "jsonl"
    sarif = "sarif"


class Action(str, enum.Enum):
    report = "report"
    tag = "tag"
    clean = "clean"


_QUIET_SHOWS = {"infected", "blocked", "unscanned", "error"}
# json.dumps(..., sort_keys=True) builds a new encoder at each call; one made once writes the same text.
_to_json = json.JSONEncoder(sort_keys=True).encode


@app.command()
def scan(
    paths: Annotated[list[str], typer.Argument(
        metavar="PATH...", show_default=False,
        help="mbox files, .eml files, Maildir or MH folders, folders holding any of these (walked "
             "recursively), or '-' for standard input (one message or an mbox). The format is "
             "recognised from the content, not the name.")],
    format_: Annotated[Format, typer.Option(
        "--format", case_sensitive=False,
        help="table: for people; json: one object with 'results' and 'summary'; jsonl: one result a "
             "line, the summary last; sarif: SARIF 2.1.0, a result per detection, for code-scanning "
             "dashboards.")] = Format.table,
    json_: Annotated[bool, typer.Option("--json", help="Same as --format json.")] = False,
    action: Annotated[Action, typer.Option(
        "--action", case_sensitive=False,
        help="report: change nothing. tag: add the X-MailGuard-Result header and the subject prefix "
             "(per alerts.*). clean: apply response.action (clean or replace) to infected messages. "
             "tag and clean lock the mailbox, keep the original of each changed message in the "
             "quarantine, and replace the mailbox atomically.")] = Action.report,
    jobs: Annotated[Optional[int], typer.Option(
        "--jobs", "-j", min=1, show_default="the CPUs it may use",
        help="Scanning processes, each with its own engine. Results keep the input order.")] = None,
    quiet: Annotated[bool, typer.Option(
        "--quiet", "-q", help="Show only infected, unscanned and error results.")] = False,
    config: ConfigOption = None,
) -> None:
    """Scan saved mailboxes and message files for malware.

    Exit codes: 0 nothing found; 1 threats found; 2 error (bad usage, unreadable or damaged
    input, failed rewrite); 3 nothing found, but something could not be scanned. Threats win
    over errors, and errors over unscanned.
    """
    from mailguard.mailbox.offline import OfflineScan
    from mailguard.scan.detectors.sources import prepare
    from mailguard.scan.policy import Policy
    from mailguard.scanpool.job import quarantines

    settings_paths, settings = open_settings(config)
    # clamd looked for once (auto), every signature source hashed: the summary names them.
    policy, inventory = prepare(Policy.from_settings(settings))
    chosen = Format.json if json_ else format_
    # Our own folders are never scanned (the quarantined originals would be "cleaned" in place)
    # and the quarantine is never rewritten, whatever the paths given.
    quarantine_dir = str(settings_paths.quarantine_dir(settings))
    own = (str(settings_paths.state_dir), quarantine_dir)
    scanner = OfflineScan(paths, policy, jobs=jobs or usable_cpus(), action=action.value,
                          exclude=own, protected=(quarantine_dir,))
    if action is not Action.report and quarantines(policy, quarantine_dir):
        scanner.keep = _quarantine_keeper(quarantine_dir)
    with scanner:
        # Only now that the engine is up: a set-up error leaves nothing (no half JSON) on stdout.
        render = _RENDERERS[chosen](quiet)
        with _progress(paths, own) as advance:
            scanner.progress = advance
            for result in scanner.results():
                render.result(result)
    scanner.summary.detection = _detection_summary(inventory, policy)
    render.finish(scanner.summary)
    for skipped in scanner.skipped_to_tell:
        sys.stderr.write(f"mailguard: skipped {skipped.path}: {skipped.reason}\n")
    summary = scanner.summary
    # A message blocked by policy is a threat to the exit code, as it is to the mail client.
    code = exitcodes.for_scan(summary.infected + summary.blocked, summary.errors + summary.write_errors,
                              summary.unscanned)
    if code != exitcodes.OK:
        raise typer.Exit(code)


def _detection_summary(inventory, policy) -> dict[str, object]:  # noqa: ANN001
    """The summary's ``detection``: what the verdicts were made with (reports/reproducible)."""
    report = inventory.to_json(policy.signatures_max_age)
    keep = ("engine_version", "generation", "detectors", "sources", "clamd", "newest_signatures", "warnings")
    return {key: report[key] for key in keep}


def _quarantine_keeper(folder: "os.PathLike[str]") -> Callable[[bytes, "MessageResult"], str]:
    """Keeps originals in the quarantine; checked before anything is scanned or changed. The
    keeping is the live job's (scanpool/job.py), done by the writer just before it writes."""
    from mailguard.errors import ScanError
    from mailguard.scanpool.job import keep_original

    try:
        from mailguard.quarantine import Quarantine
    except ImportError as exc:
        raise ScanError(f"the quarantine is not available ({exc}); nothing was changed. To rewrite "
                        "without keeping originals, set web-and-email.email-client.response.quarantine "
                        "to false") from None
    quarantine = Quarantine(folder)
    quarantine.prepare()

    def keep(raw: bytes, result: "MessageResult") -> str:
        return keep_original(quarantine, raw, result.verdict, result.where())

    return keep


# -- progress (stderr, terminal only) -------------------------------------------------------

class _progress:
    """A Rich progress bar on stderr when it is a terminal: messages, MB, rate and ETA."""

    def __init__(self, paths: list[str], exclude: tuple[str, ...] = ()) -> None:
        self.paths = paths
        self.exclude = exclude
        self.display = None
        self.flush: Callable[[], None] = lambda: None

    def __enter__(self) -> Callable[["MessageResult"], None] | None:
        if not sys.stderr.isatty():
            return None
        from rich.console import Console
        from rich.progress import (
            BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn,
        )

        self.display = Progress(
            TextColumn("[progress.description]{task.description}"), BarColumn(),
            TextColumn("{task.fields[messages]} messages"), DownloadColumn(), TransferSpeedColumn(),
            TimeRemainingColumn(), console=Console(stderr=True), transient=True,
            # Results printed while the bar is up go above it, when they go to the same terminal;
            # piped, they must go to the pipe, not through the bar's console to stderr.
            redirect_stdout=sys.stdout.isatty())
        task = self.display.add_task("scanning", total=_total_bytes(self.paths, self.exclude), messages=0)
        self.display.start()
        display = self.display
        state = {"messages": 0, "pending": 0, "due": 0.0}

        def advance(result: "MessageResult") -> None:
            # Rich takes a lock and re-renders on update; at thousands of messages a second
            # that would cost more than reading them, so the bar is moved ten times a second.
            state["messages"] += 1
            state["pending"] += result.span[1] if result.span else result.size
            now = time.monotonic()
            if now >= state["due"]:
                display.update(task, advance=state["pending"], messages=state["messages"])
                state["pending"], state["due"] = 0, now + 0.1

        self.flush = lambda: display.update(task, advance=state["pending"], messages=state["messages"])
        return advance

    def __exit__(self, *exc_info: object) -> None:
        if self.display is not None:
            self.flush()
            self.display.stop()


def _total_bytes(paths: list[str], exclude: tuple[str, ...] = ()) -> int | None:
    """Bytes to scan, for the ETA; None (no ETA) when reading stdin."""
    from mailguard.mailbox.discover import MboxFile, MessageFile, Stdin, discover

    total = 0
    for item in discover(paths, exclude):
        if isinstance(item, Stdin):
            return None
        if isinstance(item, (MboxFile, MessageFile)):
            total += item.size
    return total


# -- renderers (stdout) ------------------------------------------------------------------------

class _Renderer:
    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet

    def shown(self, result: "MessageResult") -> bool:
        return not self.quiet or result.status in _QUIET_SHOWS or bool(result.write_error)

    def result(self, result: "MessageResult") -> None:
        raise NotImplementedError

    def finish(self, summary: "Summary") -> None:
        raise NotImplementedError


class _JsonLines(_Renderer):
    def result(self, result: "MessageResult") -> None:
        if self.shown(result):
            sys.stdout.write(_to_json(result.to_json()) + "\n")

    def finish(self, summary: "Summary") -> None:
        sys.stdout.write(_to_json({"summary": summary.to_json()}) + "\n")


class _Json(_Renderer):
    """One JSON object, written as results arrive so memory does not grow with the mailbox."""

    def __init__(self, quiet: bool) -> None:
        super().__init__(quiet)
        self.count = 0
        sys.stdout.write('{"results": [')

    def result(self, result: "MessageResult") -> None:
        if self.shown(result):
            sys.stdout.write(("," if self.count else "") + "\n  " + _to_json(result.to_json()))
            self.count += 1

    def finish(self, summary: "Summary") -> None:
        sys.stdout.write("\n], \"summary\": " + _to_json(summary.to_json()) + "}\n")


class _Sarif(_Renderer):
    def __init__(self, quiet: bool) -> None:
        super().__init__(quiet)
        from mailguard.mailbox.sarif import SarifBuilder

        self.builder = SarifBuilder()

    def result(self, result: "MessageResult") -> None:
        self.builder.add(result)

    def finish(self, summary: "Summary") -> None:
        sys.stdout.write(json.dumps(self.builder.log(summary), indent=2, sort_keys=True) + "\n")


class _Table(_Renderer):
    """One line per result as it comes, then a summary table: Rich, coloured only on a terminal."""

    STYLES = {"clean": "green", "infected": "bold red", "blocked": "red", "unscanned": "yellow",
              "error": "bold magenta"}

    def __init__(self, quiet: bool) -> None:
        super().__init__(quiet)
        from rich.console import Console
        from rich.control import strip_control_codes

        self.console = Console(highlight=False, soft_wrap=True)
        # Piped, Rich writes the plain text of a line (control codes stripped, as Text does);
        # writing that text ourselves costs a microsecond instead of a hundred per line.
        self.plain = not self.console.is_terminal
        self.strip = strip_control_codes

    def result(self, result: "MessageResult") -> None:
        if not self.shown(result):
            return
        status = result.status
        where = f" {result.where()}"
        subject = f"  {result.subject!r}" if result.subject else ""
        details = _details(result)
        details = f"  {details}" if details else ""
        if self.plain:
            text = self.strip(f"{status:<9}{where}{subject}{details}")
            if "\t" not in text:  # Rich expands tabs by column; leave that to it
                sys.stdout.write(text + "\n")
                return
        from rich.text import Text

        line = Text()
        line.append(f"{status:<9}", style=self.STYLES.get(status, ""))
        line.append(where)
        if subject:
            line.append(subject, style="dim")
        if details:
            line.append(details)
        self.console.print(line)

    def finish(self, summary: "Summary") -> None:
        if self.quiet:
            return
        from rich.text import Text

        counts = summary.to_json()
        line = Text(f"{summary.messages} messages: ")
        for name in ("clean", "infected", "blocked", "unscanned", "errors"):
            if name == "blocked" and not counts[name]:
                continue
            style = self.STYLES.get(name.rstrip("s"), "") if counts[name] else ""
            line.append(f"{counts[name]} {name}", style=style)
            line.append(", ")
        line.append(f"{summary.bytes / 1e6:.1f} MB in {summary.seconds:.2f} s")
        for name in ("changed", "write_errors", "skipped"):
            if counts[name]:
                line.append(f", {counts[name]} {name.replace('_', ' ')}")
        self.console.print(line)
        if summary.detection:
            self.console.print(Text(_detection_line(summary.detection), style="dim"))
            for warning in summary.detection.get("warnings") or []:  # type: ignore[union-attr]
                self.console.print(Text(f"warning: {warning}", style="yellow"))


def _detection_line(detection: dict) -> str:  # type: ignore[type-arg]
    """One line naming what the verdicts were made with: detectors, signatures, clamd."""
    shown = []
    for row in detection.get("detectors") or []:
        count = row.get("signatures")
        shown.append(row["name"] + (f" {count}" if count is not None and row["name"] != "eicar" else ""))
    clamd = detection.get("clamd") or {}
    if clamd.get("version"):
        shown.append(f"clamd {clamd['version']}" + (f" database {clamd['database_version']}"
                                                    if clamd.get("database_version") else ""))
    return (f"detection: mailguard {detection.get('engine_version')}, generation {detection.get('generation')}: "
            + ", ".join(shown))


def _details(result: "MessageResult") -> str:
    parts: list[str] = []
    if result.error:
        parts.append(result.error)
    if result.verdict is not None:
        parts += [f"{f.name} in {f.part or 'message'}" + (" (policy)" if f.is_policy else "")
                  for f in result.verdict.findings]
        if not result.verdict.findings:
            parts += [f"{i.reason.value} in {i.part or 'message'}" for i in result.verdict.incomplete]
    if result.changed:
        parts.append("rewritten" + (f", original in quarantine {result.quarantine_id}"
                                    if result.quarantine_id else ""))
    if result.write_error:
        parts.append(result.write_error)
    return "; ".join(parts)


_RENDERERS: dict[Format, Callable[[bool], _Renderer]] = {
    Format.table: _Table, Format.json: _Json, Format.jsonl: _JsonLines, Format.sarif: _Sarif,
}
