# -*- coding: utf-8 -*-
# Copyright: provision developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Running provision on the target and reading its one JSON document."""

from __future__ import annotations

import json
import os

# provision's exit codes (provision --help).
EXIT_FAILURE = 1
EXIT_INCOMPLETE = 3


def binary_or_fail(module):
    binary = module.params["binary"]
    if not os.path.isfile(binary) or not os.access(binary, os.X_OK):
        module.fail_json(msg="%s is not an executable: install provision first (the provision.gpu.node role does)" % binary)
    return binary


def run(module, args):
    """Runs provision with ARGS (and --root, --json); returns (rc, document)."""
    command = [binary_or_fail(module)] + list(args)
    if module.params.get("root"):
        command += ["--root", module.params["root"]]
    command.append("--json")
    rc, stdout, stderr = module.run_command(command)
    try:
        document = json.loads(stdout)
    except ValueError:
        module.fail_json(
            msg="provision printed no JSON document (exit %s): %s" % (rc, (stderr or stdout).strip()[-2000:]),
            rc=rc,
            cmd=command,
        )
    return rc, document
