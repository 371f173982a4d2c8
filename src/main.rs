//! The binary: parse the command line, call the library, print, exit.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;

use provision::cli::{BundleArgs, Cli, Command, Common};
use provision::engine::{self, Exit, Report};
use provision::facts::{Facts, Options};
use provision::host::{Host, Root, SystemRunner};
use provision::output::{self, Style, TerminalProgress};
use provision::plan::Plan;
use provision::progress::{Progress, Silent};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return usage(&error),
    };
    let exit = run(cli);
    ExitCode::from(exit as u8)
}

/// A command line clap refused: its message, and the usage exit code
/// (help and version asked for are a success).
fn usage(error: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    let _ = error.print();
    match error.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => ExitCode::SUCCESS,
        _ => ExitCode::from(Exit::Usage as u8),
    }
}

/// Writes a report to stdout. A reader that went away (`| head`) ends the
/// output quietly: the run's own exit code stands.
fn out(text: &str) {
    use std::io::Write;
    let text = output::plain(text);
    let mut stdout = std::io::stdout().lock();
    let written = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush());
    if let Err(error) = written
        && error.kind() != std::io::ErrorKind::BrokenPipe
    {
        let _ = writeln!(std::io::stderr(), "error: cannot write to stdout: {error}");
    }
}

/// Writes people's messages to stderr; a closed stderr is ignored.
fn out_err(text: &str) {
    use std::io::Write;
    let _ = std::io::stderr()
        .lock()
        .write_all(output::plain(text).as_bytes());
}

fn progress_for(common: &Common) -> Arc<dyn Progress> {
    if common.json {
        Arc::new(Silent)
    } else {
        Arc::new(TerminalProgress::new())
    }
}

/// Host for `root` (or `/`); changes are allowed only for apply/rollback.
/// The host a read-only verb reads, or its failure already printed.
fn read_only(common: &Common, verb: &str) -> Result<Host, Exit> {
    host(common, Arc::new(Silent), false)
        .map(|(host, _)| host)
        .map_err(|message| fail(message, verb, common))
}

fn host(
    common: &Common,
    progress: Arc<dyn Progress>,
    allow_changes: bool,
) -> Result<(Host, Arc<SystemRunner>), String> {
    let root = match &common.root {
        Some(dir) => {
            Root::new(dir).map_err(|error| format!("--root {}: {error}", dir.display()))?
        }
        None => Root::host(),
    };
    let runner = Arc::new(SystemRunner::new(root.path(), progress, allow_changes));
    let host = Host {
        root,
        runner: Box::new(SharedRunner(runner.clone())),
    };
    Ok((host, runner))
}

/// Lets the binary keep a handle on the runner (to point its log) while the
/// host owns it.
struct SharedRunner(Arc<SystemRunner>);

impl provision::host::Runner for SharedRunner {
    fn run(
        &self,
        cmd: &provision::host::Cmd,
    ) -> Result<provision::host::Output, provision::host::RunError> {
        self.0.run(cmd)
    }
    fn records(&self) -> Vec<provision::host::CommandRecord> {
        self.0.records()
    }
    fn log_path(&self) -> Option<std::path::PathBuf> {
        self.0.log_path()
    }
    fn note(&self, line: &str) {
        self.0.note(line)
    }
}

fn print_report(report: &Report, verb: &str, common: &Common) {
    if common.json {
        out(&format!("{}\n", output::report_json(report)));
    } else {
        let text = output::human(report, verb, Style::for_stdout());
        if report.failed {
            out_err(&text);
        } else {
            out(&text);
        }
    }
}

/// A verb that could not run. plan, apply and rollback answer in their
/// report's shape (Ansible reads it); every other verb's `--json` error is
/// `{"changed": false, "failed": true, "msg": ...}` (docs/json.md).
fn fail(message: String, verb: &str, common: &Common) -> Exit {
    if matches!(verb, "plan" | "apply" | "rollback") || !common.json {
        let report = Report::failure(message);
        print_report(&report, verb, common);
    } else {
        out(&format!("{}\n", output::error_json(verb, &message)));
    }
    Exit::Failure
}

fn load_plan(path: &Path, verb: &str, common: &Common) -> Result<Plan, Exit> {
    Plan::load(path).map_err(|error| fail(provision::error::chain(&error), verb, common))
}

