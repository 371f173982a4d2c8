//! `Runner`: the process door. Every program provision starts is a [`Cmd`]
//! value run through a `Runner`, so dry-run output, the journal, the log and
//! the tests all show the same command line.
//!
//! Under `--root DIR`, [`SystemRunner`] runs each command chrooted into DIR,
//! in a private mount namespace of its own where `/proc`, `/sys`, `/dev` and
//! the host's `resolv.conf` are mounted for the command's lifetime. The
//! mounts die with the namespace when the command exits, so nothing is ever
//! left mounted on the host, even if provision itself is killed.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::chroot::{ChrootPlan, ResolvConfPlaceholder};
use crate::progress::Progress;

/// Lines of output kept for an error message.
const TAIL_LINES: usize = 25;

/// Whether a command changes the host. Read-only commands may run during
/// `plan` and `detect`; changing ones only during `apply` and `rollback`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    Read,
    Change,
}

/// A command: a program and its arguments, never a shell string.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Cmd {
    pub program: String,
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<(String, String)>,
    pub effect: Effect,
    /// Runs on the machine itself even under `--root`: the command is told
    /// the root by its own option (`dnf --installroot`, `rpm --root`,
    /// `ldconfig -r`), for roots that carry no such tool (an image being
    /// built from outside).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub outside: bool,
    /// A directory of the machine the command sees as the root's /tmp
    /// (chrooted commands only): files provision prepares for it without
    /// writing into the root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scratch: Option<PathBuf>,
}

impl Cmd {
    /// A command that only reads.
    pub fn read(program: impl Into<String>) -> Cmd {
        Cmd {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            effect: Effect::Read,
            outside: false,
            scratch: None,
        }
    }

    /// Sees `dir` (a directory of the machine) as the root's /tmp.
    pub fn scratch(mut self, dir: impl Into<PathBuf>) -> Cmd {
        self.scratch = Some(dir.into());
        self
    }

    /// Runs on the machine itself, not chrooted (see [`Cmd::outside`]).
    pub fn outside(mut self) -> Cmd {
        self.outside = true;
        self
    }

    /// A command that changes the host.
    pub fn change(program: impl Into<String>) -> Cmd {
        Cmd {
            effect: Effect::Change,
            ..Cmd::read(program)
        }
    }

    pub fn arg(mut self, arg: impl Into<String>) -> Cmd {
        self.args.push(arg.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Cmd {
        self.env.push((key.into(), value.into()));
        self
    }

    /// The command as a user would type it (arguments shell-quoted).
    pub fn display(&self) -> String {
        let mut parts: Vec<String> = self
            .env
            .iter()
            .map(|(key, value)| format!("{key}={}", quote(value)))
            .collect();
        parts.push(quote(&self.program));
        parts.extend(self.args.iter().map(|arg| quote(arg)));
        parts.join(" ")
    }
}

impl std::fmt::Display for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.display())
    }
}

fn quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:+,@%^".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// What a finished command left behind.
#[derive(Debug, Clone, Default)]
pub struct Output {
    /// Exit code; `None` when killed by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// The last lines of stdout and stderr together, in arrival order.
    pub tail: String,
    pub duration: Duration,
}

impl Output {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("could not start `{command}`: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}){}\n{tail}", log.as_ref().map(|p| format!("; full output in {}", p.display())).unwrap_or_default())]
    Failed {
        command: String,
        status: String,
        tail: String,
        log: Option<PathBuf>,
    },
    #[error("`{command}` is not allowed here: {reason}")]
    Refused { command: String, reason: String },
}

/// One command as it ran, for reports and tests.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CommandRecord {
    pub command: String,
    pub effect: Effect,
    pub exit: Option<i32>,
    pub seconds: f64,
}

pub trait Runner: Send + Sync {
    /// Runs `cmd` to completion. A non-zero exit is an `Ok` output; only a
    /// command that could not run at all is an error. See [`run_checked`].
    fn run(&self, cmd: &Cmd) -> Result<Output, RunError>;

    /// Every command run so far.
    fn records(&self) -> Vec<CommandRecord> {
        Vec::new()
    }

    /// Where the full output of commands goes, when anywhere.
    fn log_path(&self) -> Option<PathBuf> {
        None
    }

    /// Writes `line` to the log beside the commands' output: what
    /// provision did itself (a download and each attempt of it).
    fn note(&self, _line: &str) {}
}

