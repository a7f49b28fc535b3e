"""``mailguard start | stop | restart | reload | status``: the filtering engine's lifecycle.

Decisions (issue 6):
- ``stop`` with no engine running exits 0 with a note on stderr: the wanted end state (stopped)
  holds, so scripts and ``restart`` can call it unconditionally (as ``systemctl stop`` does).
- ``reload`` with no engine running exits 2: what was asked (apply the settings to a running
  engine) could not be done; the settings apply at the next start anyway.
- ``status`` exits 0 whether or not the engine runs; ``running`` (JSON) or the first line (text)
  says which. It exits 2 when an engine holds the pid lock but does not answer, and when the
  kernel's transparent-mode rules do not match the engine (``transparent.problem``: rules left
  by a killed engine, or a running engine's rules gone; transparent/status.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from mailguard.cli import exitcodes
from mailguard.cli.common import ConfigOption, JsonOption, note, open_settings, print_json, resolve
from mailguard.errors import ServiceError

if TYPE_CHECKING:
    from mailguard.settings import Paths, Settings

app = typer.Typer(help="Start, stop and inspect the filtering engine.")

_MODE = "web-and-email.protocol-filtering.mode"
_FILTERING = "web-and-email.protocol-filtering.enabled"
_PROTECTION = "web-and-email.email-client.protocols.enabled"
COUNTERS = ("connections", "messages_scanned", "infected", "blocked", "unscanned", "bytes", "errors",
            "unrecognized")


@app.command()
def start(
    config: ConfigOption = None,
    foreground: Annotated[
        bool,
        typer.Option("--foreground", help="Stay in the foreground and log to stderr (for systemd and containers)."),
    ] = False,
) -> None:
    """Start the filtering engine.

    By default the engine detaches and logs to STATE/mailguard.log; the command returns once it
    listens, or exits 2 with the reason it could not start. In transparent mode the engine needs
    root to install its nftables rules.
    """
    from mailguard.service import daemon

    paths, settings = open_settings(config)
    _check_transparent_prerequisites(settings)
    _check_quarantine(paths, settings)
    if foreground:
        daemon.run_foreground(paths, settings)
        return
    pid = daemon.start_detached(paths, settings)
    note(f"mailguard: engine started (pid {pid}, {settings.get(_MODE)} mode); log: {paths.log_file}")
    _note_detection(paths)


def _note_detection(paths: Paths) -> None:
    """Say at start what the engine detects with when it is weak: clamd not found, old or only
    built-in signatures (the log and ``status`` say it too)."""
    from mailguard.service import control

    try:
        detection = control.request(paths, "status").get("detection") or {}
    except ServiceError:
        return
    clamd = detection.get("clamd") or {}
    if clamd.get("state") == "not found":
        note(f"mailguard: clamd not found (looked at {', '.join(clamd.get('looked_at') or [])}): "
             "scanning without it")
    for warning in detection.get("warnings") or []:
        note(f"mailguard: warning: {warning}")


@app.command()
def stop(config: ConfigOption = None) -> None:
    """Stop the engine gracefully, and remove its transparent-mode rules.

    Messages in flight are finished (or left intact on the server) before connections close.
    In transparent mode the engine's nftables table goes with it, so mail connections go
    direct again, unscanned; a table left by an engine that was killed is removed too.
    Not running is not an error: the command notes it and exits 0.
    """
    paths = resolve(config)
    _stop(paths)


@app.command()
def restart(config: ConfigOption = None) -> None:
    """Stop the engine if it runs, then start it again (detached) with the current settings."""
    from mailguard.service import daemon

    paths, settings = open_settings(config)  # a broken settings file must not stop a working engine
    _check_transparent_prerequisites(settings)
    _check_quarantine(paths, settings)
    _stop(paths)
    pid = daemon.start_detached(paths, settings)
    note(f"mailguard: engine started (pid {pid}, {settings.get(_MODE)} mode); log: {paths.log_file}")
    _note_detection(paths)


@app.command()
def reload(config: ConfigOption = None) -> None:
    """Make the running engine re-read its settings, without dropping connections.

    A settings file that does not validate is refused and the settings in force stay (exit 2).
    Same as sending SIGHUP to the engine.
    """
    from mailguard.service import control

    paths = resolve(config)
    try:
        status = control.request(paths, "reload")
    except control.ServiceNotRunningError:
        raise ServiceError(
            "the engine is not running, so there is nothing to reload (settings apply at the next start)"
        ) from None
    note(f"mailguard: settings reloaded (pid {status.get('pid')}, protection {status.get('protection')})")


@app.command()
def status(config: ConfigOption = None, json_: JsonOption = False) -> None:
    """Show whether the engine runs, with pid, uptime, listeners, protection, counters, rules.

    The transparent-mode rules are read from the kernel (needs root), per address family:
    scanned, blocked (no listener possible: mail ports refused), refused (rules without an
    engine: after a crash) or unscanned. Exits 2 when they do not match the engine
    (transparent.problem); 'mailguard start' or 'stop' puts that right.

    JSON keys: state (stopped, starting, running), running, pid, started_at, uptime (seconds),
    mode, protection ("on"/"off"), listeners, counters (connections, messages_scanned, infected,
    blocked, unscanned, bytes, errors, unrecognized; refused, timed_out and oversized for the
    protocol-filtering.limits; and more), transparent (installed, ruleset, role, families, blocked,
    problem), config_file, detection (detectors, sources with versions or hashes, clamd's state and
    version, newest signatures, warnings: of the running engine, or what a start would use).
    """
    paths, settings = open_settings(config)
    report = _status(paths, settings)
    if json_:
        print_json(report)
    else:
        _print_status(report)
        _print_transparent(report)
        _print_detection(report)
    problem = (report.get("transparent") or {}).get("problem")
    if problem:
        note(f"mailguard: {problem}")
        raise typer.Exit(exitcodes.ERROR)


# --- helpers ------------------------------------------------------------------------------------


def _check_transparent_prerequisites(settings: Settings) -> None:
    """Fail before forking, with the reason, rather than in the daemon's log."""
    if settings.get(_MODE) != "transparent":
        return
    from mailguard.transparent import netfilter
    from mailguard.transparent.plan import TransparentPlan

    TransparentPlan.from_settings(settings)  # a listen address or role that cannot work
    if not netfilter.has_net_admin():
        raise ServiceError(
            "transparent mode needs root (or CAP_NET_ADMIN) to install its nftables rules; "
            "run 'mailguard start' as root, or set web-and-email.protocol-filtering.mode to explicit"
        )


