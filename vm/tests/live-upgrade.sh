# The upgrade window on a booted system, live: a fresh install of 570, then
# the upgrade to 580 while nvidia-persistenced and a user process hold the
# GPU, under each [upgrade] holders policy; re-apply; rollback.
. /vm/tests/lib.sh

install_570
expect_eq "persistence mode" Enabled "$(cat /run/nvidia-persistenced/persistence-mode)"
expect_eq "nvidia-persistenced" active "$(active nvidia-persistenced)"
run_json again570 apply /vm/plans/stand-in-570.toml
expect_eq "re-apply of 570 changed" false "$(json $OUT/again570.json 'd["changed"]')"

start_holder
before=$(tree_hash)
persistenced=$(systemctl show -p MainPID --value nvidia-persistenced)

# Default policy (no [upgrade]): NVIDIA's daemons would be stopped and
# started again; the user's process blocks, before any change.
run_json refuse apply /vm/plans/stand-in-580.toml
expect_eq "default policy exit" 1 "$(cat $OUT/refuse.exit)"
grep -q "pid $HOLDER (sleep)" $OUT/refuse.json || fail "the refusal does not name the holder $HOLDER"
grep -q 'holders = \\"terminate\\"' $OUT/refuse.json || fail "the refusal does not name the setting"
expect_eq "default policy blocks only the user process" "[$HOLDER]" "$(json $OUT/refuse.json '[h["pid"] for h in d["window"]["holders"] if h["action"]=="block"]')"
expect_eq "default policy stops persistenced" "[$persistenced]" "$(json $OUT/refuse.json '[h["pid"] for h in d["window"]["holders"] if h["action"]=="stop-unit"]')"
expect_eq "module after the refusal" 570.124.06 "$(loaded_version)"
expect_eq "tree after the refusal" "$before" "$(tree_hash)"
[ -d /proc/$HOLDER ] || fail "the holder was touched"

# stop-services: persistenced would be stopped, the user process blocks.
stop=$(plan_with stop-services 580 '[upgrade]' 'holders = "stop-services"')
run_json stopsvc apply "$stop"
expect_eq "stop-services exit" 1 "$(cat $OUT/stopsvc.exit)"
expect_eq "stop-services blocks only the user process" "[$HOLDER]" "$(json $OUT/stopsvc.json '[h["pid"] for h in d["window"]["holders"] if h["action"]=="block"]')"
expect_eq "stop-services stops persistenced" '["nvidia-persistenced.service"]' "$(json $OUT/stopsvc.json 'd["window"]["stop"]')"
expect_eq "tree after stop-services" "$before" "$(tree_hash)"
[ -d /proc/$HOLDER ] || fail "the holder was touched"

# terminate: the user process ends, persistenced stops and starts again.
term=$(plan_with terminate 580 '[upgrade]' 'holders = "terminate"' 'stop_timeout = 10')
run_json planterm plan "$term"
expect_eq "plan terminate exit" 0 "$(cat $OUT/planterm.exit)"
expect_eq "plan predicts no reboot" false "$(json $OUT/planterm.json 'd["reboot_required"]')"
expect_eq "plan: unload order" '["nvidia"]' "$(json $OUT/planterm.json 'd["window"]["unload"]')"
run_json term apply "$term"
expect_eq "terminate exit" 0 "$(cat $OUT/term.exit)"
expect_eq "apply's reboot_required equals plan's" false "$(json $OUT/term.json 'd["reboot_required"]')"
[ ! -d /proc/$HOLDER ] || fail "the holder $HOLDER still runs"
expect_eq "module after the upgrade" 580.105.08 "$(loaded_version)"
expect_eq "nvidia-persistenced after the upgrade" active "$(active nvidia-persistenced)"
[ "$(systemctl show -p MainPID --value nvidia-persistenced)" != "$persistenced" ] || fail "nvidia-persistenced was not restarted"
# Its package's script did not start it inside the window, before the new
# module was in: a policy-rc.d held the start, and is gone now.
grep -q "policy-rc.d returned 101, not running 'restart nvidia-persistenced.service'" "$(json $OUT/term.json 'd["log"]')" \
  || fail "the package script's restart of nvidia-persistenced was not held: $(grep -i persistenced "$(json $OUT/term.json 'd["log"]')" | head -n 5)"
