//! A bad plan is refused with file:line:col and changes nothing.

use crate::support::{Rootfs, plan_file, provision};

const CASES: &[(&str, &[u8], &str)] = &[
    (
        "unknown-key.toml",
        b"[driver]\nbranch = \"535\"\nflavour = \"open\"\n",
        ":3:1: unknown field `flavour`, expected one of",
    ),
    (
        "wrong-type.toml",
        b"[driver]\nbranch = 535\n",
        ":2:10: invalid type: integer `535`, expected a string",
    ),
    (
        "branch-abc.toml",
        b"[driver]\nbranch = \"abc\"\n",
        ":2:10: invalid driver branch \"abc\"",
    ),
    (
        "version-path.toml",
        b"[driver]\nversion = \"../../x\"\n",
        ":2:11: invalid driver version \"../../x\"",
    ),
    ("empty.toml", b"", ":1:1: the plan is empty"),
    (
        "runfile-without-hash.toml",
        b"[driver]\nversion = \"580.95.05\"\nsource = \"runfile\"\nrunfile = \"https://example.invalid/NVIDIA-Linux-x86_64-580.95.05.run\"\n",
        ":1:1: source = \"runfile\" needs [driver] runfile (its URL) and sha256",
    ),
    (
        "runfile-bad-hash.toml",
        b"[driver]\nversion = \"580.95.05\"\nsource = \"runfile\"\nrunfile = \"https://example.invalid/x.run\"\nsha256 = \"abc\"\n",
        ":5:10: invalid sha256 \"abc\": expected 64 hexadecimal digits",
    ),
    (
        "runfile-branch.toml",
        b"[driver]\nbranch = \"580\"\nsource = \"runfile\"\nrunfile = \"https://example.invalid/x.run\"\nsha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"\n",
        ":1:1: source = \"runfile\" installs one release: set [driver] version",
    ),
    (
        "toolkit-runfile-with-packages.toml",
        b"[driver]\nbranch = \"580\"\n[toolkit]\nversion = \"12.8\"\nrunfile = \"https://example.invalid/cuda.run\"\nsha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"\n",
        ":3:1: [toolkit] runfile goes with [driver] source = \"runfile\"",
    ),
    (
        "garbage.toml",
        b"\x7fELF\x02\x01\x01\x00\x00\x00\xff\xfe\x00\x00",
        ":1:11: not a TOML plan: invalid UTF-8",
    ),
];

#[test]
fn invalid_plans_are_located_and_leave_the_rootfs_untouched() {
    let rootfs = Rootfs::new();
    let dir = tempfile::tempdir().unwrap();
    let before = rootfs.tree(&["etc", "boot", "var/lib/dpkg", "var/lib/provision"]);
    for (name, text, expected) in CASES {
        let path = plan_file(dir.path(), name, std::str::from_utf8(text).unwrap_or(""));
        fs_err::write(&path, text).unwrap();
        for verb in ["plan", "apply"] {
            let run = provision(&[
                verb,
                path.to_str().unwrap(),
                "--root",
                rootfs.arg(),
                "--json",
            ]);
            assert_eq!(run.code, 1, "{verb} {name}: {run:?}");
            let report = run.json();
            assert_eq!(report["failed"], true);
            assert_eq!(report["changed"], false);
            let msg = report["msg"].as_str().unwrap();
            assert!(
                msg.starts_with(path.to_str().unwrap()),
                "{verb} {name}: {msg}"
            );
            assert!(
                msg.contains(expected),
                "{verb} {name}: expected {expected:?} in {msg:?}"
            );
            // The human form says the same on stderr.
            let human = provision(&[verb, path.to_str().unwrap(), "--root", rootfs.arg()]);
            assert_eq!(human.code, 1);
            assert!(human.stderr.contains(expected), "{verb} {name}: {human:?}");
        }
    }
    assert_eq!(
        before,
        rootfs.tree(&["etc", "boot", "var/lib/dpkg", "var/lib/provision"]),
        "invalid plans changed the rootfs"
    );
}
