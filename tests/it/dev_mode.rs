//! `trousseau-proxy dev --users FILE`: extra demo users come from YAML, and a mistake in that file
//! stops dev mode with a message that names the file, the key and the line. (Signing in as a
//! `--users` user in a real browser is in `tests/it/browser.rs`.)

use std::io::Read as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_trousseau-proxy");

#[test]
fn a_typo_in_the_users_file_is_refused_with_its_line() {
    let dir = std::env::temp_dir().join(format!("trousseau-dev-users-typo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("users.yaml");
    std::fs::write(&file, "- sub: 5e0c9a7b-1d2f-4c3b-9a8e-7f6d5c4b3a21\n  emial: camille@example.com\n").unwrap();
    let mut child = Command::new(BIN)
        .args(["dev", "--listen", "127.0.0.1:0", "--users"])
        .arg(&file)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run trousseau-proxy dev");
    // Were the file accepted, dev mode would run until stopped: give it ten seconds to refuse.
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("dev mode started despite a broken --users file");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!status.success(), "dev mode must not start with a broken --users file");
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(err.contains("users.yaml"), "names the file: {err}");
    assert!(err.contains("emial") && err.contains("line 2"), "names the key and its line: {err}");
}
