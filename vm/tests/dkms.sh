# The module built by DKMS before the window, on a booted host: branch 590
# of the stand-in ships its module as DKMS source (dkms.conf, dh_dkms's
# postinst), as NVIDIA's nvidia-kernel-open-dkms does. A build that fails
# stops nothing and changes nothing; one that works is built while 570
# still serves, and inside the window the package only loads it.
. /vm/tests/lib.sh

phase_names() { json "$1" '[p["phase"] for p in d["phases"]]'; }
phase_at() { json "$1" "[p[\"at\"] for p in d[\"phases\"] if p[\"phase\"]==\"$2\"][0]"; }
phase_seconds() { json "$1" "[p[\"seconds\"] for p in d[\"phases\"] if p[\"phase\"]==\"$2\"][0]"; }
persistenced_pid() { systemctl show -p MainPID --value nvidia-persistenced; }

# Fresh, or 570 already there (after live-upgrade.sh in its series).
have_570
plan=$(plan_with dkms 590)
run_json plan plan "$plan"
json $OUT/plan.json '[s["summary"] for s in d["steps"] if s["id"]=="driver:build"][0]' \
  | grep -q "build the kernel module of nvidia-kernel-open-dkms 590" \
  || fail "plan does not show the build: $(json $OUT/plan.json '[s for s in d["steps"] if s["id"]=="driver:build"]')"

# 1. A build that fails (a compiler error): the apply fails with DKMS's
#    make.log, before anything is stopped; the host is as it was.
mkdir -p /etc/nvidia-stand-in
touch /etc/nvidia-stand-in/fail-build
before=$(tree_hash)
pid=$(persistenced_pid)
run_json broken apply "$plan"
expect_eq "failing build exit" 1 "$(cat $OUT/broken.exit)"
grep -q "make.log" $OUT/broken.json || fail "the failure does not name make.log: $(head -c 2000 $OUT/broken.json)"
grep -q "a build failure was asked for" $OUT/broken.json || fail "the failure does not show the compiler's error: $(head -c 2000 $OUT/broken.json)"
expect_eq "module after the failed build" 570.124.06 "$(loaded_version)"
expect_eq "nvidia-kernel-open-dkms after the failed build" 570.124.06-1 "$(installed_version nvidia-kernel-open-dkms)"
expect_eq "nvidia-persistenced never stopped" "$pid" "$(persistenced_pid)"
expect_eq "no phase past the build" '["download", "build"]' "$(phase_names $OUT/broken.json)"
expect_eq "tree after the failed build" "$before" "$(tree_hash)"
[ -e /var/lib/provision/build ] && fail "the scratch build tree is left"
rm /etc/nvidia-stand-in/fail-build

# 2. The build comes first, while 570 serves; the window only installs.
run_json up apply "$plan"
expect_eq "upgrade exit" 0 "$(cat $OUT/up.exit)"
expect_eq "module after the upgrade" 590.44.01 "$(loaded_version)"
expect_eq "verify after the upgrade" true "$(json $OUT/up.json 'd["verify"]["passed"]')"
names=$(phase_names $OUT/up.json)
python3 - "$names" <<'PY' || fail "phases out of order: $names"
import json, sys
names = json.loads(sys.argv[1])
assert names.index("build") < names.index("stop") < names.index("packages"), names
PY
pass "phases in order: $names"
grep -q "Loading tarball for nvidia-590.44.01" "$(json $OUT/up.json 'd["log"]')" \
  || fail "the package step did not load the module built before"
dkms status -m nvidia -v 590.44.01 | grep -q "installed" || fail "dkms status: $(dkms status)"
build=$(phase_seconds $OUT/up.json build)
unavailable=$(json $OUT/up.json 'd["window"]["unavailable_seconds"]')
python3 -c "import sys; b,u=float(sys.argv[1]),float(sys.argv[2]); print(f'build {b:.1f} s, unavailable {u:.1f} s, unavailable/(build+unavailable) = {u/(b+u):.2f}')" "$build" "$unavailable"
expect_eq "nvidia-persistenced after the upgrade" active "$(active nvidia-persistenced)"

# 3. Rollback: 570's prebuilt module again, DKMS's 590 gone.
run_json back rollback
expect_eq "rollback exit" 0 "$(cat $OUT/back.exit)"
expect_eq "module after the rollback" 570.124.06 "$(loaded_version)"
[ -z "$(dkms status -m nvidia -v 590.44.01)" ] || fail "dkms still has 590.44.01: $(dkms status)"
echo "dkms: all checks passed"
