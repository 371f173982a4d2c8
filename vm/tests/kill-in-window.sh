# provision killed with SIGKILL inside the window: the next apply, or a
# rollback, leaves a consistent host (services up, one module version
# loaded, matching the user space).
. /vm/tests/lib.sh

consistent() { # WHAT VERSION
  expect_eq "$1: module" "$2" "$(loaded_version)"
  expect_eq "$1: user space" "$2" "$(nvidia-smi --query-gpu=driver_version --format=csv,noheader)"
  expect_eq "$1: nvidia-persistenced" active "$(active nvidia-persistenced)"
  [ "$(lsmod | grep -c '^nvidia ')" = 1 ] || fail "$1: nvidia loaded $(lsmod | grep -c '^nvidia ') times"
  [ ! -e /usr/sbin/policy-rc.d ] || fail "$1: the window's policy-rc.d was left behind"
}

# apply_killed NAME PLAN CONDITION: starts apply in the background and
# kills it with SIGKILL as soon as CONDITION (a shell test) holds.
apply_killed() {
  local name=$1 plan=$2 condition=$3
  provision apply "$plan" --json > "$OUT/$name.json" 2>&1 &
  local pid=$!
  for _ in $(seq 1 6000); do
    if eval "$condition"; then
      kill -KILL "$pid"
      wait "$pid" 2>/dev/null || true
      echo "killed provision (pid $pid) once: $condition"
      return 0
    fi
    [ -d /proc/$pid ] || fail "$name: provision ended before the kill point"
    sleep 0.05
  done
  fail "$name: the kill point never came"
}

# Alone on a fresh guest: 570 installed first, the kills on the way to 580
# and back. Last in the one-boot series (after slurm.sh), 580 is there:
# the same kills on the way to 570 and back.
release() { case $1 in 570) echo 570.124.06 ;; 580) echo 580.105.08 ;; esac; }
case "$(loaded_version)" in
  none) install_570; from=570 to=580 ;;
  580.105.08) from=580 to=570 ;;
  570.124.06) from=570 to=580 ;;
  *) fail "unexpected module $(loaded_version)" ;;
esac
run_json have apply "/vm/plans/stand-in-$from.toml"
expect_eq "$from in place" 0 "$(cat $OUT/have.exit)"
start_holder
term=$(plan_with terminate "$to" '[upgrade]' 'holders = "terminate"' 'stop_timeout = 10')

# 1. Killed once nvidia-persistenced is stopped; apply again finishes it.
apply_killed kill-stop "$term" '[ "$(active nvidia-persistenced)" != active ]'
run_json after-kill apply "$term" --lock-timeout 300
expect_eq "apply after the kill exit" 0 "$(cat $OUT/after-kill.exit)"
grep -q "was interrupted" $OUT/after-kill.json || fail "the interrupted generation is not reported"
consistent "after the kill and a new apply" "$(release "$to")"
provision history --json > $OUT/history-kill.json
expect_eq "the interrupted generation" failed "$(json $OUT/history-kill.json 'd["generations"][-2]["state"]')"
expect_eq "the new generation" applied "$(json $OUT/history-kill.json 'd["generations"][-1]["state"]')"

# 2. Killed once the modules are unloaded and the package scripts' starts
#    are held (window:hold-starts wrote /usr/sbin/policy-rc.d), on the way
#    back to $from; a rollback straight after undoes that interrupted apply.
back=$(plan_with back "$from" '[upgrade]' 'holders = "terminate"' 'stop_timeout = 10')
apply_killed kill-unload "$back" '! grep -q "^nvidia " /proc/modules && [ -e /usr/sbin/policy-rc.d ]'
provision history --json > $OUT/history-unload.json
interrupted=$(json $OUT/history-unload.json 'd["generations"][-1]["id"]')
run_json rollback rollback --lock-timeout 300
expect_eq "rollback after the kill exit" 0 "$(cat $OUT/rollback.exit)"
expect_eq "rollback undid the interrupted generation" "$interrupted" "$(json $OUT/rollback.json 'd["generation"]')"
consistent "after the kill and a rollback" "$(release "$to")"
run_json again apply "$term"
expect_eq "apply of $to after all that changed" false "$(json $OUT/again.json 'd["changed"]')"
provision history
echo "kill-in-window: all checks passed"