def _check_quarantine(paths: Paths, settings: Settings) -> None:
    """A quarantine folder another user could change is refused before the engine starts
    (its every ``add`` refuses it too, so a message is then withheld, never kept there)."""
    if not settings.get("web-and-email.email-client.response.quarantine"):
        return
    from mailguard.quarantine import Quarantine

    Quarantine(paths.quarantine_dir(settings)).prepare()


def _stop(paths: Paths) -> None:
    from mailguard.service import daemon

    pid = daemon.stop_running(paths)
    if pid is None:
        note("mailguard: the engine is not running; nothing to stop")
        _remove_leftover_rules(paths)
    else:
        note(f"mailguard: engine stopped (pid {pid})")


def _remove_leftover_rules(paths: Paths) -> None:
    """An engine that was killed (SIGKILL, OOM) could not remove its nftables table, and the rules
    would keep sending mail connections to a listener that is gone. Clean up when we may."""
    from mailguard.errors import MailguardError
    from mailguard.transparent import netfilter
    from mailguard.settings import load_settings

    try:
        if load_settings(paths.config_file).get(_MODE) != "transparent" or not netfilter.has_net_admin():
            return
        if netfilter.current_ruleset():
            netfilter.remove()
            note("mailguard: removed the transparent-mode rules a stopped engine had left behind")
    except MailguardError as exc:
        note(f"mailguard: could not check for leftover transparent-mode rules: {exc}")


def _status(paths: Paths, settings: Settings) -> dict[str, Any]:
    from mailguard.service import control, pidlock

    pid = pidlock.running_pid(paths)
    if pid is None:
        return _stopped_report(paths, settings)
    try:
        report = control.request(paths, "status")
    except control.ServiceNotRunningError:
        # The pid lock is taken first and the control socket opened last, once the listeners
        # (and transparent rules) are up: in between, the engine is starting.
        report = {**_stopped_report(paths, settings), "state": "starting", "running": True, "pid": pid}
        report["transparent"]["problem"] = ""  # half set up is what starting looks like
        return report
    except ServiceError as exc:
        raise ServiceError(f"the engine (pid {pid}) runs but does not answer: {exc}") from exc
    return {"state": "running", **report}


def _stopped_report(paths: Paths, settings: Settings) -> dict[str, Any]:
    protection_on = settings.get(_FILTERING) and settings.get(_PROTECTION)
    return {
        "state": "stopped",
        "running": False,
        "pid": None,
        "started_at": None,
        "uptime": None,
        "mode": settings.get(_MODE),
        "protection": "on" if protection_on else "off",
        "listeners": [],
        "counters": {name: 0 for name in COUNTERS},
        "transparent": _stopped_transparent(settings),
        "config_file": str(paths.config_file),
        "detection": _detection_preview(settings),
    }


