#!/usr/bin/env bash
# Host side of the role's real reboot (run by vm/run --host-command): the
# role provision.gpu.node against the VM over SSH (QEMU's port forward),
# installing provision from its .deb. First the stand-in 570 (a live load,
# no reboot), then the upgrade to 580 with reload = "never" and
# provision_allow_reboot: the guest reboots for real, the role finishes the
# generation and checks the driver.
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
export PATH="$here/target/ansible-venv/bin:$PATH"
export ANSIBLE_COLLECTIONS_PATH="$here/target/ansible-collections" ANSIBLE_HOST_KEY_CHECKING=False ANSIBLE_NOCOLOR=1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat > "$work/inventory.ini" <<INV
[gpu_nodes]
vm ansible_host=127.0.0.1 ansible_port=$VMRUN_SSH_PORT

[gpu_nodes:vars]
ansible_user=root
ansible_ssh_private_key_file=$VMRUN_SSH_KEY
ansible_ssh_common_args='-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null'
ansible_python_interpreter=/usr/bin/python3
INV
vars() { # BRANCH UPGRADE-JSON
  python3 - "$1" "$2" "$here" <<'PY'
import json, sys
branch, upgrade, here = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
plan = {
    "driver": {"branch": branch, "flavor": "open", "source": "cuda-repo"},
    "repositories": {
        "cuda": "http://10.0.2.2:18580/nvidia-vm/",
        "cuda_key": "http://10.0.2.2:18580/nvidia-vm/provision-test.pub",
        "cuda_fingerprint": "116874DA15081E61CE853BB41644A1991A2C6748",
    },
}
if upgrade:
    plan["upgrade"] = upgrade
print(json.dumps({
    "provision_package": here + "/target/package/provision_0.1.0_amd64.deb",
    "provision_plan": plan,
    "provision_allow_reboot": True,
}))
PY
}
fail() { echo "FAIL: $*" >&2; exit 1; }
guest() { ssh -q -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -i "$VMRUN_SSH_KEY" -p "$VMRUN_SSH_PORT" root@127.0.0.1 "$@"; }

vars 570 '{}' > "$work/570.json"
ansible-playbook -i "$work/inventory.ini" -e "@$work/570.json" "$here/ansible/playbooks/fresh-install.yml" | tee "$work/570.log"
grep -q "vm *: .*failed=0" "$work/570.log" || fail "the fresh install failed"
grep -q "Reboot for the new driver" "$work/570.log" && grep -A1 "Reboot for the new driver" "$work/570.log" | grep -q "changed:" && fail "a fresh install with a live load rebooted"
[ "$(guest cat /sys/module/nvidia/version)" = 570.124.06 ] || fail "570 is not loaded"
boot_before=$(guest cat /proc/sys/kernel/random/boot_id)

vars 580 '{"holders": "terminate", "reload": "never"}' > "$work/580.json"
ansible-playbook -i "$work/inventory.ini" -e "@$work/580.json" "$here/ansible/playbooks/rolling-upgrade.yml" | tee "$work/580.log"
grep -q "vm *: .*failed=0" "$work/580.log" || fail "the upgrade failed"
grep -A1 "TASK \[provision.gpu.node : Reboot for the new driver\]" "$work/580.log" | grep -q "changed: \[vm\]" || fail "the role did not reboot"
grep -A1 "TASK \[provision.gpu.node : Check the driver after the reboot\]" "$work/580.log" | grep -q "ok: \[vm\]" || fail "the checks after the reboot did not run"
boot_after=$(guest cat /proc/sys/kernel/random/boot_id)
[ "$boot_before" != "$boot_after" ] || fail "the guest did not reboot"
[ "$(guest cat /sys/module/nvidia/version)" = 580.105.08 ] || fail "580 is not loaded after the reboot"
guest provision history --json > "$work/history.json"
python3 -c "import json,sys; g=json.load(open(sys.argv[1]))['generations'][-1]; assert g['state']=='applied', g" "$work/history.json" || fail "the generation is not applied"
guest systemctl is-active nvidia-persistenced | grep -qx active || fail "nvidia-persistenced is not running"
echo "ansible-reboot: all checks passed (boot $boot_before -> $boot_after)"
