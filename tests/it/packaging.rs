//! `packaging/trousseau-proxy.service`, the systemd unit of the README's "Beside a legacy app on a
//! VM": checked by systemd's own verifier and security analyzer, pointed at the built binary.

use std::path::Path;
use std::process::Command;

use crate::support::parts;

const UNIT: &str = include_str!("../../packaging/trousseau-proxy.service");

/// `systemd-analyze` on a copy of `unit` whose commands run the built binary; its messages.
fn analyze(args: &[&str], unit: &str, name: &str) -> String {
    let dir = std::env::temp_dir().join(format!("tp-unit-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.service"));
    std::fs::write(&path, unit.replace("/usr/local/bin/trousseau-proxy", env!("CARGO_BIN_EXE_trousseau-proxy"))).unwrap();
    let out = Command::new("/usr/bin/systemd-analyze").args(args).arg(&path).output().expect("systemd-analyze");
    let _ = std::fs::remove_dir_all(&dir);
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn the_systemd_unit_verifies_and_is_hardened() {
    if !parts::require_program(&parts::SYSTEMD_ANALYZE, Path::new("/usr/bin/systemd-analyze")) {
        return;
    }
    let verified = analyze(&["verify"], UNIT, "trousseau-proxy");
    assert!(verified.trim().is_empty(), "systemd-analyze verify has something to say:\n{verified}");
    // The check sees mistakes: a misspelled key and a bad value are reported.
    let broken = UNIT.replace("NoNewPrivileges=yes", "NoNewPrivilege=yes").replace("ProtectSystem=strict", "ProtectSystem=stric");
    let complaints = analyze(&["verify"], &broken, "broken");
    assert!(complaints.contains("NoNewPrivilege") && complaints.contains("stric"), "{complaints}");

    let security = analyze(&["security", "--offline=yes"], UNIT, "trousseau-proxy");
    let exposure: f64 = security
        .lines()
        .find_map(|l| l.split("Overall exposure level for trousseau-proxy.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{security}"));
    assert!(exposure <= 2.0, "exposure {exposure} (0 = locked down, 10 = unprotected):\n{security}");
    for line in ["ExecReload=/bin/kill -HUP $MAINPID", "AmbientCapabilities=CAP_NET_BIND_SERVICE", "CapabilityBoundingSet=CAP_NET_BIND_SERVICE", "User=trousseau-proxy"] {
        assert!(UNIT.lines().any(|l| l == line), "{line}");
    }
}
