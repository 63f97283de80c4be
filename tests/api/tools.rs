//! Tools the suite fetches for itself on a fresh machine, cached under `target/`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Cargo's target directory: `CARGO_TARGET_DIR`, else `target/` beside `Cargo.toml`.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("target"),
        PathBuf::from,
    )
}

/// A virtualenv under `target/` with `requirement` (pinned, `name==version`) installed
/// from PyPI, made once; returns its root. A marker written after the install says it is
/// complete, so an interrupted install is redone rather than used half-made.
pub fn python_venv(requirement: &str) -> PathBuf {
    // Tests run in parallel threads; two installing one venv would remove each other's.
    static INSTALLING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = INSTALLING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let venv = target_dir().join(requirement.replace("==", "-"));
    let complete = venv.join(".installed");
    if complete.is_file() {
        return venv;
    }
    let _ = std::fs::remove_dir_all(&venv);
    let made = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .expect("python3 -m venv (is Python 3 installed?)");
    assert!(made.success(), "python3 -m venv failed");
    let installed = Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", requirement])
        .status()
        .expect("run pip");
    assert!(installed.success(), "pip install {requirement} failed");
    std::fs::write(&complete, requirement).expect("mark the install complete");
    venv
}
