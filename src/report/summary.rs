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
            prometheus: dir.join(format!("metrics-{run_id}.prom")),
        }
    }

    /// Writes the summary and every report; the error names the file.
    pub fn write_reports(&self, run: &RunSummary, verdict: &Verdict) -> Result<(), String> {
        write(&self.summary, &summary_json(run, verdict))?;
        write(&self.text, &super::text::text_report(run, verdict))?;
        write(&self.csv, &super::csv::csv(run))?;
        write(&self.prometheus, &super::prometheus::prometheus(run))
    }
}

/// Writes `text` to `path`, never over an existing file (a name taken
/// means another run chose the same id).
pub fn write(path: &Path, text: &str) -> Result<(), String> {
    use std::io::Write as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    file.write_all(text.as_bytes())
        .map_err(|e| format!("{}: {e}", path.display()))
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
                            || at.ends_with("headers");
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
