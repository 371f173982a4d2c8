# reload = "never", part 2: after the reboot, provision-resume.service alone
# finished the generation and resumed the Slurm node. Then the upgrade is
# rolled back, which waits for the next reboot too.
. /vm/tests/lib.sh

# The unit is a oneshot after multi-user.target's services: wait for it.
for _ in $(seq 1 120); do
  state=$(systemctl show -p ActiveState --value provision-resume.service)
  [ "$state" = activating ] || break
  sleep 1
done
journalctl -u provision-resume.service --no-pager | tail -5
journalctl -u provision-resume.service -o cat --no-pager | grep -m1 '"msg"' || true
grep scontrol /var/log/provision/0002.log || true
expect_eq "module after the reboot" 580.105.08 "$(loaded_version)"
provision history --json > $OUT/history-2.json
expect_eq "generation 2 after the reboot" applied "$(json $OUT/history-2.json 'd["generations"][-1]["state"]')"
[ ! -e /etc/systemd/system/provision-resume.service ] || fail "the resume unit is still there"
expect_eq "nvidia-persistenced after the reboot" active "$(active nvidia-persistenced)"
expect_eq "persistence mode after the reboot" Enabled "$(cat /run/nvidia-persistenced/persistence-mode)"
nvidia-smi -L | grep -q "GPU 0" || fail "nvidia-smi -L after the reboot: $(nvidia-smi -L)"
# The resume unit resumed the node after verify: the job that waited runs
# on 580.
waiting=$(cat /root/after-reboot.job)
ran() { [ "$(job_state "$waiting")" = COMPLETED ]; }
wait_for "the job submitted before the reboot ran" 120 ran
expect_eq "that job saw the new driver" 580.105.08 "$(cat /root/after-reboot.out)"
node_state | grep -qv DRAIN || fail "the node is still drained: $(node_state)"
run_json after apply /root/plans/never.toml
expect_eq "re-apply after the resume changed" false "$(json $OUT/after.json 'd["changed"]')"

# Rollback of the finished upgrade, under the same policy: reload =
# "never", so 570 comes back at the next boot.
run_json rollback rollback
expect_eq "rollback exit" 0 "$(cat $OUT/rollback.exit)"
expect_eq "nvidia-driver-cuda after the rollback" 570.124.06-1 "$(installed_version nvidia-driver-cuda)"
expect_eq "rollback's reboot_required" true "$(json $OUT/rollback.json 'd["reboot_required"]')"
expect_eq "module until the reboot" 580.105.08 "$(loaded_version)"
echo "reboot-2: all checks passed; rebooting"