/// Runs `cmd` and turns a non-zero exit into [`RunError::Failed`] carrying
/// the last lines of output and the log's path.
pub fn run_checked(runner: &dyn Runner, cmd: &Cmd) -> Result<Output, RunError> {
    let output = runner.run(cmd)?;
    if output.success() {
        return Ok(output);
    }
    Err(RunError::Failed {
        command: cmd.display(),
        status: match output.code {
            Some(code) => format!("exit code {code}"),
            None => "killed by a signal".to_string(),
        },
        tail: output.tail.clone(),
        log: runner.log_path(),
    })
}

/// Runs commands on the machine itself, or chrooted into a root directory.
pub struct SystemRunner {
    root: PathBuf,
    chroot: bool,
    log: Mutex<Option<(PathBuf, fs_err::File)>>,
    records: Mutex<Vec<CommandRecord>>,
    progress: Arc<dyn Progress>,
    allow_changes: bool,
}

impl SystemRunner {
    /// `root` "/" runs on the host; any other directory is chrooted into.
    /// With `allow_changes` false, a [`Effect::Change`] command is refused:
    /// `plan` and `detect` cannot change the host even by mistake.
    pub fn new(root: &Path, progress: Arc<dyn Progress>, allow_changes: bool) -> SystemRunner {
        SystemRunner {
            root: root.to_path_buf(),
            chroot: root != Path::new("/"),
            log: Mutex::new(None),
            records: Mutex::new(Vec::new()),
            progress,
            allow_changes,
        }
    }

    /// Sends the full output of every later command to `path` (appending).
    pub fn log_to(&self, path: &Path) -> std::io::Result<()> {
        if let Some(parent) = path.parent() {
            fs_err::create_dir_all(parent)?;
        }
        let file = fs_err::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        *self.log.lock().expect("log lock") = Some((path.to_path_buf(), file));
        Ok(())
    }

    fn log_line(&self, line: &str) {
        use std::io::Write;
        if let Some((_, file)) = self.log.lock().expect("log lock").as_mut() {
            let _ = writeln!(file, "{line}");
        }
    }

    fn command(&self, cmd: &Cmd) -> std::io::Result<(Command, Scratch)> {
        let mut command = Command::new(&cmd.program);
        command.args(&cmd.args);
        command.env_clear();
        command.env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        );
        command.env("LC_ALL", "C.UTF-8");
        for key in [
            "http_proxy",
            "https_proxy",
            "no_proxy",
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "NO_PROXY",
        ] {
            if let Ok(value) = std::env::var(key) {
                command.env(key, value);
            }
        }
        for (key, value) in &cmd.env {
            command.env(key, value);
        }
        command.stdin(Stdio::null());
        command.stdout(Stdio::piped());
        command.stderr(Stdio::piped());
        let mut placeholder = None;
        let mut temporary = None;
        // A command that only reads sees the root through a throwaway
        // overlay (see chroot.rs): it leaves the root exactly as it was.
        let overlay = cmd.effect == Effect::Read && nix::unistd::geteuid().is_root();
        if self.chroot && !cmd.outside {
            let mut plan = ChrootPlan::new(&self.root)?;
            if let Some(scratch) = &cmd.scratch {
                plan.scratch(scratch, &self.root)?;
            }
            if cmd.effect == Effect::Read {
                // Only changing commands (apt-get update, a DKMS build)
                // need DNS.
                plan.resolv = None;
            } else if plan.placeholder {
                // A bind mount needs a target; an image being baked often has
                // no resolv.conf. Where one cannot be made (a read-only
                // snapshot), the command simply runs without DNS.
                match ResolvConfPlaceholder::make(&self.root) {
                    Ok(made) => placeholder = Some(made),
                    Err(_) => plan.resolv = None,
                }
            }
            if overlay {
                let dir = tempfile::Builder::new()
                    .prefix("provision-read-")
                    .tempdir()?;
                plan.overlay(&self.root, dir.path())?;
                temporary = Some(dir);
            }
            plan.prepare()?;
            // SAFETY: the closure only makes async-signal-safe system calls
            // with arguments prepared before the fork.
            unsafe {
                command.pre_exec(move || plan.enter());
            }
        } else if self.chroot && overlay {
            let mut plan = ChrootPlan::outside(&self.root)?;
            let dir = tempfile::Builder::new()
                .prefix("provision-read-")
                .tempdir()?;
            plan.overlay(&self.root, dir.path())?;
            temporary = Some(dir);
            plan.prepare()?;
            // SAFETY: as above.
            unsafe {
                command.pre_exec(move || plan.enter());
            }
        }
        Ok((command, Scratch(placeholder, temporary)))
    }
}

