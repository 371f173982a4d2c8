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
  - Reads files only; never starts nvidia-smi and changes nothing (O(health) runs verify, which does).
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
  health:
    description:
      - Also run C(provision verify), C(provision doctor) and C(provision history) (read-only) and add
        C(verify), C(findings) and C(generation) to the facts, for a fleet report
        (C(provision.gpu.fleet_report)).
      - C(verify) runs nvidia-smi where a driver is loaded; the compute check only with O(compute).
    type: bool
    default: false
  compute:
    description:
      - With O(health), verify's compute check too (CUDA work on every GPU, about half a second).
    type: bool
    default: false
  packages:
    description:
      - Also list every installed package (C(installed), C(provision detect --packages)) - the document
        C(provision bundle --host) makes an offline bundle for (playbook C(host-documents.yml)).
    type: bool
    default: false
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
      description:
        - C(provision detect --json) - os, gpus, nouveau, kernel_driver, user_driver, toolkits, environment, holders,
          services, packages.
        - With O(health) also C(verify) (C(provision verify --json)), C(findings) (doctor's findings) and
          C(generation) (the newest generation's C(id) and C(state), null before the first apply).
        - With O(packages) also C(installed), every installed package.
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
            health=dict(type="bool", default=False),
            compute=dict(type="bool", default=False),
            packages=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    rc, document = runner.run(module, ["detect"] + (["--packages"] if module.params["packages"] else []))
    if rc != 0:
        module.fail_json(msg=document.get("msg") or "provision detect failed (exit %s)" % rc, rc=rc)
    if module.params["health"]:
        document.update(health(module))
    module.exit_json(changed=False, ansible_facts={"provision": document})


def health(module):
    """verify, doctor's findings and the newest generation; each exits 1 for
    a host that is not healthy, which is a fact, not a failure."""
    read = {}
    for name, args in (
        ("verify", ["verify"] + ([] if module.params["compute"] else ["--no-compute"])),
        ("doctor", ["doctor"]),
        ("history", ["history"]),
    ):
        rc, document = runner.run(module, args)
        if rc not in (0, runner.EXIT_FAILURE) or document.get("failed"):
            module.fail_json(msg=document.get("msg") or "provision %s failed (exit %s)" % (name, rc), rc=rc)
        read[name] = document
    generations = read["history"].get("generations") or []
    newest = generations[-1] if generations else None
    return {
        "verify": read["verify"],
        "findings": read["doctor"].get("findings", []),
        "generation": {"id": newest["id"], "state": newest["state"]} if newest else None,
    }


if __name__ == "__main__":
    main()
