//! Helpers for tests that run the `loadtest` binary as a user does.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The built binary.
pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_loadtest"))
}

/// A scratch directory of one test, removed when the test ends (passed or
/// not), so repeated runs do not pile up directories in the temp dir.
pub struct TempDir(PathBuf);

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fresh scratch directory named after the test.
pub fn temp_dir(name: &str) -> TempDir {
    let dir = std::env::temp_dir().join(format!("loadtest-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    TempDir(dir)
}

/// Writes `text` to `dir/name`.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// A finished command's stderr as text.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The files in `dir` whose names start with `prefix`.
pub fn files_with_prefix(dir: &std::path::Path, prefix: &str) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().path())
                .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
                .collect()
        })
        .unwrap_or_default()
}

/// Held by each test of a binary that runs load: on a two-CPU machine two
/// runs at once put their shards on the same CPU, each waits for the
/// other, and the verdict rightly calls both invalid (exit 3).
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static RUNS: std::sync::Mutex<()> = std::sync::Mutex::new(());
    RUNS.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `promtool check metrics` accepts `text` (where promtool is installed;
/// CI installs it and sets LOADTEST_REQUIRE_PROMTOOL so a missing one
/// fails there).
pub fn promtool_accepts(text: &str) {
    use std::io::Write as _;
    let Ok(mut child) = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    else {
        assert!(
            std::env::var_os("LOADTEST_REQUIRE_PROMTOOL").is_none(),
            "promtool is required here but not installed"
        );
        return;
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let check = child.wait_with_output().unwrap();
    assert!(
        check.status.success(),
        "promtool: {}{}\n{text}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
}
