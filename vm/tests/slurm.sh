# Upgrading through Slurm ([upgrade] drain = "slurm") on the guest's
# one-node cluster (Debian's slurmctld, slurmd, munge): a job holding
# /dev/nvidia0 is let finish while the node drains, a job submitted during
# the drain runs after the resume on the new driver; a drain_timeout that
# expires leaves the node and the driver as they were.
. /vm/tests/lib.sh

wait_for "slurmctld and slurmd up, the node idle" 120 node_idle
# After the scripts before it in the series, 570 is installed already.
have_570

# A job on the GPU that runs until the script lets it end (once the node
# is seen draining and a job submitted meanwhile waits).
rm -f /root/first.release
first=$(sbatch --parsable --output=/root/first.out --wrap 'exec 3<>/dev/nvidia0; while [ ! -e /root/first.release ]; do sleep 0.5; done')
wait_for "job $first holding /dev/nvidia0" 120 holds_gpu "$first"
drain=$(plan_with drain 580 '[upgrade]' 'drain = "slurm"')
run_json plan plan "$drain"
expect_eq "plan exit" 0 "$(cat $OUT/plan.exit)"
# NVIDIA's own daemons (persistenced, and DCGM after dcgm.sh) stop and
# start as always; only the job's processes are drained.
expect_eq "plan: the job's processes are drained, not blocking" '["drained"]' \
  "$(json $OUT/plan.json 'sorted(set(h["action"] for h in d["window"]["holders"] if not (h["unit"] or "").startswith("nvidia-")))')"
json $OUT/plan.json '[s["summary"] for s in d["steps"] if s["id"]=="window:drain"][0]' | grep -q "drain Slurm node provision-vm (now ALLOCATED); then wait for $first (root, wrap" \
  || fail "plan does not show the drain with the job: $(json $OUT/plan.json '[s for s in d["steps"] if s["id"]=="window:drain"]')"

# The apply drains, waits for the job, swaps, verifies, resumes.
slurmd=$(systemctl show -p MainPID --value slurmd)
expect_eq "plan: slurmd restarted after the live swap" '["slurmd.service"]' "$(json $OUT/plan.json 'd["window"]["restart"]')"
( provision apply "$drain" --json > $OUT/apply.json 2> $OUT/apply.err; echo $? > $OUT/apply.exit ) &
apply=$!
wait_for "the node draining" 60 draining
expect_eq "the job runs on while the node drains" RUNNING "$(job_state "$first")"
expect_eq "the module while the job runs" 570.124.06 "$(loaded_version)"
scontrol show node provision-vm --oneliner | grep -q "Reason=provision: driver 570.124.06 -> 580" \
  || fail "the drain reason does not name provision and the swap: $(scontrol show node provision-vm --oneliner)"
second=$(sbatch --parsable --output=/root/second.out --wrap 'cat /sys/module/nvidia/version')
sleep 2
expect_eq "a job submitted during the drain waits" PENDING "$(job_state "$second")"
expect_eq "the apply waits for the job" RUNNING "$(job_state "$first")"
[ -d /proc/$apply ] || fail "the apply ended while the job ran: $(cat $OUT/apply.json)"
touch /root/first.release
wait $apply || true
expect_eq "apply exit" 0 "$(cat $OUT/apply.exit)"
expect_eq "the first job completed" COMPLETED "$(job_state "$first")"
expect_eq "module after the upgrade" 580.105.08 "$(loaded_version)"
expect_eq "apply: the job waited for" "[\"$first\"]" "$(json $OUT/apply.json '[j["id"] for j in d["drain"]["jobs"]]')"
# The build comes before the drain (580's stand-in package ships its module
# prebuilt, so it finds nothing to build; dkms.sh builds 590's).
expect_eq "apply: the phases" '["download", "build", "drain", "stop", "unload", "packages", "load", "start", "verify", "resume"]' \
  "$(json $OUT/apply.json '[p["phase"] for p in d["phases"]]')"
[ "$(systemctl show -p MainPID --value slurmd)" != "$slurmd" ] || fail "slurmd was not restarted after the swap (it loads NVML at its start)"
complete() { [ "$(job_state "$second")" = COMPLETED ]; }
wait_for "the job submitted during the drain ran after the resume" 60 complete
expect_eq "that job saw the new driver" 580.105.08 "$(cat /root/second.out)"
node_state | grep -qv DRAIN || fail "the node is still drained: $(node_state)"

# drain_timeout: a long job, a five-second bound: refused, the node back
# as it was, nothing changed.
long=$(sbatch --parsable --wrap 'exec 3<>/dev/nvidia0; sleep 600')
wait_for "job $long holding /dev/nvidia0" 120 holds_gpu "$long"
before=$(tree_hash)
state_before=$(node_state)
back=$(plan_with back 570 '[upgrade]' 'drain = "slurm"' 'drain_timeout = 5')
run_json timeout apply "$back"
expect_eq "drain_timeout exit" 1 "$(cat $OUT/timeout.exit)"
grep -q "drain_timeout: after 5 s jobs still run on provision-vm: $long" $OUT/timeout.json \
  || fail "the refusal does not name the job: $(json $OUT/timeout.json 'd["msg"]')"
# slurmctld's own flags (NOT_RESPONDING after a missed ping on a busy
# guest) come and go by themselves: the state provision puts back must
# settle to the one before within a few pings.
for _ in $(seq 1 30); do
  [ "$(node_state)" = "$state_before" ] && break
  sleep 1
done
expect_eq "the node's state after the timeout" "$state_before" "$(node_state)"
expect_eq "the long job runs on" RUNNING "$(job_state "$long")"
expect_eq "module after the timeout" 580.105.08 "$(loaded_version)"
expect_eq "tree after the timeout" "$before" "$(tree_hash)"
scancel "$long"
echo "slurm: all checks passed"
