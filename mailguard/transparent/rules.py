"""Transparent mode's nftables ruleset (pure: text in, text out).

The engine owns one table, ``inet mailguard``, and nothing else: removing it removes exactly
what we added and leaves the administrator's firewall alone. ``build_ruleset`` writes the script
that re-creates it in one ``nft -f -`` transaction (applied completely or not at all), so a
reload never leaves a moment without rules or with two sets of them.

What the table does, per address family (``ipv4``, ``ipv6``) and per role (plan.py):

- ``redirect``: connections to the mail ports go to the engine's listener. ``output`` (desktop)
  takes this host's own connections; loopback destinations are left alone (a local server is not
  remote mail, and explicit-mode listeners live there). ``prerouting`` (gateway) takes forwarded
  connections; those to this host's own addresses are not forwarded and are left alone.
- ``block``: a family the engine cannot listen in (IPv6 disabled, say) has its mail ports
  refused (TCP reset) instead: mail is never passed unscanned, and a dual-stack client falls back
  to the family that is scanned at once.
- The engine's own upstream connections carry the socket mark ``UPSTREAM_MARK`` (SO_MARK) and
  are let through first. A uid exemption would not do: the engine usually runs as root, and so
  may the user's own mail fetcher.
- ``listener``: the listener's port accepts only connections the rules redirected (conntrack
  says "dnat"); one made straight to it (``0.0.0.0`` opens it on every interface) is reset, so it
  can neither reach the engine from outside nor loop back into it.

Each redirect and block rule carries a comment, ``"mailguard redirect ipv6 desktop"``, so
``families_in`` can tell from the kernel's own listing what is in force (``mailguard status``).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from mailguard.transparent.plan import FAMILIES

if TYPE_CHECKING:
    from mailguard.transparent.plan import TransparentPlan

__all__ = ["TABLE", "UPSTREAM_MARK", "build_ruleset", "families_in", "removal_script"]

TABLE = "inet mailguard"
# "mg": the mark on the engine's upstream sockets. Any value works as long as nothing else on the
# host uses it for policy routing; it is one constant so the rules and the sockets agree.
UPSTREAM_MARK = 0x6D67
# Before the kernel's own DNAT (-100 is "dstnat" in nft's names; numeric for older nft).
_NAT_PRIORITY = -100
_FILTER_PRIORITY = 0
_COMMENT = re.compile(r'comment "mailguard (redirect|block) (ipv4|ipv6) (desktop|gateway)"')


def build_ruleset(plan: TransparentPlan, blocked: dict[str, str] | None = None) -> str:
    """The nft script that (re)creates ``inet mailguard``. ``blocked``: the families (with why)
    whose mail ports are refused because the engine has no listener for them."""
    blocked = blocked or {}
    ports = "{ " + ", ".join(str(p) for p in plan.mail_ports) + " }"

    def rules(action: str, role: str) -> list[str]:
        out = []
        for family in FAMILIES:
            if (family in blocked) != (action == "block"):
                continue
            # The counter also keeps nft from leaving "meta nfproto" out of its listing of a reject.
            verdict = f"redirect to :{plan.port}" if action == "redirect" else "counter reject with tcp reset"
            out.append(f'\t\tmeta nfproto {family} tcp dport {ports} {verdict} '
                       f'comment "mailguard {action} {family} {role}"')
        return out

    def chain(name: str, kind: str, hook: str, priority: int, body: list[str]) -> list[str]:
        return [f"\tchain {name} {{", f"\t\ttype {kind} hook {hook} priority {priority}; policy accept;",
                *body, "\t}"]

    leave_local = [f"\t\tmeta mark {UPSTREAM_MARK:#x} return", "\t\tip daddr 127.0.0.0/8 return",
                   "\t\tip6 daddr ::1 return"]
    lines = [
        # Creating then deleting makes the delete succeed whether or not the table existed.
        f"table {TABLE} {{}}",
        f"delete table {TABLE}",
        f"table {TABLE} {{",
    ]
    if plan.local:
        lines += chain("output", "nat", "output", _NAT_PRIORITY, leave_local + rules("redirect", "desktop"))
        if blocked:
            lines += chain("block_output", "filter", "output", _FILTER_PRIORITY,
                           leave_local + rules("block", "desktop"))
    if plan.forwarded:
        lines += chain("prerouting", "nat", "prerouting", _NAT_PRIORITY,
                       ["\t\tfib daddr type local return", *rules("redirect", "gateway")])
        if blocked:
            lines += chain("block_forward", "filter", "forward", _FILTER_PRIORITY, rules("block", "gateway"))
    lines += chain("listener", "filter", "input", _FILTER_PRIORITY, [
        f"\t\tct direction original tcp dport {plan.port} ct status dnat accept",
        f"\t\tct direction original tcp dport {plan.port} reject with tcp reset",
    ])
    lines.append("}")
    return "\n".join(lines) + "\n"


def removal_script() -> str:
    """Remove our table; nothing to remove is fine."""
    return f"table {TABLE} {{}}\ndelete table {TABLE}\n"


def families_in(ruleset: str) -> dict[str, dict[str, str]]:
    """What a listed table does per family and role: ``{"ipv4": {"desktop": "redirect"}, ...}``;
    a family the table does not mention is absent (its mail passes the table untouched)."""
    found: dict[str, dict[str, str]] = {}
    for action, family, role in _COMMENT.findall(ruleset):
        found.setdefault(family, {})[role] = action
    return {family: found[family] for family in FAMILIES if family in found}
