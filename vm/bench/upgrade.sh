# Guest side of scripts/bench-upgrade: the 570 -> 590 upgrade with
# nvidia-persistenced and a user process holding the GPU, holders =
# "terminate"; 590's module is DKMS source, built before the window.
# Writes /vmrun/out/bench.json.
. /vm/tests/lib.sh
install_570
start_holder
term=$(plan_with terminate 590 '[upgrade]' 'holders = "terminate"' 'stop_timeout = 10')
began=$(date +%s.%N)
run_json upgrade apply "$term"
ended=$(date +%s.%N)
expect_eq "upgrade exit" 0 "$(cat $OUT/upgrade.exit)"
open=$(json $OUT/upgrade.json '[p["at"] for p in d["window"]["phases"] if p["phase"]=="stop"][0]')
close=$(json $OUT/upgrade.json '[p["at"]+p["seconds"] for p in d["window"]["phases"]][-1]')
read -r requests bytes < <(downloads_between "$open" "$close")
python3 - "$began" "$ended" "$requests" "$bytes" <<'PY'
import json, sys
began, ended, requests, downloaded = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
report = json.load(open("/vmrun/out/upgrade.json"))
window = report["window"]
bench = {
    "apply_seconds": round(ended - began, 2),
    "unavailable_seconds": window["unavailable_seconds"],
    "phases": {p["phase"]: p["seconds"] for p in report["phases"]},
    "requests_inside_window": requests,
    "bytes_inside_window": downloaded,
    "verify_passed": report["verify"]["passed"],
}
json.dump(bench, open("/vmrun/out/bench.json", "w"), indent=1)
print(json.dumps(bench, indent=1))
PY
echo "bench-upgrade: all checks passed"