/// What a command needs while it runs (the resolv.conf placeholder, a
/// scratch /tmp), removed once it has ended.
struct Scratch(
    #[allow(dead_code)] Option<ResolvConfPlaceholder>,
    #[allow(dead_code)] Option<tempfile::TempDir>,
);

impl Runner for SystemRunner {
    fn note(&self, line: &str) {
        self.log_line(&format!("# {line}"));
    }

    fn run(&self, cmd: &Cmd) -> Result<Output, RunError> {
        let display = cmd.display();
        if cmd.effect == Effect::Change && !self.allow_changes {
            return Err(RunError::Refused {
                command: display,
                reason: "this command only reads; changes happen in `provision apply`".into(),
            });
        }
        let started = Instant::now();
        self.progress.command_started(&display);
        self.log_line(&format!("$ {display}"));
        let spawn_error = |source| RunError::Spawn {
            command: display.clone(),
            source,
        };
        let (mut command, _scratch) = self.command(cmd).map_err(spawn_error)?;
        let mut child = command.spawn().map_err(spawn_error)?;
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let tail = Mutex::new(std::collections::VecDeque::<String>::new());
        let (out_text, err_text) = std::thread::scope(|scope| {
            let pump = |stream: Box<dyn Read + Send>| {
                let tail = &tail;
                scope.spawn(move || {
                    let mut text = String::new();
                    let mut reader = BufReader::new(stream);
                    let mut line = Vec::new();
                    while reader.read_until(b'\n', &mut line).unwrap_or(0) > 0 {
                        let decoded = String::from_utf8_lossy(&line);
                        let trimmed = decoded.trim_end_matches(['\n', '\r']);
                        self.log_line(trimmed);
                        self.progress.command_line(trimmed);
                        {
                            let mut tail = tail.lock().expect("tail lock");
                            if tail.len() == TAIL_LINES {
                                tail.pop_front();
                            }
                            tail.push_back(trimmed.to_string());
                        }
                        text.push_str(&decoded);
                        line.clear();
                    }
                    text
                })
            };
            let out = pump(Box::new(stdout));
            let err = pump(Box::new(stderr));
            (
                out.join().unwrap_or_default(),
                err.join().unwrap_or_default(),
            )
        });
        let status = child.wait().map_err(spawn_error)?;
        let duration = started.elapsed();
        self.log_line(&format!(
            "# exit {} after {:.2}s",
            status
                .code()
                .map(|c| c.to_string())
                .unwrap_or_else(|| "signal".into()),
            duration.as_secs_f64()
        ));
        self.records
            .lock()
            .expect("records lock")
            .push(CommandRecord {
                command: display,
                effect: cmd.effect,
                exit: status.code(),
                seconds: duration.as_secs_f64(),
            });
        let tail = tail.into_inner().expect("tail lock");
        Ok(Output {
            code: status.code(),
            stdout: out_text,
            stderr: err_text,
            tail: tail.into_iter().collect::<Vec<_>>().join("\n"),
            duration,
        })
    }

    fn records(&self) -> Vec<CommandRecord> {
        self.records.lock().expect("records lock").clone()
    }

    fn log_path(&self) -> Option<PathBuf> {
        self.log
            .lock()
            .expect("log lock")
            .as_ref()
            .map(|(path, _)| path.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_quotes_what_a_shell_would_split() {
        let cmd = Cmd::change("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args([
                "install",
                "-y",
                "nvidia-driver=535.247.01-1~deb12u1",
                "it's",
            ]);
        assert_eq!(
            cmd.display(),
            "DEBIAN_FRONTEND=noninteractive apt-get install -y 'nvidia-driver=535.247.01-1~deb12u1' 'it'\\''s'"
        );
    }

    #[test]
    fn read_only_runner_refuses_changes() {
        let runner = SystemRunner::new(Path::new("/"), Arc::new(crate::progress::Silent), false);
        let error = runner.run(&Cmd::change("true")).unwrap_err();
        assert!(matches!(error, RunError::Refused { .. }));
        assert!(runner.records().is_empty(), "a refused command never ran");
    }

    #[test]
    fn failure_carries_the_command_and_its_last_lines() {
        let runner = SystemRunner::new(Path::new("/"), Arc::new(crate::progress::Silent), true);
        let cmd = Cmd::read("sh").args(["-c", "echo first; echo oops >&2; exit 3"]);
        let error = run_checked(&runner, &cmd).unwrap_err().to_string();
        assert!(error.contains("exit code 3"), "{error}");
        assert!(error.contains("oops"), "{error}");
        assert!(error.contains("sh -c"), "{error}");
    }
}
