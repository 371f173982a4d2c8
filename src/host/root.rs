//! `Root`: the filesystem door. Every path provision reads or writes goes
//! through here, so `--root DIR` makes DIR the host's `/` everywhere at once.
//!
//! Symlinks are resolved *inside* the root: an absolute link target in a
//! rootfs or snapshot (`/usr/local/cuda -> /etc/alternatives/cuda`) is read
//! relative to the root, never against the machine running provision.
//!
//! Snapshots copied by tools that do not keep links (the shared host
//! snapshots are such copies) store a link as a small regular file holding the
//! target and no newline. Outside the real `/`, `read_link` understands those
//! "link stubs" too, so a snapshot reads the same whether or not its links
//! survived the copy.

use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// Hops after which a link chain counts as a loop (Linux's MAXSYMLINKS).
const MAX_LINK_HOPS: usize = 40;
/// Largest regular file that can be a link stub.
const LINK_STUB_MAX: u64 = 4096;

#[derive(Debug, Clone)]
pub struct Root {
    path: PathBuf,
    is_host: bool,
}

impl Root {
    /// The machine's own `/`.
    pub fn host() -> Root {
        Root {
            path: PathBuf::from("/"),
            is_host: true,
        }
    }

    /// A directory standing in for `/` (a rootfs, a snapshot, a tempdir).
    pub fn new(path: impl AsRef<Path>) -> io::Result<Root> {
        let given = path.as_ref();
        let path = std::fs::canonicalize(given).map_err(|error| {
            let what = match error.kind() {
                io::ErrorKind::NotFound => "no such directory".to_string(),
                io::ErrorKind::PermissionDenied => "permission denied".to_string(),
                _ => error.to_string(),
            };
            io::Error::new(error.kind(), what)
        })?;
        if !path.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("{} is not a directory", path.display()),
            ));
        }
        let is_host = path == Path::new("/");
        Ok(Root { path, is_host })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn is_host(&self) -> bool {
        self.is_host
    }

    /// The real path of host path `p` (`/etc/x` -> `ROOT/etc/x`). Does not
    /// resolve links; use [`Root::resolve`] where links must stay inside.
    pub fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        let p = p.as_ref();
        let relative = p.strip_prefix("/").unwrap_or(p);
        if relative.as_os_str().is_empty() {
            return self.path.clone();
        }
        self.path.join(relative)
    }

    /// Reads a whole file as text; invalid UTF-8 is replaced, never fatal
    /// (facts must survive binary garbage in a version file).
    pub fn read_string(&self, p: impl AsRef<Path>) -> io::Result<String> {
        let bytes = fs_err::read(self.join_resolved(p.as_ref())?).map_err(|e| self.inside(e))?;
        Ok(match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(error) => String::from_utf8_lossy(error.as_bytes()).into_owned(),
        })
    }

    /// Like [`Root::read_string`], trimmed; `None` when the file is absent.
    pub fn read_trimmed(&self, p: impl AsRef<Path>) -> io::Result<Option<String>> {
        match self.read_string(p) {
            Ok(text) => Ok(Some(text.trim().to_string())),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error),
        }
    }

    pub fn read_bytes(&self, p: impl AsRef<Path>) -> io::Result<Vec<u8>> {
        fs_err::read(self.join_resolved(p.as_ref())?).map_err(|e| self.inside(e))
    }

    /// An error about a real path said with the host's path (`/etc/x`,
    /// not `ROOT/etc/x`): reports speak of the host, whatever `--root`.
    fn inside(&self, error: io::Error) -> io::Error {
        if self.is_host {
            return error;
        }
        let root = self.path.display().to_string();
        let text = error
            .to_string()
            .replace(&format!("{root}/"), "/")
            .replace(&format!("`{root}`"), "`/`");
        io::Error::new(error.kind(), text)
    }

    /// Whether anything (a link too, even a dangling one) exists at `p`.
    pub fn exists(&self, p: impl AsRef<Path>) -> bool {
        std::fs::symlink_metadata(self.join(p)).is_ok()
    }

    pub fn is_dir(&self, p: impl AsRef<Path>) -> bool {
        self.join_resolved(p.as_ref())
            .map(|real| real.is_dir())
            .unwrap_or(false)
    }

    /// Metadata of `p` itself (links are not followed).
    pub fn symlink_metadata(&self, p: impl AsRef<Path>) -> io::Result<std::fs::Metadata> {
        fs_err::symlink_metadata(self.join(p)).map_err(|e| self.inside(e))
    }

    /// Metadata after resolving links inside the root.
    pub fn metadata(&self, p: impl AsRef<Path>) -> io::Result<std::fs::Metadata> {
        fs_err::metadata(self.join_resolved(p.as_ref())?).map_err(|e| self.inside(e))
    }

    /// Names in directory `p` (links resolved inside the root), sorted.
    pub fn read_dir(&self, p: impl AsRef<Path>) -> io::Result<Vec<String>> {
        let real = self.join_resolved(p.as_ref())?;
        let mut names = Vec::new();
        for entry in fs_err::read_dir(&real).map_err(|e| self.inside(e))? {
            let entry = entry?;
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }

    /// The target of link `p`. Outside the real `/`, a link stub (see the
    /// module docs) answers too.
    pub fn read_link(&self, p: impl AsRef<Path>) -> io::Result<PathBuf> {
        let real = self.join(p.as_ref());
        let meta = fs_err::symlink_metadata(&real)?;
        if meta.file_type().is_symlink() {
            return fs_err::read_link(&real);
        }
        if !self.is_host
            && let Some(target) = link_stub(&real, &meta)
        {
            return Ok(target);
        }
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a symbolic link", real.display()),
        ))
    }

    /// Whether `p` is a link (or, in a snapshot, a link stub).
    pub fn is_link(&self, p: impl AsRef<Path>) -> bool {
        self.read_link(p).is_ok()
    }

    /// Resolves every link in host path `p` inside the root and returns the
    /// resulting host path (absolute, `..` applied). Components that do not
    /// exist are kept as they are (like `realpath -m`). A chain longer than
    /// 40 links is an `ELOOP` error.
    pub fn resolve(&self, p: impl AsRef<Path>) -> io::Result<PathBuf> {
        let mut pending: Vec<std::ffi::OsString> = Vec::new();
        push_components(&mut pending, p.as_ref());
        let mut current = PathBuf::from("/");
        let mut hops = 0usize;
        let mut missing = false;
        while let Some(component) = pending.pop() {
            if component == ".." {
                current.pop();
                continue;
            }
            if component == "." || component.is_empty() {
                continue;
            }
            let candidate = current.join(&component);
            if missing {
                current = candidate;
                continue;
            }
            match self.read_link(&candidate) {
                Ok(target) => {
                    hops += 1;
                    if hops > MAX_LINK_HOPS {
                        return Err(io::Error::from_raw_os_error(libc::ELOOP));
                    }
                    if target.is_absolute() {
                        current = PathBuf::from("/");
                    }
                    push_components(&mut pending, &target);
                }
                Err(error) if error.kind() == io::ErrorKind::NotFound => {
                    missing = true;
                    current = candidate;
                }
                Err(_) => current = candidate,
            }
        }
        Ok(current)
    }

    /// The real path of `p` with links resolved inside the root.
    pub fn join_resolved(&self, p: &Path) -> io::Result<PathBuf> {
        if self.is_host {
            return Ok(p.to_path_buf());
        }
        Ok(self.join(self.resolve(p)?))
    }

    /// Writes `contents` to host path `p` atomically: a temporary file in the
    /// same directory, fsync, rename, fsync of the directory. A link at `p`
    /// is replaced, never followed; the parent's links resolve inside the root.
    pub fn write_atomic(&self, p: impl AsRef<Path>, contents: &[u8], mode: u32) -> io::Result<()> {
        let p = p.as_ref();
        let parent = p.parent().unwrap_or(Path::new("/"));
        let name = p
            .file_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
        let real_parent = self.join_resolved(parent)?;
        fs_err::create_dir_all(&real_parent)?;
        let mut temp = tempfile::Builder::new()
            .prefix(".provision-")
            .tempfile_in(&real_parent)
            .map_err(|error| annotate(error, &real_parent))?;
        temp.write_all(contents)?;
        temp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(mode))?;
        temp.as_file().sync_all()?;
        let target = real_parent.join(name);
        temp.persist(&target)
            .map_err(|error| annotate(error.error, &target))?;
        fs_err::File::open(&real_parent)?.sync_all()?;
        Ok(())
    }

    /// Makes `p` a symbolic link to `target`, atomically: a link made
    /// beside it, renamed over whatever is there (never followed).
    pub fn symlink_atomic(&self, p: impl AsRef<Path>, target: impl AsRef<Path>) -> io::Result<()> {
        let p = p.as_ref();
        let parent = self.join_resolved(p.parent().unwrap_or(Path::new("/")))?;
        fs_err::create_dir_all(&parent)?;
        let name = p
            .file_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
        let real = parent.join(name);
        let temp = parent.join(format!(".provision-link-{}", std::process::id()));
        let _ = std::fs::remove_file(&temp);
        std::os::unix::fs::symlink(target.as_ref(), &temp).map_err(|e| annotate(e, &temp))?;
        std::fs::rename(&temp, &real).map_err(|e| annotate(e, &real))?;
        fs_err::File::open(&parent)?.sync_all()?;
        Ok(())
    }

    /// The real path of `p` with its parent's links resolved inside the
    /// root (never `p` itself); None when the parent does not exist.
    fn entry(&self, p: &Path) -> io::Result<Option<PathBuf>> {
        match self.join_resolved(p.parent().unwrap_or(Path::new("/"))) {
            Ok(parent) => Ok(Some(parent.join(p.file_name().unwrap_or_default()))),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Removes the file or link at `p` (not what a link points to). Absent is fine.
    pub fn remove_file(&self, p: impl AsRef<Path>) -> io::Result<()> {
        // No directory, no file: already as wanted.
        let Some(real) = self.entry(p.as_ref())? else {
            return Ok(());
        };
        match std::fs::remove_file(&real) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(annotate(error, &real)),
        }
    }

    /// Removes the directory tree at `p` (a link at `p` itself is removed,
    /// never followed). Absent is fine.
    pub fn remove_dir_all(&self, p: impl AsRef<Path>) -> io::Result<()> {
        let Some(real) = self.entry(p.as_ref())? else {
            return Ok(());
        };
        match std::fs::symlink_metadata(&real) {
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(annotate(error, &real)),
            Ok(meta) if meta.is_dir() => {
                std::fs::remove_dir_all(&real).map_err(|e| annotate(e, &real))
            }
            Ok(_) => std::fs::remove_file(&real).map_err(|e| annotate(e, &real)),
        }
    }

    /// Creates directory `p` and its parents (links resolved inside the root).
    pub fn create_dir_all(&self, p: impl AsRef<Path>) -> io::Result<()> {
        fs_err::create_dir_all(self.join_resolved(p.as_ref())?)
    }

    /// Size, mtime and inode of `p`: cheap identity of a large file (an
    /// initramfs image) for caches that must notice any rewrite.
    pub fn stamp(&self, p: impl AsRef<Path>) -> io::Result<FileStamp> {
        let meta = self.metadata(p)?;
        Ok(FileStamp {
            size: meta.size(),
            mtime_ns: meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
            inode: meta.ino(),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileStamp {
    pub size: u64,
    pub mtime_ns: i128,
    pub inode: u64,
}

fn annotate(error: io::Error, path: &Path) -> io::Error {
    io::Error::new(error.kind(), format!("{}: {error}", path.display()))
}

/// Pushes the components of `p` so that popping yields them in order.
fn push_components(stack: &mut Vec<std::ffi::OsString>, p: &Path) {
    let mut parts: Vec<std::ffi::OsString> = Vec::new();
    for component in p.components() {
        match component {
            Component::Normal(name) => parts.push(name.to_os_string()),
            Component::ParentDir => parts.push("..".into()),
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
        }
    }
    stack.extend(parts.into_iter().rev());
}

/// A regular file that holds a link target (see the module docs).
fn link_stub(real: &Path, meta: &std::fs::Metadata) -> Option<PathBuf> {
    if !meta.is_file() || meta.len() == 0 || meta.len() > LINK_STUB_MAX {
        return None;
    }
    let bytes = std::fs::read(real).ok()?;
    let text = std::str::from_utf8(&bytes).ok()?;
    let looks_like_path = !text.contains('\n')
        && !text.contains(char::is_whitespace)
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:@~".contains(c));
    looks_like_path.then(|| PathBuf::from(text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn root() -> (tempfile::TempDir, Root) {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path()).unwrap();
        (dir, root)
    }

    #[test]
    fn absolute_links_resolve_inside_the_root() {
        let (dir, root) = root();
        fs_err::create_dir_all(dir.path().join("etc/alternatives")).unwrap();
        fs_err::create_dir_all(dir.path().join("usr/local/cuda-12.8")).unwrap();
        symlink(
            "/usr/local/cuda-12.8",
            dir.path().join("etc/alternatives/cuda"),
        )
        .unwrap();
        symlink("/etc/alternatives/cuda", dir.path().join("usr/local/cuda")).unwrap();
        assert_eq!(
            root.resolve("/usr/local/cuda").unwrap(),
            PathBuf::from("/usr/local/cuda-12.8")
        );
    }

    #[test]
    fn link_loops_are_an_error_not_a_hang() {
        let (dir, root) = root();
        fs_err::create_dir_all(dir.path().join("usr/local")).unwrap();
        symlink("/usr/local/b", dir.path().join("usr/local/a")).unwrap();
        symlink("/usr/local/a", dir.path().join("usr/local/b")).unwrap();
        let error = root.resolve("/usr/local/a").unwrap_err();
        assert_eq!(error.raw_os_error(), Some(libc::ELOOP));
    }

    #[test]
    fn dotdot_never_climbs_out_of_the_root() {
        let (dir, root) = root();
        fs_err::create_dir_all(dir.path().join("a")).unwrap();
        symlink("../../../../etc", dir.path().join("a/up")).unwrap();
        assert_eq!(root.resolve("/a/up").unwrap(), PathBuf::from("/etc"));
        assert!(
            root.join_resolved(Path::new("/a/up"))
                .unwrap()
                .starts_with(dir.path())
        );
    }

    #[test]
    fn link_stubs_are_links_in_snapshots() {
        let (dir, root) = root();
        fs_err::create_dir_all(dir.path().join("usr/local/cuda-13.0")).unwrap();
        fs_err::write(dir.path().join("usr/local/cuda"), "/usr/local/cuda-13.0").unwrap();
        fs_err::write(dir.path().join("usr/local/note"), "text\n").unwrap();
        assert_eq!(
            root.resolve("/usr/local/cuda").unwrap(),
            PathBuf::from("/usr/local/cuda-13.0")
        );
        assert!(root.read_link("/usr/local/note").is_err());
    }

    #[test]
    fn atomic_write_replaces_a_link_instead_of_following_it() {
        let (dir, root) = root();
        fs_err::create_dir_all(dir.path().join("etc")).unwrap();
        fs_err::write(dir.path().join("victim"), "keep").unwrap();
        symlink("/victim", dir.path().join("etc/conf")).unwrap();
        root.write_atomic("/etc/conf", b"new", 0o644).unwrap();
        assert_eq!(
            fs_err::read_to_string(dir.path().join("victim")).unwrap(),
            "keep"
        );
        assert_eq!(
            fs_err::read_to_string(dir.path().join("etc/conf")).unwrap(),
            "new"
        );
        let leftovers: Vec<_> = fs_err::read_dir(dir.path().join("etc")).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file is left behind");
    }
}
