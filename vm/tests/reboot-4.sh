# reload = "never", part 4: the resume unit did not run; `provision apply`
# of the same plan finishes the generation and resumes the node.
. /vm/tests/lib.sh

expect_eq "module after the reboot" 580.105.08 "$(loaded_version)"
wait_for "slurmctld up, the node still drained across the reboot" 120 draining
provision history --json > $OUT/history-3.json
expect_eq "the generation still waits" awaiting-reboot "$(json $OUT/history-3.json 'd["generations"][-1]["state"]')"
run_json finish apply /root/plans/never.toml
expect_eq "finishing apply exit" 0 "$(cat $OUT/finish.exit)"
expect_eq "finishing apply: reboot_required" false "$(json $OUT/finish.json 'd["reboot_required"]')"
expect_eq "verify after the reboot" true "$(json $OUT/finish.json 'd["verify"]["passed"]')"
wait_for "the node resumed by the finishing apply" 60 node_idle
provision history --json > $OUT/history-4.json
expect_eq "the generation is applied" applied "$(json $OUT/history-4.json 'd["generations"][-1]["state"]')"
[ ! -e /etc/systemd/system/provision-resume.service ] || fail "the resume unit is still there"
expect_eq "nvidia-persistenced" active "$(active nvidia-persistenced)"
provision history
echo "reboot-4: all checks passed"
