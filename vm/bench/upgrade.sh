# Guest side of scripts/bench-upgrade: the 570 -> 590 upgrade with
# nvidia-persistenced and a user process holding the GPU, holders =
# "terminate"; 590's module is DKMS source, built before the window.
# Writes /vmrun/out/bench.json.
. /vm/tests/lib.sh
install_570
start_holder
# Where the package step's seconds go: dpkg's own log of this upgrade.
dpkg_lines=$(wc -l < /var/log/dpkg.log)
term=$(plan_with terminate 590 '[upgrade]' 'holders = "terminate"' 'stop_timeout = 10')
began=$(date +%s.%N)
run_json upgrade apply "$term"
ended=$(date +%s.%N)
expect_eq "upgrade exit" 0 "$(cat $OUT/upgrade.exit)"
open=$(json $OUT/upgrade.json '[p["at"] for p in d["window"]["phases"] if p["phase"]=="stop"][0]')
close=$(json $OUT/upgrade.json '[p["at"]+p["seconds"] for p in d["window"]["phases"]][-1]')
read -r requests bytes < <(downloads_between "$open" "$close")
tail -n +"$((dpkg_lines + 1))" /var/log/dpkg.log > "$OUT/dpkg.log"
python3 - "$began" "$ended" "$requests" "$bytes" <<'PY'
import datetime, json, sys
began, ended, requests, downloaded = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
# dpkg.log (whole seconds): unpacking, each package's configuration (its
# maintainer script: dh_dkms's common.postinst for the module), triggers.
steps, last, current = {}, None, None
for line in open("/vmrun/out/dpkg.log"):
    words = line.split()
    at = datetime.datetime.strptime(" ".join(words[:2]), "%Y-%m-%d %H:%M:%S").timestamp()
    if words[2] in ("startup", "configure", "trigproc"):
        if current and last is not None:
            steps[current] = steps.get(current, 0) + at - last
        current = {"startup": "unpack" if words[3:4] == ["archives"] else "configure",
                   "configure": f"configure {words[3].split(':')[0]}",
                   "trigproc": f"trigger {words[3].split(':')[0]}"}[words[2]]
        last = at
    elif words[2] == "status" and current and last is not None:
        steps[current] = steps.get(current, 0) + at - last
        last = at
report = json.load(open("/vmrun/out/upgrade.json"))
window = report["window"]
bench = {
    "apply_seconds": round(ended - began, 2),
    "unavailable_seconds": window["unavailable_seconds"],
    "phases": {p["phase"]: p["seconds"] for p in report["phases"]},
    "requests_inside_window": requests,
    "bytes_inside_window": downloaded,
    "verify_passed": report["verify"]["passed"],
    "package_step": {k: v for k, v in steps.items() if v > 0},
}
json.dump(bench, open("/vmrun/out/bench.json", "w"), indent=1)
print(json.dumps(bench, indent=1))
PY
echo "bench-upgrade: all checks passed"
