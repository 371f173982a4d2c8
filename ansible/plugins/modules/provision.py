#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: provision developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: provision
short_description: Make an NVIDIA GPU node match a provision plan, or roll it back
version_added: "0.1.0"
description:
  - Runs C(provision apply) on the target with a plan (a file, TOML text, or a dictionary of its sections)
    and returns provision's report - what changed, whether a reboot is needed, the maintenance window of a
    driver swap and the verify checks.
  - In check mode it runs C(provision plan), which changes nothing; with C(--diff) the unified diffs of
    files and the packages' versions before and after are shown.
  - O(state=rolled_back) runs C(provision rollback), which undoes the newest applied generation.
  - A failed apply is a failed task with provision's message and the path of its log. provision has then
    undone the generation; when it could not (exit 3), the message says that the host needs O(state=rolled_back).
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  platform:
    platforms: posix
options:
  plan:
    description:
      - Path of the plan (TOML) on the target.
      - Exactly one of O(plan), O(plan_content) and O(plan_vars) is needed with O(state=applied).
    type: path
  plan_content:
    description:
      - The plan as TOML text.
    type: str
  plan_vars:
    description:
      - 'The plan as a dictionary of its sections, for example
        C({driver: {branch: "580", flavor: open, source: cuda-repo}, toolkit: {version: "13.0"}}).'
      - Numbers given for C(driver.branch), C(driver.version), C(toolkit.version) and C(toolkit.for_driver) are written as strings.
    type: dict
  state:
    description:
      - V(applied) makes the host match the plan; V(rolled_back) undoes the newest applied generation.
    type: str
    choices: [applied, rolled_back]
    default: applied
  root:
    description:
      - Treat this directory as the host's C(/) (C(provision --root)), for an image being built.
    type: path
  binary:
    description:
      - The provision binary on the target.
    type: path
    default: /usr/bin/provision
  lock_timeout:
    description:
      - Seconds to wait for another provision run on the host to finish (C(--lock-timeout)).
    type: int
    default: 0
  bundle:
    description:
      - An offline bundle on the target (C(provision bundle)) to serve the packages from (C(--bundle)).
    type: path
  bundle_sha256:
    description:
      - The bundle manifest's sha256 as C(provision bundle) printed it (C(--bundle-sha256)); another is refused.
    type: str
notes:
  - The plan given as O(plan_content) or O(plan_vars) is written to a temporary file on the target;
    provision keeps its own copy while a generation waits for a reboot.
  - A driver swap that must wait for a reboot returns RV(reboot_required=true); after the reboot the same
    task finishes the generation (the role provision.gpu.node does both).
seealso:
  - module: provision.gpu.facts
author:
  - provision developers (@provision)
"""

EXAMPLES = r"""
- name: Driver 580 (open) and CUDA 13.0 from NVIDIA's repository
  provision.gpu.provision:
    plan_vars:
      driver:
        branch: "580"
        flavor: open
        source: cuda-repo
      toolkit:
        version: "13.0"
      upgrade:
        holders: stop-services
  register: gpu

- name: Reboot when the driver swap waits for it
  ansible.builtin.reboot:
  when: gpu.reboot_required

- name: The same plan from a file on the target
  provision.gpu.provision:
    plan: /etc/provision/plan.toml

- name: Undo the last change
  provision.gpu.provision:
    state: rolled_back
"""

RETURN = r"""
msg:
  description: What provision did or would do, or why it could not.
  returned: always
  type: str
  sample: applied 4 change(s) as generation 2
reboot_required:
  description: The change takes effect only after a reboot (plan and apply agree on it).
  returned: always
  type: bool
steps:
  description: Every step with its action (create, update, delete, none), summary, diff and commands.
  returned: always
  type: list
  elements: dict
window:
  description:
    - The maintenance window when the driver is swapped under a loaded module (or loaded after a fresh install),
      null otherwise - module versions before and after, whether the swap is live, why it waits for a reboot,
      each holder of the GPU with what the policy does to it, the services stopped and started, the modules
      unloaded and loaded, and after an apply each phase's seconds and unavailable_seconds.
  returned: always
  type: dict
verify:
  description: The checks run after the driver changed (module and user space agree, GPUs bound, nvidia-smi, persistence).
  returned: when the apply changed the driver
  type: dict
generation:
  description: The journal generation written, or rolled back.
  returned: when one was
  type: int
