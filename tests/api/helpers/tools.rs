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

/// `binary` from the `PATH`, installed with apt-get from Debian's `package` when missing
/// (the suite runs as root on the CI machines, as here).
pub fn debian_binary(binary: &str, package: &str) -> PathBuf {
    let found = || {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(binary))
                .find(|path| path.is_file())
        })
    };
    if let Some(path) = found() {
        return path;
    }
    // Tests run in parallel threads; two apt-get runs would wait on each other's lock.
    static INSTALLING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = INSTALLING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(path) = found() {
        return path;
    }
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .unwrap_or_else(|err| panic!("run apt-get to install {package}: {err}"))
            .success()
    };
    let install = ["install", "-y", "--no-install-recommends", package];
    // A fresh container may have no package lists yet: fetch them once and try again.
    let installed = apt(&install) || (apt(&["update"]) && apt(&install));
    assert!(installed, "apt-get install {package} failed");
    found().unwrap_or_else(|| panic!("{binary} on PATH after apt-get install {package}"))
}
