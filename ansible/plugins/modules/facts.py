#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: provision developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: facts
short_description: What an NVIDIA GPU node has, as Ansible facts
version_added: "0.1.0"
description:
  - Runs C(provision detect --json) on the target and returns it as C(ansible_facts.provision) - the GPUs,
    the three versions (kernel module, user-mode driver and its CUDA version, toolkits), the processes
    holding the GPU, nouveau, the systemd services and the GPU packages.
  - Reads files only; never starts nvidia-smi and changes nothing.
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - ansible.builtin.action_common_attributes.facts
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  facts:
    support: full
  platform:
    platforms: posix
options:
  root:
    description:
      - Treat this directory as the host's C(/) (C(provision --root)).
    type: path
  binary:
    description:
      - The provision binary on the target.
    type: path
    default: /usr/bin/provision
notes:
  - The schema of the facts is provision's docs/facts.md.
seealso:
  - module: provision.gpu.provision
author:
  - provision developers (@provision)
"""

EXAMPLES = r"""
- name: Read the GPU node
  provision.gpu.facts:

- name: Only where there is a GPU
  ansible.builtin.debug:
    msg: "{{ ansible_facts.provision.gpus | map(attribute='name') | list }}"
  when: ansible_facts.provision.gpus | length > 0
"""

RETURN = r"""
ansible_facts:
  description: The facts.
  returned: always
  type: complex
  contains:
    provision:
      description: C(provision detect --json) - os, gpus, nouveau, kernel_driver, user_driver, toolkits, environment, holders, services, packages.
      returned: always
      type: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.provision.gpu.plugins.module_utils import provision as runner


def main():
    module = AnsibleModule(
        argument_spec=dict(
            root=dict(type="path"),
            binary=dict(type="path", default="/usr/bin/provision"),
        ),
        supports_check_mode=True,
    )
    rc, document = runner.run(module, ["detect"])
    if rc != 0:
        module.fail_json(msg=document.get("msg") or "provision detect failed (exit %s)" % rc, rc=rc)
    module.exit_json(changed=False, ansible_facts={"provision": document})


if __name__ == "__main__":
    main()
