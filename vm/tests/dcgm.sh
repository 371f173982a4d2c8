# DCGM on a booted system: [dcgm] enable installs the host engine for the
# driver's CUDA major and starts nvidia-dcgm, which holds the GPU; the
# upgrade window stops it before the swap and starts it after, and the
# rollback brings the earlier set back with the service running. Runs after
# live-upgrade (570 installed, nothing holding the GPU but persistenced).
. /vm/tests/lib.sh

dcgm570=$(plan_with dcgm-570 570 '[dcgm]' 'enable = true')
run_json dcgm570 apply "$dcgm570"
expect_eq "dcgm on 570 exit" 0 "$(cat $OUT/dcgm570.exit)"
expect_eq "DCGM for CUDA 12 (570's major)" 1:4.4.1-1 "$(installed_version datacenter-gpu-manager-4-cuda12)"
expect_eq "datacenter-gpu-manager-4-cuda12 hold" held "$(held datacenter-gpu-manager-4-cuda12)"
expect_eq "nvidia-dcgm enabled" enabled "$(systemctl is-enabled nvidia-dcgm 2>/dev/null || true)"
expect_eq "nvidia-dcgm" active "$(active nvidia-dcgm)"
engine=$(systemctl show -p MainPID --value nvidia-dcgm)
# The engine opens the GPU once it has started (a moment after systemd
# calls it active).
for _ in $(seq 1 20); do ls -l /proc/$engine/fd 2>/dev/null | grep -q /dev/nvidiactl && break; sleep 0.5; done
ls -l /proc/$engine/fd | grep -q /dev/nvidiactl || fail "nv-hostengine ($engine) does not hold the GPU"
run_json again apply "$dcgm570"
expect_eq "re-apply with dcgm changed" false "$(json $OUT/again.json 'd["changed"]')"

# The upgrade: nvidia-dcgm holds the GPU, so it is in the window.
dcgm580=$(plan_with dcgm-580 580 '[dcgm]' 'enable = true' 'diag = 1' '[upgrade]' 'holders = "stop-services"')
run_json plan580 plan "$dcgm580"
expect_eq "plan: the window stops" '["nvidia-persistenced.service", "nvidia-dcgm.service"]' "$(json $OUT/plan580.json 'd["window"]["stop"]')"
expect_eq "plan: nothing blocks" '[]' "$(json $OUT/plan580.json '[h["pid"] for h in d["window"]["holders"] if h["action"]=="block"]')"
run_json up580 apply "$dcgm580"
expect_eq "upgrade with dcgm exit" 0 "$(cat $OUT/up580.exit)"
expect_eq "module after the upgrade" 580.105.08 "$(loaded_version)"
expect_eq "DCGM for CUDA 13 (580's major)" 1:4.4.1-1 "$(installed_version datacenter-gpu-manager-4-cuda13)"
expect_eq "datacenter-gpu-manager-4-cuda13 hold" held "$(held datacenter-gpu-manager-4-cuda13)"
expect_eq "nvidia-dcgm after the upgrade" active "$(active nvidia-dcgm)"
[ "$(systemctl show -p MainPID --value nvidia-dcgm)" != "$engine" ] || fail "nvidia-dcgm was not stopped and started"
expect_eq "the window stopped nvidia-dcgm" true "$(json $OUT/up580.json '"nvidia-dcgm.service" in d["window"]["stop"]')"
expect_eq "verify after the upgrade" true "$(json $OUT/up580.json 'd["verify"]["passed"]')"
expect_eq "verify ran dcgmi diag -r 1" true "$(json $OUT/up580.json '[c["passed"] for c in d["verify"]["checks"] if c["name"]=="dcgm-diag"][0]')"

# Rollback: 570 again, its DCGM package set, the service running.
run_json back rollback
expect_eq "rollback exit" 0 "$(cat $OUT/back.exit)"
expect_eq "module after the rollback" 570.124.06 "$(loaded_version)"
expect_eq "cuda13 DCGM after the rollback" absent "$(installed_version datacenter-gpu-manager-4-cuda13)"
expect_eq "nvidia-dcgm after the rollback" active "$(active nvidia-dcgm)"
# DCGM's diagnostic fails after the swap (a GPU fault, as dcgmi would
# report it): verify fails and the generation is undone, 570 stays.
mkdir -p /etc/dcgm-stand-in
echo "GPU 0 reports an uncorrectable ECC error" > /etc/dcgm-stand-in/fail
run_json faulty apply "$dcgm580"
rm -r /etc/dcgm-stand-in
expect_eq "apply whose dcgm diag fails exit" 1 "$(cat $OUT/faulty.exit)"
json $OUT/faulty.json '[c["evidence"] for c in d["verify"]["checks"] if c["name"]=="dcgm-diag"][0]' \
  | grep -q "failed: software (Deployment): GPU 0 reports an uncorrectable ECC error" \
  || fail "the diag check does not name the failed test: $(json $OUT/faulty.json 'd["verify"]')"
expect_eq "module after the failed diag" 570.124.06 "$(loaded_version)"
expect_eq "nvidia-dcgm after the failed diag" active "$(active nvidia-dcgm)"
echo "dcgm: all checks passed"
