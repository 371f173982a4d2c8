# -*- coding: utf-8 -*-
# Copyright: provision developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
name: to_toml
short_description: A provision plan, given as a dictionary of its sections, as TOML text
version_added: "0.1.0"
description:
  - Writes the tables, scalars and arrays a provision plan has as TOML.
  - Numbers given for C(driver.branch), C(driver.version) and C(toolkit.version) are written as strings.
positional: _input
options:
  _input:
    description: The plan, a dictionary of its sections.
    type: dict
    required: true
author:
  - provision developers (@provision)
"""

EXAMPLES = r"""
- name: Write the plan
  ansible.builtin.copy:
    dest: /etc/provision/plan.toml
    content: "{{ {'driver': {'branch': '580', 'flavor': 'open'}} | provision.gpu.to_toml }}"
    mode: "0644"
"""

RETURN = r"""
_value:
  description: The plan's TOML text.
  type: str
"""

from ansible.errors import AnsibleFilterError
from ansible_collections.provision.gpu.plugins.module_utils.toml import TomlError, dumps


def to_toml(plan):
    try:
        return dumps(plan)
    except TomlError as error:
        raise AnsibleFilterError("to_toml: %s" % error)


class FilterModule(object):
    def filters(self):
        return {"to_toml": to_toml}
