"""``mailguard config``: read and change the settings tree."""

from __future__ import annotations

import os
from typing import Annotated, Optional

import typer

from mailguard.cli import exitcodes
from mailguard.cli.common import ConfigOption, JsonOption, note, open_settings, print_json, resolve, tell_running_engine
from mailguard.errors import MailguardError, SettingsError, UsageError

app = typer.Typer(help="Read and change settings (keys as in 'mailguard config list').", no_args_is_help=True)

KeyArgument = Annotated[str, typer.Argument(metavar="KEY", help="A settings key, e.g. web-and-email.ssl-tls.enabled.",
                                            show_default=False)]


def _setting(key: str):
    from mailguard.settings import lookup

    try:
        return lookup(key)
    except KeyError as exc:
        raise SettingsError(exc.args[0]) from None


def _entry(settings, key: str) -> dict:
    setting = _setting(key)
    value = settings.get(key)
    return {
        "key": key,
        "value": setting.type.to_json(value),
        "default": setting.type.to_json(setting.default),
        "origin": settings.origin(key),
        "type": setting.type.describe(),
        "help": setting.help,
    }


@app.command()
def get(key: KeyArgument, config: ConfigOption = None, json_: JsonOption = False) -> None:
    """Print the effective value of KEY (lists comma-separated)."""
    setting = _setting(key)
    _, settings = open_settings(config)
    if json_:
        print_json(_entry(settings, key))
    else:
        typer.echo(setting.format(settings.get(key)))


@app.command(name="set")
def set_(
    key: KeyArgument,
    values: Annotated[list[str], typer.Argument(metavar="VALUE", help="The value; list keys take several.",
                                                show_default=False)],
    config: ConfigOption = None,
) -> None:
    """Validate VALUE and save it; a running engine applies it at once."""
    from mailguard.settings import update_settings
    from mailguard.settings.types import Ports, StrList

    setting = _setting(key)
    if len(values) > 1 and not isinstance(setting.type, (Ports, StrList)):
        raise UsageError(f"{key} takes one value, got {len(values)}: {' '.join(values)}")
    value = values if len(values) > 1 else values[0]
    if hasattr(setting.type, "absolute"):  # a relative path means one from here, not from the engine's "/"
        try:
            value = setting.type.absolute(setting.parse(value), os.getcwd())
        except ValueError:
            pass  # with_value below reports it with the key
    paths = resolve(config)
    saved = update_settings(paths.config_file, lambda s: s.with_value(key, value))
    note(f"{key} = {setting.format(saved.get(key))}")
    tell_running_engine(paths)


@app.command()
def unset(key: KeyArgument, config: ConfigOption = None) -> None:
    """Put KEY back to its default."""
    from mailguard.settings import update_settings

    setting = _setting(key)
    paths = resolve(config)
    update_settings(paths.config_file, lambda s: s.without(key))
    note(f"{key} = {setting.format(setting.default)} (default)")
    tell_running_engine(paths)


@app.command(name="list")
def list_(
    prefix: Annotated[Optional[str], typer.Argument(metavar="PREFIX", help="Only keys starting with this.",
                                                    show_default=False)] = None,
    changed: Annotated[bool, typer.Option("--changed", help="Only keys that differ from the default.")] = False,
    config: ConfigOption = None,
    json_: JsonOption = False,
) -> None:
    """Keys with their value, default and origin (default or file)."""
    from mailguard.settings import REGISTRY

    _, settings = open_settings(config)
    keys = [k for k in REGISTRY if not prefix or k.startswith(prefix)]
    if prefix and not keys:
        raise SettingsError(f"no key starts with {prefix!r}")
    if changed:
        keys = [k for k in keys if settings.origin(k) == "file"]
    entries = [_entry(settings, k) for k in keys]
    if json_:
        print_json(entries)
        return
    for entry in entries:  # every line says where its value comes from, on a terminal or not
        setting = REGISTRY[entry["key"]]
        value = setting.format(settings.get(entry["key"]))
        typer.echo(f"{entry['key']} = {value}    (default: {setting.format(setting.default)}; "
                   f"origin: {entry['origin']})")


@app.command()
def check(config: ConfigOption = None, json_: JsonOption = False) -> None:
    """Validate the settings file: exit 0 when valid, 2 when not, listing every problem."""
    from mailguard.settings import load_settings

    paths = resolve(config)
    try:
        load_settings(paths.config_file)
        problems: list[str] = []
    except SettingsError as exc:
        problems = exc.problems
    except MailguardError as exc:  # e.g. an unreadable file: still an answer in the asked format
        problems = [str(exc)]
    if json_:
        print_json({"file": str(paths.config_file), "valid": not problems, "problems": problems})
    elif problems:
        for problem in problems:
            note(f"mailguard: {problem}")
    else:
        exists = "" if paths.config_file.exists() else " (no file: all defaults)"
        typer.echo(f"{paths.config_file}: valid{exists}")
    if problems:
        raise typer.Exit(exitcodes.ERROR)


@app.command()
def path(config: ConfigOption = None) -> None:
    """Print the settings file in use (it may not exist yet: then all defaults apply)."""
    typer.echo(str(resolve(config).config_file))
