"""``mailguard quarantine``: list, show, restore and delete the originals mailguard kept."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from mailguard.cli.common import ConfigOption, JsonOption, note, open_settings, print_json

app = typer.Typer(
    help="The originals of messages mailguard changed or replaced (tools.quarantine.path). "
         "Every restored message is byte for byte the one that was received.",
    no_args_is_help=True,
)

IdArgument = Annotated[str, typer.Argument(
    metavar="ID", show_default=False,
    help="A quarantine id as 'mailguard quarantine list' shows it (or its first characters, if only one id "
         "starts with them).")]


def _quarantine(config):  # noqa: ANN001, ANN202 - the Path option type and Quarantine are imported lazily
    from mailguard.quarantine import Quarantine

    paths, settings = open_settings(config)
    quarantine = Quarantine(paths.quarantine_dir(settings))
    quarantine.check()
    return quarantine


@app.command(name="list")
def list_(config: ConfigOption = None, json_: JsonOption = False) -> None:
    """List the kept messages, oldest first: id, when, verdict, detections, sender and subject.

    On a terminal this is a table; piped, one tab-separated line per message.
    """
    quarantine = _quarantine(config)
    entries = quarantine.list()
    if json_:
        print_json({"quarantine": str(quarantine.folder), "entries": [e.to_json() for e in entries]})
        return
    if not entries:
        note(f"The quarantine ({quarantine.folder}) is empty.")
        return
    rows = [(entry.id, entry.created.replace("T", " ").rstrip("Z"), entry.verdict,
             ", ".join(entry.detection_names) or "-", entry.sender, entry.subject) for entry in entries]
    if not sys.stdout.isatty():
        # For scripts: one entry per line, tab-separated, in the table's column order.
        for row in rows:
            typer.echo("\t".join(" ".join(cell.split()) for cell in row))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Quarantine: {quarantine.folder}", title_justify="left")
    for column in ("ID", "Kept (UTC)", "Verdict", "Detections", "From", "Subject"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*row)
    Console().print(table)


@app.command()
def show(id_: IdArgument, config: ConfigOption = None, json_: JsonOption = False) -> None:
    """Show what is known about one kept message (verdict, detections, where from, when) and its headers."""
    from mailguard.quarantine import headers_of

    entry, raw = _quarantine(config).get(id_)
    headers = headers_of(raw)
    if json_:
        print_json({**entry.to_json(), "headers": [[name, value] for name, value in headers]})
        return
    lines = [
        f"ID:         {entry.id}",
        f"Kept:       {entry.created}",
        f"Source:     {entry.source}",
        f"Verdict:    {entry.verdict}",
        f"Size:       {entry.size} bytes",
        f"SHA-256:    {entry.sha256}",
    ]
    for detection in entry.detections:
        lines.append(f"Detection:  {detection['name']} in {detection['part'] or '(the message)'} "
                     f"[{detection['detector']}]")
    for item in entry.incomplete:
        lines.append(f"Unscanned:  {item['part'] or '(the message)'}: {item['reason']}"
                     + (f" ({item['detail']})" if item.get("detail") else ""))
    lines.append("")
    lines += [f"{name}: {value}" for name, value in headers]
    typer.echo("\n".join(lines))


@app.command()
def restore(
    id_: IdArgument,
    to: Annotated[Optional[Path], typer.Option(
        "--to", metavar="PATH", show_default=False,
        help="Where to write the message: a file, or a folder to write ID.eml in, or '-' for stdout. "
             "Default: ID.eml in the current folder. An existing file is never overwritten.")] = None,
    config: ConfigOption = None,
) -> None:
    """Write the original of a kept message out as an .eml file, byte for byte as received.

    The entry stays in the quarantine; remove it with 'mailguard quarantine delete ID'.
    """
    quarantine = _quarantine(config)
    if to is not None and str(to) == "-":
        _, raw = quarantine.get(id_)
        sys.stdout.buffer.write(raw)
        sys.stdout.buffer.flush()
        return
    target = quarantine.restore(id_, to)
    typer.echo(str(target))


@app.command()
def delete(
    ids: Annotated[list[str], typer.Argument(metavar="ID...", show_default=False,
                                             help="One or more quarantine ids.")],
    config: ConfigOption = None,
) -> None:
    """Delete kept messages for good (the message and what was known about it)."""
    quarantine = _quarantine(config)
    entries = [quarantine.entry(entry_id) for entry_id in ids]  # all must exist before any is deleted
    for entry in entries:
        quarantine.delete(entry.id)
        note(f"deleted {entry.id}")
