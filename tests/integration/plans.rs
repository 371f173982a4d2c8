//! Every plan shipped in plans/ reads.

use crate::support::repo;

#[test]
fn every_shipped_plan_parses() {
    let dir = repo().join("plans");
    let mut names = Vec::new();
    for entry in fs_err::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) == Some("toml") {
            provision::plan::Plan::load(&path).unwrap_or_else(|e| panic!("{e}"));
            names.push(path.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    for needed in ["ubuntu-22.04", "ubuntu-24.04", "rhel-9", "debian-12"] {
        assert!(
            names.iter().any(|n| n.starts_with(needed)),
            "plans/ lacks a {needed} plan: {names:?}"
        );
    }
}