fn run(cli: Cli) -> Exit {
    match cli.command {
        Command::Detect {
            common,
            initramfs,
            origins,
            packages,
        } => detect(&common, initramfs, origins, packages),
        Command::Plan {
            plan,
            common,
            bundle,
            detailed_exitcode,
        } => plan_verb(&plan, &common, &bundle, detailed_exitcode),
        Command::Apply {
            plan,
            common,
            bundle,
            lock_timeout,
        } => apply(&plan, &common, &bundle, lock_timeout),
        Command::Bundle {
            plan,
            target,
            output,
            json,
        } => bundle_verb(&plan, target.into(), output, json),
        Command::Compat {
            driver,
            cuda,
            torch,
            gpu,
            flavor,
            common,
        } => compat(
            provision::compat::ask::Request {
                driver,
                cuda,
                torch,
                gpu,
                flavor,
            },
            &common,
        ),
        Command::Fetch {
            url,
            sha256,
            cache,
            json,
        } => fetch(&url, &sha256, cache, json),
        Command::Doctor { common } => doctor(&common),
        Command::Verify { common, no_compute } => verify(&common, !no_compute),
        Command::Metrics { common, textfile } => metrics(&common, textfile.as_deref()),
        Command::Recommend { cuda, gpu, common } => recommend(cuda, &gpu, &common),
        Command::History { common } => history(&common),
        Command::Rollback {
            common,
            lock_timeout,
        } => rollback(&common, lock_timeout),
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut command, "provision", &mut script);
            out(&String::from_utf8_lossy(&script));
            Exit::Success
        }
        Command::Manpage { dir } => {
            let command = <Cli as clap::CommandFactory>::command();
            match clap_mangen::generate_to(command, &dir) {
                Ok(()) => Exit::Success,
                Err(error) => {
                    eprintln!(
                        "error: cannot write the man pages into {}: {error}",
                        dir.display()
                    );
                    Exit::Failure
                }
            }
        }
    }
}

fn detect(common: &Common, initramfs: bool, origins: bool, packages: bool) -> Exit {
    let host = match read_only(common, "detect") {
        Ok(host) => host,
        Err(exit) => return exit,
    };
    let facts = Facts::gather(
        &host,
        Options {
            list_initramfs: initramfs,
            all_packages: packages,
            origins,
        },
    );
    if common.json && packages {
        out(&format!(
            "{}\n",
            output::json(&output::WithInstalled::of(&facts))
        ));
    } else if common.json {
        out(&format!("{}\n", output::json(&facts)));
    } else {
        out(&output::facts_human(&facts, Style::for_stdout()));
    }
    Exit::Success
}

/// The plan with its bundle checked (`plan`) or unpacked (`apply`),
/// before anything looks at the host.
fn with_bundle(
    mut plan: Plan,
    args: &BundleArgs,
    unpack: bool,
    verb: &str,
    common: &Common,
) -> Result<Plan, Exit> {
    let named = match &args.bundle {
        Some(path) => Some((path.clone(), args.bundle_sha256.clone())),
        None => plan.bundle_ref(),
    };
    let Some((path, sha256)) = named else {
        return Ok(plan);
    };
    let opened = if unpack {
        provision::bundle::open(&path, sha256.as_deref())
    } else {
        provision::bundle::check(&path, sha256.as_deref())
    };
    match opened {
        Ok(opened) => {
            plan.bundle = Some(opened);
            Ok(plan)
        }
        Err(error) => Err(fail(provision::error::chain(&error), verb, common)),
    }
}

fn plan_verb(plan: &Path, common: &Common, bundle: &BundleArgs, detailed_exitcode: bool) -> Exit {
    let plan = match load_plan(plan, "plan", common)
        .and_then(|plan| with_bundle(plan, bundle, false, "plan", common))
    {
        Ok(plan) => plan,
        Err(exit) => return exit,
    };
    let host = match read_only(common, "plan") {
        Ok(host) => host,
        Err(exit) => return exit,
    };
    let report = engine::plan(&host, &plan, &Silent);
    print_report(&report, "plan", common);
    if report.failed {
        report.exit
    } else if detailed_exitcode && report.changed {
        Exit::Pending
    } else {
        Exit::Success
    }
}

fn apply(plan: &Path, common: &Common, bundle: &BundleArgs, lock_timeout: u64) -> Exit {
    let plan = match load_plan(plan, "apply", common)
        .and_then(|plan| with_bundle(plan, bundle, true, "apply", common))
    {
        Ok(plan) => plan,
        Err(exit) => return exit,
    };
    let progress = progress_for(common);
    let (host, runner) = match host(common, progress.clone(), true) {
        Ok(host) => host,
        Err(message) => return fail(message, "apply", common),
    };
    let log_to = |path: &Path| {
        if let Err(error) = runner.log_to(path) {
            progress.warn(&format!("cannot write the log {}: {error}", path.display()));
        }
    };
    let report = engine::apply(
        &host,
        &plan,
        progress.as_ref(),
        &log_to,
        std::time::Duration::from_secs(lock_timeout),
    );
    refresh_metrics(&host, plan.metrics.as_deref(), progress.as_ref());
    print_report(&report, "apply", common);
    report.exit
}

