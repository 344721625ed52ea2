//! `summary-<id>.json`: the `RunSummary` written out, with its `Verdict`
//! beside it (the verdict is written for readers and judged again on
//! every read), and the names of a run's files.

use crate::results::RunSummary;
use crate::verdict::Verdict;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// The summary document: the run's fields, then `verdict`.
#[derive(Serialize)]
struct SummaryFile<'a> {
    #[serde(flatten)]
    run: &'a RunSummary,
    verdict: &'a Verdict,
}

/// The summary as pretty JSON, newline-terminated.
pub fn summary_json(run: &RunSummary, verdict: &Verdict) -> String {
    let mut text = serde_json::to_string_pretty(&SummaryFile { run, verdict })
        .expect("a summary is plain data and always serializes");
    text.push('\n');
    text
}

/// Where a run's files go: every name carries the run id, so two runs
/// into one folder never share a file.
#[derive(Debug, Clone)]
pub struct OutputFiles {
    /// `results-<id>.jsonl`, the per-turn log.
    pub results: PathBuf,
    /// `summary-<id>.json`.
    pub summary: PathBuf,
    /// `report-<id>.txt`.
    pub text: PathBuf,
    /// `report-<id>.csv`.
    pub csv: PathBuf,
    /// `report-<id>.html`.
    pub html: PathBuf,
    /// `metrics-<id>.prom`.
    pub prometheus: PathBuf,
}

impl OutputFiles {
    /// The files of run `run_id` in `dir`.
    pub fn new(dir: &Path, run_id: &str) -> OutputFiles {
        OutputFiles {
            results: dir.join(format!("results-{run_id}.jsonl")),
            summary: dir.join(format!("summary-{run_id}.json")),
            text: dir.join(format!("report-{run_id}.txt")),
            csv: dir.join(format!("report-{run_id}.csv")),
            html: dir.join(format!("report-{run_id}.html")),
            prometheus: dir.join(format!("metrics-{run_id}.prom")),
        }
    }

    /// Writes the summary and every report, each on its own: a file that
    /// cannot be written is named in the error, and the others are kept.
    pub fn write_reports(&self, run: &RunSummary, verdict: &Verdict) -> Result<(), String> {
        let outputs: [(&Path, String); 5] = [
            (&self.summary, summary_json(run, verdict)),
            (&self.text, super::text::text_report(run, verdict)),
            (&self.csv, super::csv::csv(run)),
            (&self.html, super::html::html_report(run, verdict)),
            (&self.prometheus, super::prometheus::prometheus(run)),
        ];
        let failed: Vec<String> = outputs
            .iter()
            .filter_map(|(path, text)| write(path, text).err())
            .collect();
        if failed.is_empty() {
            Ok(())
        } else {
            Err(failed.join("; "))
        }
    }
}

/// Writes `text` to `path` whole or not at all: into a temporary file
/// beside it, synced, then linked into place, which fails rather than
/// replace an existing file (a name taken means another run chose the same
/// id). On any failure no partial file is left, and the error names `path`.
pub fn write(path: &Path, text: &str) -> Result<(), String> {
    write_via_temporary(path, text, publish)
}

/// Writes `text` to `path` whole or not at all, replacing a file already
/// there (`merge -o`, `compare --json`): a temporary file beside it,
/// synced, then renamed over it.
pub fn replace(path: &Path, text: &str) -> Result<(), String> {
    write_via_temporary(path, text, |temporary, path| {
        std::fs::rename(temporary, path)
    })
}

fn write_via_temporary(
    path: &Path,
    text: &str,
    put_in_place: impl FnOnce(&Path, &Path) -> std::io::Result<()>,
) -> Result<(), String> {
    use std::io::Write as _;
    let name = path
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let temporary = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let result = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temporary)
        .and_then(|mut file| {
            file.write_all(text.as_bytes())?;
            file.sync_all()
        })
        .and_then(|()| put_in_place(&temporary, path));
    let _ = std::fs::remove_file(&temporary);
    result.map_err(|e| format!("{}: {e}", path.display()))
}

