"""``mailguard enable`` / ``mailguard disable``: the email protection switch."""

from __future__ import annotations

import typer

from mailguard.cli.common import ConfigOption, note, resolve, tell_running_engine

app = typer.Typer()

SWITCH = "web-and-email.email-client.protocols.enabled"


def _set(enabled: bool, config) -> None:
    from mailguard.settings import update_settings

    paths = resolve(config)
    update_settings(paths.config_file, lambda s: s.with_value(SWITCH, enabled))
    state = "on" if enabled else "off (mail is relayed unscanned)"
    applied = " and applied to the running engine" if tell_running_engine(paths) else ""
    note(f"email protection {state}: saved{applied}")


@app.command()
def enable(config: ConfigOption = None) -> None:
    """Turn email protection on, persistently and in a running engine at once."""
    _set(True, config)


@app.command()
def disable(config: ConfigOption = None) -> None:
    """Turn email protection off: mail is relayed unscanned, never blocked.

    TLS is no longer intercepted either: new connections are relayed as they are, so clients
    see the server's own certificate. Transparent mode's rules stay in place.
    """
    _set(False, config)
