"""Value types of the settings tree: parse from the command line or TOML, format for display.

Each type turns what a user may write (a command-line string, or a TOML value written
by hand) into one canonical Python value, and back into text. ``ValueError`` carries a
message saying what is allowed; the store adds the key and the file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}

# Binary units, as mail tools (ClamAV's MaxFileSize 25M, ESET's limits) mean them.
_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1024, "kb": 1024, "kib": 1024,
    "m": 1024**2, "mb": 1024**2, "mib": 1024**2,
    "g": 1024**3, "gb": 1024**3, "gib": 1024**3,
}
_SIZE_RE = re.compile(r"^\s*(\d+)\s*([a-zA-Z]*)\s*$")
_DURATION_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")


def _split_list(value: Any) -> list[str]:
    """A list from TOML (a list) or from the command line ("a, b" or repeated arguments)."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise ValueError("expected a list")
    items: list[str] = []
    for item in value:
        if not isinstance(item, (str, int)) or isinstance(item, bool):
            raise ValueError(f"list item {item!r} is not a string")
        items.extend(part.strip() for part in str(item).split(","))
    return [item for item in items if item]


@dataclass(frozen=True)
class ValueType:
    """Base: ``parse`` gives the canonical value, ``format`` the text ``config get`` prints."""

    name: str = "string"

    def parse(self, value: Any) -> Any:
        if not isinstance(value, str):
            raise ValueError("expected a string")
        return value

    def format(self, value: Any) -> str:
        return str(value)

    def to_toml(self, value: Any) -> Any:
        return value

    def to_json(self, value: Any) -> Any:
        return value

    def describe(self) -> str:
        return self.name


@dataclass(frozen=True)
class Bool(ValueType):
    name: str = "bool"

    def parse(self, value: Any) -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise ValueError("expected true/false, yes/no, on/off or 1/0")

    def format(self, value: bool) -> str:
        return "true" if value else "false"


@dataclass(frozen=True)
class BoolOrAuto(ValueType):
    """A switch with a third position, ``auto``: on when what it needs is there (a bool type's
    values keep working, so a file written for the plain switch stays valid)."""

    name: str = "auto|bool"

    def parse(self, value: Any) -> bool | str:
        if isinstance(value, str) and value.strip().lower() == "auto":
            return "auto"
        try:
            return Bool().parse(value)
        except ValueError:
            raise ValueError("expected auto, or true/false, yes/no, on/off, 1/0") from None

    def format(self, value: bool | str) -> str:
        return value if isinstance(value, str) else Bool().format(value)

    def describe(self) -> str:
        return "auto or bool"


@dataclass(frozen=True)
class Int(ValueType):
    name: str = "int"
    minimum: int = 0
    maximum: int = 2**31 - 1

    def parse(self, value: Any) -> int:
        if isinstance(value, bool):
            raise ValueError("expected a whole number")
        if isinstance(value, str):
            if not re.fullmatch(r"\s*-?\d+\s*", value):
                raise ValueError("expected a whole number")
            value = int(value)
        if not isinstance(value, int):
            raise ValueError("expected a whole number")
        if not self.minimum <= value <= self.maximum:
            raise ValueError(f"must be between {self.minimum} and {self.maximum}")
        return value

    def describe(self) -> str:
        return f"int {self.minimum}–{self.maximum}"


@dataclass(frozen=True)
class Enum(ValueType):
    name: str = "enum"
    choices: tuple[str, ...] = ()

    def parse(self, value: Any) -> str:
        if isinstance(value, str) and value.strip().lower() in self.choices:
            return value.strip().lower()
        raise ValueError(f"expected one of: {', '.join(self.choices)}")

    def describe(self) -> str:
        return "enum " + "|".join(self.choices)