def _stopped_transparent(settings: Settings) -> dict[str, Any]:
    """The kernel's rules with no engine running (a killed engine leaves them)."""
    from mailguard.transparent.plan import ROLE_KEY
    from mailguard.transparent.status import read_ruleset, transparent_section

    mode = settings.get(_MODE)
    ruleset, error = read_ruleset(required=mode == "transparent")
    return transparent_section(mode=mode, role=settings.get(ROLE_KEY) if mode == "transparent" else None,
                               running=False, listening=set(), blocked={}, ruleset=ruleset, error=error)


def _detection_preview(settings: Settings) -> dict[str, Any] | None:
    """What an engine started now would detect with (clamd looked for, signature files read)."""
    from mailguard.errors import MailguardError
    from mailguard.scan.detectors.sources import prepare
    from mailguard.scan.policy import Policy

    try:
        policy, inventory = prepare(Policy.from_settings(settings))
    except (MailguardError, OSError) as exc:
        note(f"mailguard: cannot tell what the engine would detect with: {exc}")
        return None
    return inventory.to_json(policy.signatures_max_age)


def _print_status(report: dict[str, Any]) -> None:
    if not report.get("running"):
        typer.echo(f"mailguard is not running (protection is {report['protection']} in the settings)")
        return
    if report.get("state") == "starting":
        typer.echo(f"mailguard is starting (pid {report.get('pid')})")
        return
    typer.echo(
        f"mailguard is running (pid {report.get('pid')}, up {_duration(report.get('uptime') or 0)}, "
        f"{report.get('mode')} mode)"
    )
    typer.echo(f"protection: {report.get('protection')}")
    listeners = report.get("listeners") or []
    typer.echo("listeners:" + ("" if listeners else " none"))
    for listener in listeners:
        typer.echo(f"  {_listener_text(listener)}")
    counters = report.get("counters") or {}
    typer.echo("counters: " + ", ".join(f"{name.replace('_', ' ')} {counters.get(name, 0)}" for name in COUNTERS))


def _print_transparent(report: dict[str, Any]) -> None:
    """The transparent-mode section: what happens to IPv4 and IPv6 mail, then the rules."""
    from mailguard.transparent.status import summary

    section = report.get("transparent") or {}
    if report.get("mode") != "transparent" and not section.get("installed"):
        return
    typer.echo(summary(section))
    rules = section.get("ruleset", "")
    if rules:
        typer.echo(rules.rstrip())


def _print_detection(report: dict[str, Any]) -> None:
    """The detection section: detectors, their signatures and sources, clamd, freshness, warnings
    (of the running engine, or what a start would use)."""
    detection = report.get("detection")
    if not detection:
        return
    title = "detection" if report.get("state") == "running" else "detection (at the next start)"
    typer.echo(f"{title}: mailguard {detection.get('engine_version')}, signature generation "
               f"{detection.get('generation')}")
    sources = detection.get("sources") or []
    for row in detection.get("detectors") or []:
        name, count = row.get("name"), row.get("signatures")
        if name == "eicar":
            typer.echo("  eicar: the built-in EICAR test signature")
        elif name == "heuristics":
            typer.echo("  heuristics: on")
        elif name == "policy":
            typer.echo(f"  policy: {count} blocked attachment types")
        elif name == "clamd":
            continue  # below, with its version
        else:
            unit = "rules" if name == "yara" else "signatures"
            typer.echo(f"  {name}: {count} {unit}")
            for source in sources:
                if source.get("detector") == name:
                    when = f", {source['updated']}" if source.get("updated") else ""
                    version = source.get("version") or source.get("problem") or ""
                    typer.echo(f"    {source.get('name')} ({version[:23]}{when})")
    clamd = detection.get("clamd") or {}
    state = clamd.get("state")
    if state in ("in use", "in use, not answering"):
        version = clamd.get("version") or "version unknown"
        database = (f", database {clamd['database_version']} of {clamd.get('database_date')}"
                    if clamd.get("database_version") else "")
        typer.echo(f"  clamd: {state} at {clamd.get('address')} ({version}{database})")
    elif state == "not found":
        typer.echo(f"  clamd: not found (looked at {', '.join(clamd.get('looked_at') or [])})")
    else:
        typer.echo("  clamd: off")
    newest = detection.get("newest_signatures")
    if newest:
        typer.echo(f"  newest signatures: {newest} ({_duration(detection.get('signatures_age_seconds') or 0)} old)")
    for warning in detection.get("warnings") or []:
        typer.echo(f"  warning: {warning}")


def _listener_text(listener: Any) -> str:
    if isinstance(listener, dict):
        listen = listener.get("listen") or listener.get("address") or ""
        upstream = listener.get("upstream")
        extra = f" ({listener['protocol']})" if listener.get("protocol") else ""
        return f"{listen} -> {upstream}{extra}" if upstream else f"{listen}{extra}"
    return str(listener)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "m")]
    text = " ".join(f"{n}{unit}" for n, unit in parts if n)
    return f"{text} {secs}s".strip()