/// `provision bundle`: resolve, download, write the tar, print its hash.
fn bundle_verb(
    plan: &Path,
    sources: provision::bundle::build::Sources,
    output: std::path::PathBuf,
    json: bool,
) -> Exit {
    let common = Common { root: None, json };
    let plan = match load_plan(plan, "bundle", &common) {
        Ok(plan) => plan,
        Err(exit) => return exit,
    };
    let progress = progress_for(&common);
    let runner = SystemRunner::new(Path::new("/"), progress.clone(), false);
    let request = provision::bundle::build::Request {
        plan: &plan,
        sources,
        output,
    };
    let started = std::time::Instant::now();
    match provision::bundle::build::build(&request, &runner, progress.as_ref()) {
        Ok(built) => {
            if json {
                let mut value = serde_json::to_value(&built).unwrap_or_default();
                value["seconds"] = serde_json::json!(started.elapsed().as_secs_f64());
                out(&format!(
                    "{}\n",
                    serde_json::to_string_pretty(&value).unwrap_or_default()
                ));
            } else {
                let hosts = &built.manifest.hosts;
                let hosts = if hosts.is_empty() {
                    String::new()
                } else {
                    format!("hosts: {}\n", hosts.join(", "))
                };
                out(&format!(
                    "{}: {} package(s) for {}, {:.1} MB, in {:.0} s\nkernels: {}\n{hosts}manifest sha256 {}\n",
                    built.output.display(),
                    built.packages,
                    built.manifest.release,
                    built.bytes as f64 / 1e6,
                    started.elapsed().as_secs_f64(),
                    built.manifest.kernels.join(", "),
                    built.manifest_sha256
                ));
            }
            Exit::Success
        }
        Err(error) => fail(provision::error::chain(&error), "bundle", &common),
    }
}

fn rollback(common: &Common, lock_timeout: u64) -> Exit {
    let progress = progress_for(common);
    let (host, runner) = match host(common, progress.clone(), true) {
        Ok(host) => host,
        Err(message) => return fail(message, "rollback", common),
    };
    let log_to = |path: &Path| {
        if let Err(error) = runner.log_to(path) {
            progress.warn(&format!("cannot write the log {}: {error}", path.display()));
        }
    };
    let report = engine::rollback(
        &host,
        progress.as_ref(),
        &log_to,
        std::time::Duration::from_secs(lock_timeout),
    );
    let configured = provision::metrics::configured_by_latest(&host);
    refresh_metrics(&host, configured.as_deref(), progress.as_ref());
    print_report(&report, "rollback", common);
    report.exit
}

fn fetch(url: &str, sha256: &str, cache: std::path::PathBuf, json: bool) -> Exit {
    let progress: Arc<dyn Progress> = if json {
        Arc::new(Silent)
    } else {
        Arc::new(TerminalProgress::new())
    };
    let fetcher = provision::fetch::Fetcher::new(cache, progress);
    match fetcher.fetch(url, sha256) {
        Ok(fetched) => {
            if json {
                out(&format!("{}\n", output::json(&fetched)));
            } else {
                out(&format!(
                    "{} ({} bytes, sha256 {}{})\n",
                    fetched.path.display(),
                    fetched.bytes,
                    fetched.sha256,
                    if fetched.cached {
                        ", from the cache"
                    } else {
                        ""
                    }
                ));
            }
            Exit::Success
        }
        Err(error) => {
            let common = Common { root: None, json };
            fail(provision::error::chain(&error), "fetch", &common)
        }
    }
}

fn doctor(common: &Common) -> Exit {
    let host = match read_only(common, "doctor") {
        Ok(host) => host,
        Err(exit) => return exit,
    };
    let facts = Facts::gather(
        &host,
        Options {
            list_initramfs: true,
            ..Options::default()
        },
    );
    let report = provision::doctor::run(&host, &facts);
    if common.json {
        out(&format!("{}\n", output::json(&report)));
    } else {
        out(&output::doctor_human(&report, Style::for_stdout()));
    }
    if report.failed {
        Exit::Failure
    } else {
        Exit::Success
    }
}

