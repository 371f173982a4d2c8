//! What a generation's commands write beside the files provision journals
//! and would leave behind when they are stopped half-way: initramfs-tools'
//! backup of the image it replaces (`initrd.img-K.dpkg-bak`, removed by
//! update-initramfs only when it gets to the end), mkinitramfs's image
//! before its rename (`initrd.img-K.new`), and the temporary trees of
//! mkinitramfs and dracut under /var/tmp (`mkinitramfs_XXXXXX`,
//! `dracut.XXXXXX`, removed by their exit traps, which SIGKILL skips).
//! /boot is often a small partition: leftover backups are what later fill
//! it and fail kernel updates.
//!
//! The ones present when a generation begins are recorded with it; when
//! the generation is finished or undone (also by the run after a killed
//! one, once the killed run's leftovers have ended), those that appeared
//! since are removed. Nothing is removed while an initramfs tool runs in
//! the root: its files are its own until it ends.

use crate::host::Root;

/// (directory, name prefix, name suffix) of a stray.
const PATTERNS: &[(&str, &str, &str)] = &[
    // update-initramfs: backup_initramfs() links the image it replaces here.
    ("/boot", "initrd.img-", ".dpkg-bak"),
    // update-initramfs: `mkinitramfs -o "${initramfs}.new"`, then mv.
    ("/boot", "initrd.img-", ".new"),
    // mkinitramfs: DESTDIR and its cpio parts, `mktemp` under TMPDIR.
    ("/var/tmp", "mkinitramfs", ""),
    // dracut: DRACUT_TMPDIR, `mktemp -d -t dracut.XXXXXX` under TMPDIR.
    ("/var/tmp", "dracut.", ""),
];

/// The tools whose files these are (`comm`, truncated to 15 bytes).
const TOOLS: &[&str] = &["update-initramf", "mkinitramfs", "dracut"];

/// Every stray present now, by path.
pub fn present(root: &Root) -> Vec<String> {
    let mut found = Vec::new();
    for (dir, prefix, suffix) in PATTERNS {
        for name in root.read_dir(dir).unwrap_or_default() {
            if name.starts_with(prefix) && name.ends_with(suffix) && name.len() > prefix.len() {
                found.push(format!("{dir}/{name}"));
            }
        }
    }
    found.sort();
    found.dedup();
    found
}

/// An initramfs tool runs in this root (a chroot's processes have it as
/// their root; the tools of other roots on the machine write elsewhere); a
/// zombie whose parent has not reaped it does not count.
fn tool_running(root: &Root) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    let ours = root
        .path()
        .canonicalize()
        .unwrap_or_else(|_| root.path().to_path_buf());
    entries.flatten().any(|entry| {
        let is_tool = std::fs::read_to_string(entry.path().join("comm"))
            .is_ok_and(|comm| TOOLS.contains(&comm.trim_end()));
        is_tool
            && std::fs::read_link(entry.path().join("root")).is_ok_and(|r| r == ours)
            && std::fs::read_to_string(entry.path().join("stat")).is_ok_and(|stat| {
                let state = stat.rsplit_once(") ").map(|(_, rest)| rest);
                !matches!(state.and_then(|s| s.chars().next()), Some('Z' | 'X') | None)
            })
    })
}

/// Removes the strays that were not there `before`; returns what it
/// removed (nothing while an initramfs tool runs in the root).
pub fn remove_new(root: &Root, before: &[String]) -> Vec<String> {
    let new: Vec<String> = present(root)
        .into_iter()
        .filter(|path| !before.contains(path))
        .collect();
    if new.is_empty() || tool_running(root) {
        return Vec::new();
    }
    new.into_iter()
        .filter(|path| {
            let removed = match root.symlink_metadata(path) {
                Ok(meta) if meta.is_dir() => root.remove_dir_all(path),
                Ok(_) => root.remove_file(path),
                Err(_) => return false,
            };
            removed.is_ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_strays_that_appeared_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path()).unwrap();
        for dir in ["boot", "var/tmp/dracut.old", "var/tmp/dracut.AbC123/x"] {
            fs_err::create_dir_all(root.join(dir)).unwrap();
        }
        for file in [
            "boot/initrd.img-6.1.0-50-amd64",
            "boot/initrd.img-6.1.0-49-amd64.dpkg-bak",
            "boot/vmlinuz-6.1.0-50-amd64",
        ] {
            fs_err::write(root.join(file), b"x").unwrap();
        }
        let before = present(&root);
        assert_eq!(
            before,
            [
                "/boot/initrd.img-6.1.0-49-amd64.dpkg-bak",
                "/var/tmp/dracut.AbC123",
                "/var/tmp/dracut.old"
            ]
        );
        fs_err::remove_dir_all(root.join("var/tmp/dracut.AbC123")).unwrap();
        for file in [
            "boot/initrd.img-6.1.0-50-amd64.dpkg-bak",
            "boot/initrd.img-6.1.0-50-amd64.new",
            "var/tmp/mkinitramfs_Xy12Ab",
        ] {
            fs_err::write(root.join(file), b"x").unwrap();
        }
        fs_err::create_dir_all(root.join("var/tmp/dracut.New999/lib")).unwrap();
        let removed = remove_new(&root, &before);
        assert_eq!(
            removed,
            [
                "/boot/initrd.img-6.1.0-50-amd64.dpkg-bak",
                "/boot/initrd.img-6.1.0-50-amd64.new",
                "/var/tmp/dracut.New999",
                "/var/tmp/mkinitramfs_Xy12Ab"
            ]
        );
        let left = present(&root);
        assert_eq!(
            left,
            [
                "/boot/initrd.img-6.1.0-49-amd64.dpkg-bak",
                "/var/tmp/dracut.old"
            ]
        );
        assert!(root.exists("/boot/initrd.img-6.1.0-50-amd64"));
        assert!(root.exists("/boot/vmlinuz-6.1.0-50-amd64"));
    }
}
