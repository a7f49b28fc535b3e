"""What transparent mode does to mail right now, from the kernel's own ruleset.

``mailguard status`` must not take the engine's word for the rules: an engine killed with
SIGKILL leaves its table behind (mail connections are then refused: fail closed), and a
``nft flush ruleset`` removes it under a running engine (mail then passes unscanned). So the
table is read back by name (``nft list table inet mailguard``) and judged together with
whether an engine listens, per address family:

- ``scanned``: redirected to a listening engine;
- ``blocked``: the engine cannot listen in this family, so its mail ports are refused;
- ``refused``: redirected, but no engine listens (after a crash): clients get "connection refused";
- ``unscanned``: transparent mode, but no rule takes this family: mail goes around the engine.

``problem`` says, in words, when the state is not what the settings ask for; ``status`` then
exits non-zero. ``start`` (no engine) or ``reload`` (a running one) installs the table again,
and ``stop`` removes a leftover one.
"""

from __future__ import annotations

from typing import Any

from mailguard.errors import ServiceError
from mailguard.transparent.plan import FAMILIES
from mailguard.transparent.rules import families_in

__all__ = ["read_ruleset", "transparent_section"]

#: the rules each transparent.role needs, named as the table's comments name them
_ROLES = {"desktop": ("desktop",), "gateway": ("gateway",), "both": ("desktop", "gateway")}


def read_ruleset(required: bool = True) -> tuple[str | None, str]:
    """(the table as the kernel lists it, "" when absent; or None and why it cannot be read).
    Not ``required`` (explicit mode: only a leftover table would matter), a table that cannot be
    read (no root, no nft) counts as none."""
    from mailguard.transparent import netfilter

    try:
        if not netfilter.has_net_admin():
            raise ServiceError("reading the nftables rules needs root (CAP_NET_ADMIN)")
        return netfilter.current_ruleset(), ""
    except ServiceError as exc:
        return ("", "") if not required else (None, str(exc))


def transparent_section(*, mode: str, role: str | None, running: bool, listening: set[str],
                        blocked: dict[str, str], ruleset: str | None, error: str = "") -> dict[str, Any]:
    """The ``transparent`` part of ``mailguard status``."""
    section: dict[str, Any] = {"installed": bool(ruleset), "ruleset": ruleset or "", "role": role,
                               "families": {}, "blocked": dict(blocked), "problem": ""}
    if ruleset is None:
        section["installed"] = None  # unknown
        section["error"] = error
        return section
    found = families_in(ruleset)
    transparent = mode == "transparent"
    expected = _ROLES.get(role or "", ()) if transparent else ()
    for family in FAMILIES:
        rules = found.get(family, {})
        # Each role the plan asks for is judged on its own: with role "both", a prerouting rule
        # left behind does nothing for the connections of the output hook whose rule is gone.
        actions = {rules.get(each) for each in expected} if expected else set(rules.values())
        if None in actions and transparent and running:
            state = "unscanned"
        elif "block" in actions:
            state = "blocked"
        elif "redirect" in actions:
            state = "scanned" if running and family in listening else "refused"
        elif transparent and running:
            state = "unscanned"
        else:
            continue
        section["families"][family] = state
    section["problem"] = _problem(transparent, running, section)
    return section


def _problem(transparent: bool, running: bool, section: dict[str, Any]) -> str:
    if not transparent:
        return ""
    families = section["families"]
    if not running and section["installed"]:
        return ("the engine's nftables rules are in force but no engine runs: mail connections are refused; "
                "'mailguard start' starts it again, 'mailguard stop' removes the rules")
    if running and not section["installed"]:
        return ("the engine's nftables table is missing: mail passes unscanned; "
                "'mailguard reload' installs it again")
    unscanned = [_name(family) for family, state in families.items() if state == "unscanned"]
    if running and unscanned:
        return (f"{' and '.join(unscanned)} mail passes unscanned: no rule of the engine takes it; "
                "'mailguard reload' installs the rules again")
    refused = [_name(family) for family, state in families.items() if state == "refused"]
    if running and refused:
        return (f"{' and '.join(refused)} mail is redirected to a listener the engine does not have; "
                "'mailguard reload' installs the rules again")
    return ""


def summary(section: dict[str, Any]) -> str:
    """One line for the text status: what happens to each family's mail."""
    if section.get("installed") is None:
        return f"transparent rules: unknown ({section.get('error', '')})"
    families = section.get("families") or {}
    if not families:
        return "transparent rules: none"
    parts = []
    for family, state in families.items():
        why = (section.get("blocked") or {}).get(family)
        parts.append(f"{_name(family)} {state}" + (f" ({why})" if state == "blocked" and why else ""))
    role = f" (role {section['role']})" if section.get("role") else ""
    return f"transparent rules{role}: " + ", ".join(parts)


def _name(family: str) -> str:
    return {"ipv4": "IPv4", "ipv6": "IPv6"}.get(family, family)