/// `provision metrics`: the exposition on stdout, or DIR/provision.prom.
fn metrics(common: &Common, textfile: Option<&Path>) -> Exit {
    use provision::metrics;
    let host = match read_only(common, "metrics") {
        Ok(host) => host,
        Err(exit) => return exit,
    };
    let facts = Facts::gather(&host, Options::default());
    let text = metrics::exposition(&metrics::collect(&host, &facts, metrics::drift(&host)));
    match textfile {
        None => {
            out(&text);
            Exit::Success
        }
        Some(dir) => match metrics::write_textfile(&host, dir, &text) {
            Ok(()) => Exit::Success,
            Err(error) => fail(
                format!("cannot write {}/provision.prom: {error}", dir.display()),
                "metrics",
                common,
            ),
        },
    }
}

/// After apply and rollback: node_exporter's textfile, where it is read.
fn refresh_metrics(host: &Host, configured: Option<&Path>, progress: &dyn Progress) {
    if let Some(Err(error)) = provision::metrics::refresh(host, configured) {
        progress.warn(&format!("cannot refresh the node's metrics: {error}"));
    }
}

/// `provision verify`: the host's health, read-only.
fn verify(common: &Common, compute: bool) -> Exit {
    let host = match read_only(common, "verify") {
        Ok(host) => host,
        Err(exit) => return exit,
    };
    let facts = Facts::gather(&host, Options::default());
    let result = provision::step::verify::standalone(&host, &facts, compute);
    if common.json {
        out(&format!("{}\n", output::json(&result)));
    } else {
        out(&output::verify_human(&result, Style::for_stdout()));
    }
    if result.passed {
        Exit::Success
    } else {
        Exit::Failure
    }
}

fn recommend(cuda: Option<String>, gpus: &[String], common: &Common) -> Exit {
    use provision::compat::recommend;
    let named = gpus
        .iter()
        .map(|g| provision::compat::rules::find_gpu(g).map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>();
    let named = match named {
        Ok(named) => named,
        Err(message) => return fail(message, "recommend", common),
    };
    let needs = if named.is_empty() {
        let host = match read_only(common, "recommend") {
            Ok(host) => host,
            Err(exit) => return exit,
        };
        recommend::needs_of(&Facts::gather(&host, Options::default()), cuda)
    } else {
        Ok(recommend::Needs {
            gpus: named.iter().collect(),
            toolkit: cuda,
            installed: None,
            carried: None,
        })
    };
    match needs.and_then(|needs| recommend::recommend(&needs)) {
        Ok(choice) => {
            if common.json {
                out(&format!("{}\n", output::json(&choice)));
            } else {
                out(&output::recommend_human(&choice, Style::for_stdout()));
            }
            Exit::Success
        }
        Err(message) => fail(message, "recommend", common),
    }
}

fn history(common: &Common) -> Exit {
    let host = match read_only(common, "history") {
        Ok(host) => host,
        Err(exit) => return exit,
    };
    let history = engine::history(&host);
    if common.json {
        out(&format!("{}\n", output::json(&history)));
    } else {
        out(&output::history_human(&history, Style::for_stdout()));
    }
    if history.failed {
        Exit::Failure
    } else {
        Exit::Success
    }
}

/// `provision compat`: the question the flags ask, on the host when it
/// is read (its driver, flavour and GPUs fill in what the flags leave out).
fn compat(request: provision::compat::ask::Request, common: &Common) -> Exit {
    use provision::compat::ask::{Reply, ask};
    let facts = if request.reads_host(common.root.is_some()) {
        let host = match read_only(common, "compat") {
            Ok(host) => host,
            Err(exit) => return exit,
        };
        Some(Facts::gather(&host, Options::default()))
    } else {
        None
    };
    let reply = match ask(&request, facts.as_ref()) {
        Ok(reply) => reply,
        Err(error) => return fail(error.to_string(), "compat", common),
    };
    let style = Style::for_stdout();
    let text = match (&reply, common.json) {
        (Reply::Answer(a), true) => output::json(a),
        (Reply::Answer(a), false) => output::compat_human(a, style),
        (Reply::Wheels(w), true) => output::json(w),
        (Reply::Wheels(w), false) => output::wheels_human(w, style),
        (Reply::Line(l), true) => output::json(l),
        (Reply::Line(l), false) => output::line_human(l, style),
        (Reply::Host(h), true) => output::json(h),
        (Reply::Host(h), false) => output::compat_host_human(h, style),
        (Reply::Needs(n), true) => output::json(n),
        (Reply::Needs(n), false) => output::needs_human(n, style),
    };
    out(&if common.json {
        format!("{text}\n")
    } else {
        text
    });
    if reply.failed() {
        Exit::Failure
    } else {
        Exit::Success
    }
}
