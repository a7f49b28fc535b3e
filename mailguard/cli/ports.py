"""``mailguard ports``: the imap/imaps/pop3/pop3s port lists."""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Optional

import typer

from mailguard.cli.common import ConfigOption, JsonOption, note, open_settings, print_json, resolve, tell_running_engine
from mailguard.errors import SettingsError, UsageError
from mailguard.settings.schema import PROTOCOLS, WELL_KNOWN_PORTS, port_list_key

app = typer.Typer(help="List, add and remove the ports taken for each mail protocol.", no_args_is_help=True)


class Protocol(str, Enum):
    imap = "imap"
    imaps = "imaps"
    pop3 = "pop3"
    pop3s = "pop3s"


PortArgument = Annotated[int, typer.Argument(metavar="PORT", min=1, max=65535, help="A TCP port, 1-65535.",
                                             show_default=False)]
ProtocolOption = Annotated[
    Optional[Protocol],
    typer.Option("--protocol", "-p", help="The protocol list (defaults from the well-known port number).",
                 show_default=False, case_sensitive=False),
]


@app.command(name="list")
def list_(config: ConfigOption = None, json_: JsonOption = False) -> None:
    """The four port lists."""
    _, settings = open_settings(config)
    lists = {protocol: settings.get(port_list_key(protocol)) for protocol in PROTOCOLS}
    if json_:
        print_json(lists)
        return
    for protocol, ports in lists.items():
        typer.echo(f"{protocol:<6} {', '.join(map(str, ports)) or '-'}")


@app.command()
def add(port: PortArgument, protocol: ProtocolOption = None, config: ConfigOption = None) -> None:
    """Add PORT to a protocol's list (993/585 imaps, 995 pop3s, 143 imap, 110 pop3 by default)."""
    name = protocol.value if protocol else WELL_KNOWN_PORTS.get(port)
    if name is None:
        raise UsageError(
            f"port {port} is not a well-known mail port: say which list with --protocol "
            f"({'|'.join(PROTOCOLS)}), e.g. 'mailguard ports add {port} --protocol imaps'"
        )
    key = port_list_key(name)

    def change(settings):
        current = settings.get(key)
        if port in current:
            return settings  # already there: adding is idempotent, as scripts expect
        return settings.with_value(key, current + [port])

    paths = resolve(config)
    saved = update(paths, change)
    note(f"{name} ports: {', '.join(map(str, saved.get(key)))}")
    tell_running_engine(paths)


@app.command()
def remove(port: PortArgument, protocol: ProtocolOption = None, config: ConfigOption = None) -> None:
    """Remove PORT from the list holding it (or from --protocol's list)."""

    def change(settings):
        names = [protocol.value] if protocol else list(PROTOCOLS)
        for name in names:
            current = settings.get(port_list_key(name))
            if port in current:
                change.removed_from = name  # type: ignore[attr-defined]
                return settings.with_value(port_list_key(name), [p for p in current if p != port])
        where = f"the {protocol.value} list" if protocol else "any port list"
        raise SettingsError(f"port {port} is not in {where}")

    paths = resolve(config)
    saved = update(paths, change)
    name = change.removed_from  # type: ignore[attr-defined]
    note(f"{name} ports: {', '.join(map(str, saved.get(port_list_key(name)))) or '(none)'}")
    tell_running_engine(paths)


def update(paths, change):
    from mailguard.settings import update_settings

    return update_settings(paths.config_file, change)