@dataclass(frozen=True)
class Size(ValueType):
    name: str = "size"
    minimum: int = 1

    def parse(self, value: Any) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif isinstance(value, str) and (m := _SIZE_RE.match(value)) and m[2].lower() in _SIZE_UNITS:
            number = int(m[1]) * _SIZE_UNITS[m[2].lower()]
        else:
            raise ValueError("expected bytes or a size such as 512KB, 100MB, 1GiB")
        if number < self.minimum:
            raise ValueError(f"must be at least {self.minimum} bytes")
        return number

    def format(self, value: int) -> str:
        for unit, factor in (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
            if value % factor == 0:
                return f"{value // factor}{unit}"
        return str(value)

    to_toml = format


@dataclass(frozen=True)
class Duration(ValueType):
    name: str = "duration"

    def parse(self, value: Any) -> float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            seconds = float(value)
        elif isinstance(value, str) and (m := _DURATION_RE.match(value)):
            seconds = float(m[1]) * _DURATION_UNITS[m[2]]
        else:
            raise ValueError("expected seconds or a duration such as 30s, 5m, 3d")
        if seconds <= 0:
            raise ValueError("must be more than 0 seconds")
        return seconds

    def format(self, value: float) -> str:
        if value % 86400 == 0 and value >= 86400:
            return f"{int(value // 86400)}d"
        if value % 60 == 0 and value >= 60:
            return f"{int(value // 60)}m"
        return f"{int(value)}s" if value == int(value) else f"{value}s"

    to_toml = format


@dataclass(frozen=True)
class Ports(ValueType):
    name: str = "ports"

    def parse(self, value: Any) -> list[int]:
        if isinstance(value, int) and not isinstance(value, bool):
            value = [value]
        ports: set[int] = set()
        for item in _split_list(value):
            if not item.isdigit() or not 1 <= int(item) <= 65535:
                raise ValueError(f"{item!r} is not a TCP port (1–65535)")
            ports.add(int(item))
        return sorted(ports)

    def format(self, value: list[int]) -> str:
        return ", ".join(str(p) for p in value)


@dataclass(frozen=True)
class StrList(ValueType):
    name: str = "list"

    def parse(self, value: Any) -> list[str]:
        return [self.check_item(item) for item in _split_list(value)]

    def check_item(self, item: str) -> str:
        return item

    def format(self, value: list[str]) -> str:
        return ", ".join(value)


def _absolute(item: str, base: str) -> str:
    """``~`` expanded and a relative path made absolute against ``base`` (empty stays empty)."""
    import os.path

    if not item:
        return item
    return os.path.normpath(os.path.join(base, os.path.expanduser(item)))


@dataclass(frozen=True)
class PathValue(ValueType):
    """A file or folder. Stored absolute: the engine runs from ``/``, the CLI from anywhere."""

    name: str = "path"

    def absolute(self, value: str, base: str) -> str:
        return _absolute(value, base)


@dataclass(frozen=True)
class PathList(StrList):
    name: str = "list of paths"

    def absolute(self, value: list[str], base: str) -> list[str]:
        return [_absolute(item, base) for item in value]


@dataclass(frozen=True)
class HostPort(ValueType):
    name: str = "host:port"

    def parse(self, value: Any) -> str:
        if not isinstance(value, str):
            raise ValueError("expected HOST:PORT")
        parse_hostport(value)
        return value.strip()


@dataclass(frozen=True)
class Routes(StrList):
    name: str = "list of LISTEN=UPSTREAM"

    def check_item(self, item: str) -> str:
        listen, sep, upstream = item.partition("=")
        if not sep:
            raise ValueError(f"route {item!r} is not LISTEN=UPSTREAM, e.g. 127.0.0.1:1993=imap.example.com:993")
        parse_hostport(listen)
        parse_hostport(upstream)
        return item


@dataclass(frozen=True)
class AddressList(StrList):
    name: str = "list of IP, CIDR or A-B range"

    def check_item(self, item: str) -> str:
        parse_address_range(item)
        return item


def parse_hostport(text: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` -> (host, port)."""
    text = text.strip()
    m = re.fullmatch(r"\[([0-9a-fA-F:.]+)\]:(\d+)|([^\s:\[\]]+):(\d+)", text)
    if not m:
        raise ValueError(f"{text!r} is not HOST:PORT (IPv6 as [::1]:PORT)")
    host = m[1] or m[3]
    port = int(m[2] or m[4])
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} in {text!r} is not 1–65535")
    return host, port


def parse_address_range(text: str) -> tuple[Any, Any]:
    """An IP, a CIDR network or an ``A-B`` range -> (first, last) addresses."""
    import ipaddress  # only when such a list is set: keeps start-up lean

    try:
        if "-" in text:
            first, last = (ipaddress.ip_address(p.strip()) for p in text.split("-", 1))
            if first.version != last.version or first > last:
                raise ValueError
            return first, last
        network = ipaddress.ip_network(text.strip(), strict=False)
        return network[0], network[-1]
    except ValueError:
        raise ValueError(f"{text!r} is not an IP address, a CIDR network or an A-B range") from None