[ ! -e /usr/sbin/policy-rc.d ] || fail "the window's policy-rc.d was left behind: $(cat /usr/sbin/policy-rc.d)"
started=$(systemctl show -p ExecMainStartTimestampMonotonic --value nvidia-persistenced)
loaded=$(json $OUT/term.json '[p["at"]+p["seconds"] for p in d["window"]["phases"] if p["phase"]=="load"][0]')
python3 - "$started" "$loaded" <<'PY' || fail "nvidia-persistenced started before the new module was loaded"
import sys, time
started_mono = int(sys.argv[1]) / 1e6
started = time.time() - (time.monotonic() - started_mono)
sys.exit(0 if started >= float(sys.argv[2]) - 0.5 else 1)
PY
expect_eq "nvidia-driver-cuda" 580.105.08-1 "$(installed_version nvidia-driver-cuda)"
expect_eq "nvidia-driver-cuda hold" held "$(held nvidia-driver-cuda)"
expect_eq "nvidia-kernel-open-dkms hold" held "$(held nvidia-kernel-open-dkms)"
expect_eq "verify after the upgrade" true "$(json $OUT/term.json 'd["verify"]["passed"]')"
nvidia-smi -L | grep -q "GPU 0" || fail "nvidia-smi -L after the upgrade: $(nvidia-smi -L)"
# The stand-in has no CUDA device: the compute check did not run, is not
# counted as passed, and says which setting skips it.
expect_eq "compute after the upgrade: not run" null \
  "$(json $OUT/term.json '[c["passed"] for c in d["verify"]["checks"] if c["name"]=="compute"][0]')"
json $OUT/term.json '[c["evidence"] for c in d["verify"]["checks"] if c["name"]=="compute"][0]' \
  | grep -q 'no NVIDIA GPU on the PCI bus.*\[verify\] compute = false' || fail "the compute check does not say why it did not run"
run_json verify verify
expect_eq "provision verify on the upgraded guest" 0 "$(cat $OUT/verify.exit)"
expect_eq "provision verify's checks" '["userspace", "module", "pci", "nvidia-smi", "compute"]' \
  "$(json $OUT/verify.json '[c["name"] for c in d["checks"]]')"
open=$(json $OUT/term.json '[p["at"] for p in d["window"]["phases"] if p["phase"]=="stop"][0]')
close=$(json $OUT/term.json '[p["at"]+p["seconds"] for p in d["window"]["phases"]][-1]')
expect_eq "requests inside the window (count bytes)" "0 0" "$(downloads_between "$open" "$close")"
echo "unavailable_seconds: $(json $OUT/term.json 'd["window"]["unavailable_seconds"]')"
run_json again580 apply "$term"
expect_eq "re-apply of 580 changed" false "$(json $OUT/again580.json 'd["changed"]')"

# Rollback of the upgrade: 570 loaded again, services running.
run_json rollback rollback
expect_eq "rollback exit" 0 "$(cat $OUT/rollback.exit)"
expect_eq "module after the rollback" 570.124.06 "$(loaded_version)"
expect_eq "nvidia-driver-cuda after the rollback" 570.124.06-1 "$(installed_version nvidia-driver-cuda)"
expect_eq "nvidia-persistenced after the rollback" active "$(active nvidia-persistenced)"
expect_eq "rollback's reboot_required" false "$(json $OUT/rollback.json 'd["reboot_required"]')"
nvidia-smi -L | grep -q "GPU 0" || fail "nvidia-smi -L after the rollback: $(nvidia-smi -L)"
provision history
echo "live-upgrade: all checks passed"
