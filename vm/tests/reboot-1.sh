# reload = "never", part 1 (vm/run reboots the guest after each part): the
# upgrade to 580 waits for a reboot; nothing is unloaded, so the work on
# the GPU runs on until the reboot, even under holders = "terminate". The
# node is drained through Slurm and stays drained across the reboot: a job
# submitted meanwhile waits for the new driver.
. /vm/tests/lib.sh

install_570
wait_for "slurmctld and slurmd up, the node idle" 120 node_idle
start_holder
never=$(plan_with never 580 '[upgrade]' 'holders = "terminate"' 'reload = "never"' 'drain = "slurm"')
run_json plan plan "$never"
expect_eq "plan predicts the reboot" true "$(json $OUT/plan.json 'd["reboot_required"]')"
expect_eq "plan: the swap is not live" false "$(json $OUT/plan.json 'd["window"]["live"]')"
expect_eq "plan: the holder runs until the reboot" runs-until-reboot "$(json $OUT/plan.json '[h["action"] for h in d["window"]["holders"] if h["pid"]=='$HOLDER'][0]')"
expect_eq "plan: nothing stops" '[]' "$(json $OUT/plan.json 'd["window"]["stop"]')"
run_json apply apply "$never"
expect_eq "apply exit" 0 "$(cat $OUT/apply.exit)"
expect_eq "apply's reboot_required equals plan's" true "$(json $OUT/apply.json 'd["reboot_required"]')"
expect_eq "module until the reboot" 570.124.06 "$(loaded_version)"
expect_eq "nvidia-driver-cuda" 580.105.08-1 "$(installed_version nvidia-driver-cuda)"
[ -d /proc/$HOLDER ] || fail "the deferred swap ended the holder $HOLDER"
expect_eq "the resume unit" enabled "$(systemctl is-enabled provision-resume.service)"
draining || fail "the node is not drained until the reboot: $(node_state)"
scontrol show node provision-vm --oneliner | grep -q "Reason=provision: driver 570.124.06 -> 580" \
  || fail "the drain reason does not name provision and the swap: $(scontrol show node provision-vm --oneliner)"
waiting=$(sbatch --parsable --output=/root/after-reboot.out --wrap 'cat /sys/module/nvidia/version')
echo "$waiting" > /root/after-reboot.job
sleep 2
expect_eq "a job submitted before the reboot waits" PENDING "$(job_state "$waiting")"
provision history --json > $OUT/history-1.json
expect_eq "generation 2 state" awaiting-reboot "$(json $OUT/history-1.json 'd["generations"][-1]["state"]')"
# Before the reboot, apply again only says it waits.
run_json again apply "$never"
expect_eq "apply before the reboot changed" false "$(json $OUT/again.json 'd["changed"]')"
expect_eq "apply before the reboot: reboot_required" true "$(json $OUT/again.json 'd["reboot_required"]')"
echo "reboot-1: all checks passed; rebooting"
