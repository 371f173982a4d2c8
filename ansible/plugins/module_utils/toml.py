# -*- coding: utf-8 -*-
# Copyright: provision developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A TOML writer for provision plans: tables of scalars, arrays of scalars
and nested tables, which is every shape a plan has. Python's tomllib reads
TOML only, and a target may not carry a TOML library at all."""

from __future__ import annotations

import math

# Plan values that are strings although YAML reads them as numbers
# (branch: 580, version: 12.8).
STRING_KEYS = {("driver", "branch"), ("driver", "version"), ("toolkit", "version"), ("toolkit", "for_driver")}


class TomlError(ValueError):
    pass


def _string(text):
    out = ['"']
    for char in text:
        code = ord(char)
        if char == '"':
            out.append('\\"')
        elif char == "\\":
            out.append("\\\\")
        elif char == "\n":
            out.append("\\n")
        elif char == "\t":
            out.append("\\t")
        elif code < 0x20 or code == 0x7F:
            out.append("\\u%04x" % code)
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def _key(key):
    if key and all(c.isalnum() or c in "-_" for c in key) and key.isascii():
        return key
    return _string(key)


def _value(value, where):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise TomlError("%s: %r has no TOML form" % (where, value))
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(item, where) for item in value) + "]"
    raise TomlError("%s: a value of type %s has no place in a plan" % (where, type(value).__name__))


def _table(path, table, lines):
    scalars = [(k, v) for k, v in table.items() if not isinstance(v, dict)]
    tables = [(k, v) for k, v in table.items() if isinstance(v, dict)]
    if path and (scalars or not tables):
        lines.append("[%s]" % ".".join(_key(p) for p in path))
    for key, value in scalars:
        if value is None:
            continue
        if tuple(path + [key]) in STRING_KEYS and isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        lines.append("%s = %s" % (_key(str(key)), _value(value, ".".join(path + [str(key)]))))
    if path and (scalars or not tables):
        lines.append("")
    for key, value in tables:
        _table(path + [str(key)], value, lines)


def dumps(plan):
    """The TOML text of a plan given as a dictionary of its sections."""
    if not isinstance(plan, dict):
        raise TomlError("a plan is a dictionary of sections, not %s" % type(plan).__name__)
    lines = []
    _table([], plan, lines)
    return "\n".join(lines).rstrip("\n") + "\n"
