"""The ``mailguard`` command: a root group that loads each command module only when used.

Scripts call ``mailguard config get KEY`` many times, so start-up matters: the root knows
its commands by name and imports the module behind one only when it is invoked (or
when help lists them all).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from typer._click.exceptions import ClickException
from typer.core import TyperGroup

from mailguard import __version__
from mailguard.cli import common, exitcodes
from mailguard.errors import MailguardError

# command name -> (module, command inside that module's app, or None for the whole group)
LAZY_COMMANDS: dict[str, tuple[str, str | None]] = {
    "config": ("mailguard.cli.config", None),
    "ports": ("mailguard.cli.ports", None),
    "enable": ("mailguard.cli.protection", "enable"),
    "disable": ("mailguard.cli.protection", "disable"),
    "start": ("mailguard.cli.engine", "start"),
    "stop": ("mailguard.cli.engine", "stop"),
    "restart": ("mailguard.cli.engine", "restart"),
    "reload": ("mailguard.cli.engine", "reload"),
    "status": ("mailguard.cli.engine", "status"),
    "ca": ("mailguard.cli.ca", None),
    "scan": ("mailguard.cli.scan", "scan"),
    "quarantine": ("mailguard.cli.quarantine", None),
    "demo": ("mailguard.cli.demo", "demo"),
}


def _load(name: str) -> Any:
    module_name, command_name = LAZY_COMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            return None  # a command whose module is not part of this build
        raise
    command = typer.main.get_command(module.app)
    # Each module's app is built on its own, and Typer gives every such root its own
    # --install-completion options; completions are generated files here (completions/).
    command.params = [p for p in command.params if p.name not in {"install_completion", "show_completion"}]
    _unwrap_help(command)
    if command_name is None:
        command.name = name
        return command
    if hasattr(command, "get_command"):
        return command.get_command(None, command_name)  # type: ignore[arg-type]
    return command  # an app with a single command is that command


def _unwrap_help(command: Any) -> None:
    """Docstrings are wrapped for the source; help shows paragraphs, so join wrapped lines."""
    if command.help:
        command.help = "\n\n".join(" ".join(part.split()) for part in command.help.split("\n\n"))
    for sub in getattr(command, "commands", {}).values():
        _unwrap_help(sub)


class LazyGroup(TyperGroup):
    def list_commands(self, ctx: Any) -> list[str]:
        names = set(super().list_commands(ctx)) | set(LAZY_COMMANDS)
        return sorted(n for n in names if self.get_command(ctx, n) is not None)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        if command is None and cmd_name in LAZY_COMMANDS:
            command = _load(cmd_name)
            if command is not None:
                self.add_command(command, cmd_name)
        return command

    def invoke(self, ctx: Any) -> Any:
        # The one place errors become exit codes (docs/architecture.md#errors-say-who-broke-the-rules).
        # Exit code 1 means "threats found", so nothing else may end in it: not a bug, not a closed pipe.
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, ClickException):
            raise
        except MailguardError as exc:
            problems = getattr(exc, "problems", [str(exc)])
            for problem in problems:
                sys.stderr.write(f"mailguard: {problem}\n")
            raise typer.Exit(exitcodes.ERROR) from None
        except BrokenPipeError:
            _silence_stdout()  # the reader went away (`| head`); nothing more can be said there
            raise typer.Exit(exitcodes.ERROR) from None
        except Exception:  # noqa: BLE001 - a bug: show it, but keep exit code 1 for threats
            import traceback

            traceback.print_exc()
            sys.stderr.write("mailguard: internal error (the traceback above is a bug; please report it)\n")
            raise typer.Exit(exitcodes.ERROR) from None


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail again."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


app = typer.Typer(
    cls=LazyGroup,
    name="mailguard",
    help="Scan POP3 and IMAP mail between client and server, and saved mailboxes, for malware.\n\n"
         "Settings: 'mailguard config list'. Exit codes: 0 success, 1 threats found, 2 error, "
         "3 scan incomplete.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        sys.stdout.write(f"mailguard {__version__}\n")
        raise typer.Exit()


@app.callback()
def root(
    config: Annotated[
        Optional[Path],
        typer.Option("--config", metavar="FILE", help="Settings file to use, for every command.",
                     show_default=False),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    """Options that apply to every command (the help text is the app's, above)."""
    common.root_config = config


def main() -> None:
    try:
        app(prog_name="mailguard")
    finally:
        # Output still buffered when the command ended can meet a closed pipe only here.
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            _silence_stdout()
            sys.exit(exitcodes.ERROR)
