# -*- coding: utf-8 -*-
# Copyright: provision developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
name: fleet_report
short_description: One table of a GPU fleet from the nodes' provision facts, outliers marked
version_added: "0.1.0"
description:
  - Takes the names of the nodes and C(hostvars), where C(provision.gpu.facts) with C(health=true) left
    C(ansible_facts.provision) on each node.
  - One row per node - GPUs, the loaded kernel module and the user-space driver, toolkits, the newest
    generation and its state, verify, doctor's findings.
  - The fleet's driver is the one most nodes run (the loaded module, else the installed user space); a node
    with another, or none, is an outlier. A node without facts (unreachable, failed) is listed as such.
positional: _input
options:
  _input:
    description: The nodes' names (C(ansible_play_hosts_all), C(groups['gpu_nodes'])).
    type: list
    elements: str
    required: true
  hostvars:
    description: C(hostvars).
    type: dict
    required: true
author:
  - provision developers (@provision)
"""

EXAMPLES = r"""
- name: Print the fleet
  ansible.builtin.debug:
    msg: "{{ (ansible_play_hosts_all | provision.gpu.fleet_report(hostvars)).lines }}"
  run_once: true
"""

RETURN = r"""
_value:
  description: The report.
  type: dict
  contains:
    lines:
      description: The table, a header and one line per node; outliers end with C(<- outlier).
      type: list
      elements: str
    nodes:
      description: One dictionary per node - C(node), C(gpus), C(module), C(user_space), C(toolkits),
        C(generation), C(verify), C(errors), C(warnings), C(driver), C(outlier).
      type: list
      elements: dict
    driver:
      description: The driver most nodes run (null when none runs one).
      type: str
    outliers:
      description: The nodes whose driver is not the fleet's.
      type: list
      elements: str
"""

from collections import Counter

from ansible.errors import AnsibleFilterError

COLUMNS = ("node", "gpus", "module", "user_space", "toolkits", "generation", "verify", "findings")


def gpus_of(facts):
    names = Counter(g.get("name") or g.get("pci_id") for g in facts.get("gpus", []) if g.get("kind") == "gpu")
    return ", ".join("%dx %s" % (count, name) for name, count in sorted(names.items())) or "none"


def toolkits_of(facts):
    installed = (facts.get("toolkits") or {}).get("installed") or []
    return ",".join(t["short"] for t in installed if t.get("short") and not t.get("compat_only")) or "-"


def verify_of(facts):
    verify = facts.get("verify")
    if verify is None:
        return "-"
    if verify.get("passed"):
        return "ok"
    failed = [c["name"] for c in verify.get("checks", []) if c.get("passed") is False]
    return "FAIL " + ",".join(failed)


def row(node, facts):
    kernel = (facts.get("kernel_driver") or {}).get("version")
    user = (facts.get("user_driver") or {}).get("version")
    generation = facts.get("generation")
    findings = facts.get("findings") or []
    errors = sum(1 for f in findings if f.get("severity") == "error")
    warnings = sum(1 for f in findings if f.get("severity") == "warning")
    return {
        "node": node,
        "gpus": gpus_of(facts),
        "module": kernel or "-",
        "user_space": user or "-",
        "toolkits": toolkits_of(facts),
        "generation": "%s %s" % (generation["id"], generation["state"]) if generation else "-",
        "verify": verify_of(facts),
        "errors": errors,
        "warnings": warnings,
        "findings": "%d errors, %d warnings" % (errors, warnings),
        "driver": kernel or user,
    }


def fleet_report(nodes, hostvars):
    if not isinstance(nodes, (list, tuple)):
        raise AnsibleFilterError("fleet_report: give the nodes' names as a list")
    rows = []
    for node in nodes:
        facts = ((hostvars.get(node) or {}).get("ansible_facts") or {}).get("provision")
        if facts is None:
            rows.append(dict({c: "-" for c in COLUMNS}, node=node, verify="no facts", driver=None, errors=0, warnings=0))
        else:
            rows.append(row(node, facts))
    drivers = Counter(r["driver"] for r in rows if r["driver"])
    # The most common driver; a tie goes to the newest.
    driver = max(drivers, key=lambda d: (drivers[d], [int(p) for p in d.split(".") if p.isdigit()])) if drivers else None
    for r in rows:
        r["outlier"] = r["driver"] != driver
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in COLUMNS} if rows else {c: len(c) for c in COLUMNS}

    def line(values, mark=""):
        return ("  ".join(str(values[c]).ljust(widths[c]) for c in COLUMNS) + mark).rstrip()

    lines = [line({c: c for c in COLUMNS})]
    lines += [line(r, "  <- outlier" if r["outlier"] else "") for r in rows]
    lines.append("fleet driver: %s; %d of %d nodes run it" % (driver or "none", drivers.get(driver, 0), len(rows)))
    return {
        "lines": lines,
        "nodes": rows,
        "driver": driver,
        "outliers": [r["node"] for r in rows if r["outlier"]],
    }


class FilterModule(object):
    def filters(self):
        return {"fleet_report": fleet_report}
