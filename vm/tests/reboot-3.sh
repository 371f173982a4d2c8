# reload = "never", part 3: the rollback's reboot brought 570 back. A second
# upgrade waits for a reboot with its resume unit disabled, so that part 4
# finishes it with `provision apply` by hand.
. /vm/tests/lib.sh

expect_eq "module after the rollback's reboot" 570.124.06 "$(loaded_version)"
expect_eq "nvidia-persistenced" active "$(active nvidia-persistenced)"
nvidia-smi -L | grep -q "GPU 0" || fail "nvidia-smi -L: $(nvidia-smi -L)"
wait_for "slurmctld and slurmd up, the node idle" 120 node_idle
run_json again apply /root/plans/never.toml
expect_eq "second upgrade exit" 0 "$(cat $OUT/again.exit)"
expect_eq "second upgrade: reboot_required" true "$(json $OUT/again.json 'd["reboot_required"]')"
draining || fail "the node is not drained until the reboot: $(node_state)"
systemctl disable provision-resume.service
echo "reboot-3: all checks passed; rebooting"
