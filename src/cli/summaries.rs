//! The commands that work on plans and finished summaries without
//! generating load: `validate`, `compare`, `merge` and `report`.

use super::args::{JoinArgs, JoinKey, ReportArgs, ReportFormat};
use super::setup;
use super::{usage, CompareArgs, Failure, MergeArgs, ValidateArgs};
use crate::host::Facts;
use crate::results::{self, PlanInfo, RunSummary};
use crate::verdict::{self, Exit};

/// `loadtest validate`: the plan `run` would run, as JSON.
pub fn validate(args: ValidateArgs) -> Result<Exit, Failure> {
    let facts = Facts::gather();
    // The in-process mock's port is chosen when it starts; any stand-in
    // resolves the same plan otherwise.
    let mock_target = args.placement.mock.then(|| setup::MockTarget {
        url: "http://127.0.0.1:1".to_string(),
        ca_der: None,
    });
    let setup = setup::plan(
        &args.profile,
        &args.overrides,
        &args.placement,
        &facts,
        mock_target,
    )?;
    let text = serde_json::to_string_pretty(&PlanInfo::of(&setup.plan))
        .expect("a plan description always serializes");
    say!("{text}");
    for warning in setup::warnings(&setup.plan, &facts) {
        eprintln!("loadtest: {warning}");
    }
    eprintln!("{}: ok", args.profile.display());
    Ok(Exit::Pass)
}

/// `loadtest join`: prints the table, writes the matched rows when asked.
pub fn join(args: JoinArgs) -> Result<Exit, Failure> {
    use crate::join::{Columns, Key};
    let key = match args.key {
        JoinKey::RequestId => Key::RequestId,
        JoinKey::ConvUuid => Key::ConvUuid,
    };
    let read = |path: &std::path::Path| {
        std::fs::read_to_string(path).map_err(|e| usage(format!("{}: {e}", path.display())))
    };
    let client = read(&args.results)?;
    let server = read(&args.server_rows)?;
    let columns = Columns {
        key: args.server_key.unwrap_or_else(|| key.name().to_string()),
        latency: args.server_latency,
        ttfb: args.server_ttfb,
        upstream: args.server_upstream,
    };
    let joined = crate::join::join(&client, &server, key, &columns).map_err(|e| {
        let file = if e.starts_with("client") {
            &args.results
        } else {
            &args.server_rows
        };
        usage(format!("{}: {e}", file.display()))
    })?;
    say!("{}", joined.table(key).trim_end());
    if joined.client_faster() > 0 {
        eprintln!(
            "loadtest: warning: {} matched rows have a client latency below the server's: the server column may not be a latency in ms, or the rows not the same requests",
            joined.client_faster()
        );
    }
    if let Some(out) = &args.out {
        crate::report::summary::replace(out, &joined.csv(key))
            .map_err(|e| usage(format!("-o {}: {e}", out.display())))?;
    }
    Ok(Exit::Pass)
}

/// `loadtest compare`: exit 1 on a regression.
pub fn compare(args: CompareArgs) -> Result<Exit, Failure> {
    if !(args.regress_pct.is_finite() && args.regress_pct >= 0.0) {
        return Err(usage("--regress-pct: must be a percentage of 0 or more"));
    }
    let old = RunSummary::read(&args.old).map_err(usage)?;
    let new = RunSummary::read(&args.new).map_err(usage)?;
    let comparison = crate::compare::compare(&old, &new, args.regress_pct)
        .map_err(|e| usage(format!("compare: {e}")))?;
    if let Some(path) = &args.json {
        let mut text =
            serde_json::to_string_pretty(&comparison).expect("a comparison always serializes");
        text.push('\n');
        crate::report::summary::replace(path, &text).map_err(usage)?;
    }
    if let Some(path) = &args.html {
        let page = crate::compare::html(&old, &new, &comparison);
        crate::report::summary::replace(path, &page).map_err(usage)?;
    }
    for line in crate::compare::table(&comparison).lines() {
        say!("{line}");
    }
    Ok(if comparison.regressions > 0 {
        Exit::Failed
    } else {
        Exit::Pass
    })
}

/// `loadtest merge`: several hosts' summaries of one run into one, judged
/// again as a whole; exits as that run's verdict says.
pub fn merge(args: MergeArgs) -> Result<Exit, Failure> {
    let mut summaries = Vec::new();
    for path in &args.summaries {
        let summary = RunSummary::read(path).map_err(|e| usage(format!("merge: {e}")))?;
        summaries.push((path.display().to_string(), summary));
    }
    let count = summaries.len();
    let merged = results::merge(summaries).map_err(|e| usage(format!("merge: {e}")))?;
    let verdict = verdict::judge(&merged);
    let text = crate::report::summary::summary_json(&merged, &verdict);
    crate::report::summary::replace(&args.out, &text).map_err(usage)?;
    say!("merged {count} summaries into {}", args.out.display());
    super::run::print_verdict(&verdict);
    Ok(verdict.exit)
}

/// `loadtest report`: a summary rendered as a run writes it, from the
/// results model, judged again; exits as that verdict says.
pub fn report(args: ReportArgs) -> Result<Exit, Failure> {
    let summary = RunSummary::read(&args.summary).map_err(usage)?;
    let verdict = verdict::judge(&summary);
    let text = match args.format {
        ReportFormat::Txt => crate::report::text::text_report(&summary, &verdict),
        ReportFormat::Csv => crate::report::csv::csv(&summary),
        ReportFormat::Html => crate::report::html::html_report(&summary, &verdict),
        ReportFormat::Prom => crate::report::prometheus::prometheus(&summary),
        ReportFormat::Json => crate::report::summary::summary_json(&summary, &verdict),
    };
    match &args.out {
        Some(path) => crate::report::summary::replace(path, &text).map_err(usage)?,
        None => {
            for line in text.lines() {
                say!("{line}");
            }
        }
    }
    Ok(verdict.exit)
}