/// Puts the finished temporary file in place: a hard link, which fails
/// when the name is taken; where the filesystem has no hard links (some
/// network and FAT mounts), a rename once the name is seen to be free.
fn publish(temporary: &Path, path: &Path) -> std::io::Result<()> {
    match std::fs::hard_link(temporary, path) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists && !path.exists() => {
            std::fs::rename(temporary, path)
        }
        result => result,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn summary_matches_the_golden_file_and_round_trips() {
        let (run, verdict) = super::super::fixture::fixed();
        let text = summary_json(&run, &verdict).replace(env!("CARGO_PKG_VERSION"), "VERSION");
        super::super::fixture::golden("summary.json", &text);
        // Written, read back, equal: the derived figures come back too.
        let back = RunSummary::parse(&summary_json(&run, &verdict)).unwrap();
        assert_eq!(back, run);
        assert_eq!(crate::verdict::judge(&back), verdict);
        // Keys are lowercase snake_case all the way down (the predecessor
        // shipped capitalised percentile keys by accident).
        fn check_keys(v: &Value, at: &str) {
            match v {
                Value::Object(map) => {
                    for (k, v) in map {
                        let under_counts = at.ends_with("status_codes")
                            || at.ends_with("errors")
                            || at.ends_with("headers")
                            || at.ends_with("requests_by_address");
                        assert!(
                            under_counts
                                || k.chars().all(|c| c.is_ascii_lowercase()
                                    || c.is_ascii_digit()
                                    || c == '_'),
                            "{at}.{k}"
                        );
                        check_keys(v, &format!("{at}.{k}"));
                    }
                }
                Value::Array(list) => list.iter().for_each(|v| check_keys(v, at)),
                _ => {}
            }
        }
        check_keys(&serde_json::from_str(&text).unwrap(), "");
    }

    #[test]
    fn a_file_that_cannot_be_written_leaves_nothing_and_the_others_stand() {
        let (run, verdict) = super::super::fixture::fixed();
        let dir = std::env::temp_dir().join(format!("loadtest-atomic-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let files = OutputFiles::new(&dir, "r1");
        // Something already holds the CSV's name.
        std::fs::create_dir(&files.csv).unwrap();
        let err = files.write_reports(&run, &verdict).unwrap_err();
        assert!(err.contains("report-r1.csv"), "{err}");
        assert!(!err.contains("summary-r1.json"), "{err}");
        assert_eq!(RunSummary::read(&files.summary).unwrap(), run);
        assert!(std::fs::read_to_string(&files.text)
            .unwrap()
            .contains("== thresholds"));
        assert!(files.prometheus.exists());
        // No temporary file is left behind, and nothing is overwritten.
        let names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
        assert!(write(&files.summary, "x").is_err());
        assert_eq!(RunSummary::read(&files.summary).unwrap(), run);
        // `replace` (merge -o) does overwrite, whole; into a directory
        // that is not there it fails and leaves the old file as it was.
        replace(&files.summary, "whole").unwrap();
        assert_eq!(std::fs::read_to_string(&files.summary).unwrap(), "whole");
        assert!(replace(&dir.join("missing/x.json"), "x").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn reading_names_what_is_wrong() {
        let (run, verdict) = super::super::fixture::fixed();
        let mut value: Value = serde_json::from_str(&summary_json(&run, &verdict)).unwrap();
        assert!(RunSummary::parse("[1]")
            .unwrap_err()
            .contains("no `schema`"));
        let mut old = value.clone();
        old["schema"] = 1.into();
        assert!(RunSummary::parse(&old.to_string())
            .unwrap_err()
            .contains("schema 1"));
        value["stages"][0]["total"]["metrics"]["requests"] = "many".into();
        let err = RunSummary::parse(&value.to_string()).unwrap_err();
        assert!(
            err.starts_with("stages[0].total.metrics.requests:"),
            "{err}"
        );
    }
}
