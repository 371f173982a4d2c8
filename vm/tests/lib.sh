# Helpers for the guest-side test scripts (sourced): assertions that print
# what they saw, and JSON reads through python3.
set -euo pipefail
OUT=/vmrun/out
mkdir -p "$OUT"

fail() { echo "FAIL: $*" >&2; exit 1; }
pass() { echo "ok: $*"; }

# json FILE EXPRESSION: the value of a Python expression over the document `d`.
json() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); v=eval(sys.argv[2]); print(json.dumps(v) if isinstance(v,(dict,list,bool)) or v is None else v)" "$1" "$2"; }

expect_eq() { # WHAT EXPECTED ACTUAL
  [ "$2" = "$3" ] || fail "$1: expected '$2', got '$3'"
  pass "$1 = $3"
}

# apply_json NAME PLAN [ARGS...]: provision apply --json into $OUT/NAME.json,
# the exit code into $OUT/NAME.exit (never fails the script itself).
run_json() {
  local name=$1; shift
  local code=0
  provision "$@" --json > "$OUT/$name.json" 2> "$OUT/$name.err" || code=$?
  echo "$code" > "$OUT/$name.exit"
  echo "provision $* -> exit $code ($(json "$OUT/$name.json" 'd.get("msg","")' | head -c 300))"
  return 0
}

loaded_version() { cat /sys/module/nvidia/version 2>/dev/null || echo none; }
installed_version() { dpkg-query -W -f '${Version}' "$1" 2>/dev/null || echo absent; }
# held NAME: dpkg's database (what apt reads once its cache is current); where
# apt-mark's cached view differs, that is said on stderr (apt trusts its
# binary cache while dpkg's status keeps its size and mtime second).
held() {
  local dpkg apt
  dpkg=$(dpkg-query -W -f '${db:Status-Want}' "$1" 2>&1 | sed 's/^hold$/held/; s/^install$/not-held/')
  apt=$(apt-mark showhold 2>&1 | grep -qx "$1" && echo held || echo not-held)
  [ "$apt" = "$dpkg" ] || echo "note: apt-mark shows $1 $apt, dpkg $dpkg" >&2
  echo "$dpkg"
}
active() { systemctl is-active "$1" 2>/dev/null || true; }

# A user process holding /dev/nvidia0, in this login session (not a service).
start_holder() {
  (exec 3</dev/nvidia0; exec sleep 100000) &
  HOLDER=$!
  sleep 0.5
  [ -d /proc/$HOLDER ] || fail "the holder did not start"
  echo "holder pid $HOLDER"
}

# plan_with NAME BRANCH [TOML...]: /root/plans/NAME.toml, the stand-in plan
# of BRANCH with the given lines added (an [upgrade] section).
plan_with() {
  local name=$1 branch=$2; shift 2
  mkdir -p /root/plans
  { cat "/vm/plans/stand-in-$branch.toml"; printf '%s\n' "$@"; } > "/root/plans/$name.toml"
  echo "/root/plans/$name.toml"
}

# A hash of what an apply may change: /etc, /boot, the driver's files, the
# package database. Every file's inode, size and change time (dpkg replaces
# a file by renaming a new one over it: a new inode; any write or chmod
# moves the change time), and the contents of /etc and dpkg's status.
# Hashing the 250 MB of libraries and programs under TCG took 8-17 s a
# call on an idle host (this: 1.3 s), seven calls in the VM's series.
tree_hash() {
  { find /etc /boot /lib/modules /usr/lib/x86_64-linux-gnu /usr/bin -xdev \( -type f -o -type l \) -printf '%p %l %m %i %s %C@\n' | sort
    find /etc -xdev -type f -print0 | sort -z | xargs -0 sha256sum
    cat /var/lib/dpkg/status; } | sha256sum | cut -d' ' -f1
}

# Fresh install of branch 570, checked: the module loaded, verify passed.
install_570() {
  run_json fresh apply /vm/plans/stand-in-570.toml
  expect_eq "fresh install exit" 0 "$(cat $OUT/fresh.exit)"
  expect_eq "module after the fresh install" 570.124.06 "$(loaded_version)"
  expect_eq "verify after the fresh install" true "$(json $OUT/fresh.json 'd["verify"]["passed"]')"
}

# Branch 570 in place, fresh or already there (a script later in a
# --one-boot series): the apply passes and 570 is loaded.
have_570() {
  run_json on570 apply /vm/plans/stand-in-570.toml
  expect_eq "570 in place" 0 "$(cat $OUT/on570.exit)"
  expect_eq "module before the upgrade" 570.124.06 "$(loaded_version)"
}

# Requests the stand-in repository served between two Unix times of the
# guest's clock (related to the host's, which the log uses, through /__time).
downloads_between() {
  python3 - "$1" "$2" "$VMRUN_REPO" <<'PY'
import json, os, sys, time, urllib.request
start, end, repo = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
before = time.time()
host = json.load(urllib.request.urlopen(repo + "/__time"))["time"]
offset = host - (before + time.time()) / 2
log = "/vmrun/out/http.log"
hits = [json.loads(l) for l in open(log)] if os.path.exists(log) else []
inside = [h for h in hits if start + offset <= h["time"] <= end + offset]
print(len(inside), sum(h["bytes"] for h in inside))
PY
}

# The guest's one-node Slurm cluster (slurm.sh, the reboot series).
node_state() { scontrol show node provision-vm --oneliner | tr ' ' '\n' | sed -n 's/^State=//p'; }
job_state() { scontrol show job "$1" --oneliner | tr ' ' '\n' | sed -n 's/^JobState=//p'; }
wait_for() { # WHAT SECONDS COMMAND...: until COMMAND succeeds
  local what=$1 seconds=$2; shift 2
  for _ in $(seq 1 "$seconds"); do "$@" && return 0; sleep 1; done
  fail "$what: not within $seconds s"
}
node_idle() { [ "$(node_state)" = IDLE ]; }
draining() { node_state | grep -q DRAIN; }
# Slurm says RUNNING once the step launches, before the batch script has
# opened the device: a job is waited for until a process of it holds
# /dev/nvidia0.
holds_gpu() { # JOB
  local fd pid
  for fd in $(find /proc/[0-9]*/fd -lname /dev/nvidia0 2>/dev/null); do
    pid=${fd#/proc/}; pid=${pid%%/*}
    tr '\0' '\n' < "/proc/$pid/environ" 2>/dev/null | grep -qx "SLURM_JOB_ID=$1" && return 0
  done
  return 1
}