log:
  description: The full output of every command provision ran, on the target.
  returned: when a generation was written
  type: str
diff:
  description: The changes in Ansible's diff form.
  returned: in diff mode
  type: dict
"""

import os
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.provision.gpu.plugins.module_utils import provision as runner
from ansible_collections.provision.gpu.plugins.module_utils.toml import TomlError, dumps

RESULT_KEYS = ("msg", "changed", "reboot_required", "steps", "window", "verify", "generation", "log", "commands")


def plan_file(module):
    """The plan's path on the target, writing plan_content or plan_vars to a temporary file."""
    params = module.params
    if params["plan"]:
        if not os.path.isfile(params["plan"]):
            module.fail_json(msg="plan %s: no such file on the target" % params["plan"])
        return params["plan"], None
    if params["plan_vars"] is not None:
        try:
            text = dumps(params["plan_vars"])
        except TomlError as error:
            module.fail_json(msg="plan_vars: %s" % error)
    else:
        text = params["plan_content"]
    handle, path = tempfile.mkstemp(prefix="provision-plan-", suffix=".toml", dir=module.tmpdir)
    with os.fdopen(handle, "w") as file:
        file.write(text)
    return path, text


def result_of(module, document):
    result = dict((key, document.get(key)) for key in RESULT_KEYS if key in document)
    result["changed"] = bool(document.get("changed"))
    result["reboot_required"] = bool(document.get("reboot_required"))
    for warning in document.get("warnings") or []:
        module.warn(warning)
    if module._diff and document.get("diff"):
        result["diff"] = {"prepared": document["diff"].get("prepared", "")}
    return result


def rollback(module):
    if module.check_mode:
        rc, history = runner.run(module, ["history"])
        if rc != 0:
            module.fail_json(msg=history.get("msg", "provision history failed"), rc=rc)
        undoable = [g for g in history.get("generations", [])
                    if g.get("state") in ("applied", "applying", "awaiting-reboot", "failed-incomplete", "rollback-incomplete")]
        if undoable:
            module.exit_json(changed=True, reboot_required=False, msg="would roll back generation %s" % undoable[-1]["id"])
        module.exit_json(changed=False, reboot_required=False, msg="nothing to roll back: no applied generation")
    args = ["rollback"]
    if module.params["lock_timeout"]:
        args += ["--lock-timeout", str(module.params["lock_timeout"])]
    rc, document = runner.run(module, args)
    finish(module, rc, document)


def finish(module, rc, document):
    result = result_of(module, document)
    if rc == 0:
        module.exit_json(**result)
    msg = document.get("msg") or "provision failed (exit %s)" % rc
    if document.get("log"):
        msg += " (log: %s)" % document["log"]
    if rc == runner.EXIT_INCOMPLETE:
        msg += "; the automatic undo could not restore everything: once the cause is fixed, the host needs state=rolled_back"
    result.pop("msg", None)
    module.fail_json(msg=msg, rc=rc, **result)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            plan=dict(type="path"),
            plan_content=dict(type="str"),
            plan_vars=dict(type="dict"),
            state=dict(type="str", default="applied", choices=["applied", "rolled_back"]),
            root=dict(type="path"),
            binary=dict(type="path", default="/usr/bin/provision"),
            lock_timeout=dict(type="int", default=0),
            bundle=dict(type="path"),
            bundle_sha256=dict(type="str"),
        ),
        mutually_exclusive=[("plan", "plan_content", "plan_vars")],
        required_by={"bundle_sha256": "bundle"},
        required_if=[("state", "applied", ("plan", "plan_content", "plan_vars"), True)],
        supports_check_mode=True,
    )
    if module.params["state"] == "rolled_back":
        rollback(module)
        return
    path, _text = plan_file(module)
    bundle = []
    if module.params["bundle"]:
        bundle = ["--bundle", module.params["bundle"]]
        if module.params["bundle_sha256"]:
            bundle += ["--bundle-sha256", module.params["bundle_sha256"]]
    if module.check_mode:
        rc, document = runner.run(module, ["plan", path] + bundle)
    else:
        args = ["apply", path] + bundle
        if module.params["lock_timeout"]:
            args += ["--lock-timeout", str(module.params["lock_timeout"])]
        rc, document = runner.run(module, args)
    finish(module, rc, document)


if __name__ == "__main__":
    main()
