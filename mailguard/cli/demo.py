"""``mailguard demo``: fetch infected demo mail through the filtering engine and show what was caught."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from mailguard.cli.common import JsonOption, print_json

if TYPE_CHECKING:
    from mailguard.demo.run import DemoReport, Received

app = typer.Typer()


@app.command()
def demo(
    home: Annotated[
        Optional[Path],
        typer.Option(
            "--home", metavar="DIR",
            help="Use DIR for the demo's settings and state (quarantine) and keep it afterwards; "
            "default: a temporary folder, removed at the end.",
            show_default=False,
        ),
    ] = None,
    json_: JsonOption = False,
) -> None:
    """Fetch infected demo mail through the filtering engine and show what was caught.

    Starts a small POP3/IMAP server on 127.0.0.1 holding a sample mailbox (clean messages, one
    with an attachment, and EICAR test files in a body, an attachment and a zip), starts the
    engine in explicit mode in front of it, fetches every message through it with Python's poplib
    and imaplib, and shows what the client received and what went to the quarantine. Needs no
    root and no network; nothing is left running.
    """
    from mailguard.demo.run import run_demo

    report = run_demo(home)
    if json_:
        print_json(report.to_json())
    else:
        _render(report)


def _render(report: DemoReport) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    console.print(
        f"Demo server on 127.0.0.1 (POP3 port {report.server_ports['pop3']}, IMAP port "
        f"{report.server_ports['imap']}); mailguard listens in front of it on "
        f"{report.engine_listeners['pop3']} (POP3) and {report.engine_listeners['imap']} (IMAP)."
    )
    for protocol, client in (("pop3", "poplib"), ("imap", "imaplib")):
        rows = [r for r in report.received if r.protocol == protocol]
        table = Table(title=f"What the {protocol.upper()} client ({client}) received", title_justify="left")
        for column in ("#", "Subject", "X-MailGuard-Result", "Size (server → client)", "Outcome"):
            table.add_column(column, overflow="fold")
        for row in rows:
            # Subjects and headers come from mail: never let them be read as Rich markup.
            table.add_row(
                str(row.number), escape(row.subject), escape(row.result) or "—",
                f"{row.original_size} → {row.received_size}", _outcome(row),
            )
        console.print(table)
        if protocol in report.errors:
            console.print(f"[red]{protocol.upper()} fetch failed:[/red] {report.errors[protocol]}")
        relayed = [r for r in rows if r.sent_infected and r.eicar_reached_client and not r.result]
        if relayed:
            console.print(
                f"[yellow]{len(relayed)} infected {protocol.upper()} message(s) reached the client untouched "
                "and untagged:[/yellow] the engine relayed this protocol without scanning it."
            )
    caught = [r for r in report.received if r.caught]
    infected = [r for r in report.received if r.sent_infected]
    console.print(f"Caught {len(caught)} of {len(infected)} infected messages fetched.")
    _render_quarantine(console, report)
    if report.engine_log:
        console.print("Engine log (warnings):")
        for line in report.engine_log:
            console.print(f"  {escape(line)}", highlight=False)
    counters = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in report.counters.items())
    if counters:
        console.print(f"Engine counters: {counters}.")
    where = f"kept in {report.home}" if report.kept else "a temporary folder, now removed (use --home DIR to keep it)"
    console.print(f"Settings and state: {where}. The engine and the demo server have stopped.")


def _outcome(row: Received) -> str:
    if row.caught:
        return "[green]caught[/green]"
    if row.sent_infected:
        return "[red]infected content delivered[/red]"
    return "clean, unchanged" if row.unchanged else "clean, changed"


def _render_quarantine(console, report: DemoReport) -> None:  # noqa: ANN001 - rich Console
    from rich.table import Table

    if not report.quarantine:
        console.print("Quarantine: empty.")
        return
    from rich.markup import escape

    table = Table(
        title="Quarantine: the originals, restorable with 'mailguard quarantine restore ID'", title_justify="left"
    )
    for column in ("ID", "Subject", "Detections", "Size"):
        table.add_column(column, overflow="fold", justify="right" if column == "Size" else "left")
    for entry in report.quarantine:
        table.add_row(entry["id"], escape(entry["subject"]), escape(", ".join(entry["detections"])), str(entry["size"]))
    console.print(table)
