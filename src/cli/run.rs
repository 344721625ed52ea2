//! `loadtest run`: plan, start the mock if asked, run, write every output,
//! and end as the verdict says. Each step is its own function.

use super::live::LiveServer;
use super::setup;
use super::{usage, Failure, RunArgs};
use crate::engine;
use crate::host::Facts;
use crate::mock::{self, Delay, MockConfig, MockServer};
use crate::plan::Plan;
use crate::report::console::{progress_line, run_header, Columns};
use crate::report::summary::OutputFiles;
use crate::results::{self, Host, PlanInfo, RunSummary, StageSummary, Stop};
use crate::transport::cert::ServerTls;
use crate::verdict::{self, knee_line, Exit, Verdict};

/// Runs a profile; see the module doc.
pub fn run(args: RunArgs) -> Result<Exit, Failure> {
    // Before the mock, the engine or the writer start a thread.
    super::signals::install();
    super::choose_io(args.placement.io)?;
    let facts = Facts::gather();
    let (mock, mock_target) = start_mock(&args, &facts)?.unzip();
    let setup = setup::plan(
        &args.config,
        &args.overrides,
        &args.placement,
        &facts,
        mock_target,
    )?;
    let mut plan = setup.plan;
    plan.live = args.metrics_listen.is_some();
    setup::preflight(&plan, facts.fd_limit, mock.is_some())?;
    std::fs::create_dir_all(&args.out)
        .map_err(|e| usage(format!("--out {}: {e}", args.out.display())))?;
    for warning in setup::warnings(&plan, &facts) {
        eprintln!("loadtest: {warning}");
    }
    let run_id = results::new_run_id(std::time::SystemTime::now());
    let files = OutputFiles::new(&args.out, &run_id);
    let info = PlanInfo::of(&plan);
    if !args.quiet {
        say!("{}", run_header(&info));
        if let Some(server) = &mock {
            say!(
                "built-in mock upstream on {} (CPUs {})",
                server.addr(),
                crate::plan::format_cpus(&setup.mock_cpus)
            );
        }
    }
    let mut live = start_live(&args, &info)?;
    let sink = start_sink(&args, &plan, &files, &run_id)?;
    let result = drive(&plan, &info, sink.as_ref(), live.as_mut(), args.quiet);
    if let Some(server) = mock {
        // The results stand (a dead mock shard shows in them as errors);
        // say why the upstream misbehaved.
        if let Err(why) = server.stop() {
            eprintln!("loadtest: warning: --mock: {why}");
        }
    }
    let (jsonl_lines, sink_dropped) = match sink {
        Some(sink) => sink.finish().map_err(|e| Failure {
            exit: Exit::Invalid,
            message: format!("{}: {e}", files.results.display()),
        })?,
        None => (0, 0),
    };
    // The engine fails only when a shard cannot start at all: a host that
    // is set up wrong, before anything was measured.
    let result = result.map_err(usage)?;
    let host = Host {
        run_id,
        fd_limit: facts.fd_limit,
        sink_dropped,
        jsonl_lines,
        results_file: (!args.no_jsonl).then(|| files.results.display().to_string()),
        local_port_range: facts.local_port_range,
    };
    let summary = RunSummary::new(info, result, host);
    let verdict = verdict::judge(&summary);
    // Every file that can be written is, and the results are printed,
    // before a file that could not be written ends the run in error.
    let written = files.write_reports(&summary, &verdict);
    finish(&args, &summary, &verdict, &files);
    written.map_err(|e| usage(format!("--out: not written: {e}")))?;
    Ok(verdict.exit)
}

/// The in-process mock, when `--mock` asks for one, and how to reach it.
fn start_mock(
    args: &RunArgs,
    facts: &Facts,
) -> Result<Option<(MockServer, setup::MockTarget)>, Failure> {
    if !args.placement.mock {
        return Ok(None);
    }
    let (_, cpus) = setup::cpus(&args.placement, &facts.allowed_cpus)?;
    let delay = |flag: &str, text: &Option<String>| {
        text.as_deref()
            .map_or(Ok(Delay::default()), |t| super::mock::delay_flag(flag, t))
    };
    let config = MockConfig {
        latency: delay("mock-latency", &args.mock_latency)?,
        ttft: delay("mock-ttft", &args.mock_ttft)?,
        itl: delay("mock-itl", &args.mock_itl)?,
        tokens: args.mock_tokens,
        cpus,
        stall: None,
        faults: super::mock::faults_flag("mock-faults", args.mock_faults.as_deref())?,
        seed: args.overrides.seed.unwrap_or(1),
        tls: None,
        log: super::mock::request_log("mock-log-requests", args.mock_log_requests.as_deref())?,
    };
    let tls = match args.mock_tls {
        true => Some(ServerTls::self_signed().map_err(usage)?),
        false => None,
    };
    let config = MockConfig {
        tls: tls.as_ref().map(|t| t.config.clone()),
        ..config
    };
    let server = mock::start("127.0.0.1:0".parse().expect("literal address"), config)
        .map_err(|e| usage(format!("--mock: {e}")))?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let target = setup::MockTarget {
        url: format!("{scheme}://{}", server.addr()),
        ca_der: tls.and_then(|t| t.ca_der),
    };
    Ok(Some((server, target)))
}

/// The live metrics endpoint, when `--metrics-listen` asks for one; says
/// where it is, and warns when it is reachable from other hosts.
fn start_live(args: &RunArgs, info: &PlanInfo) -> Result<Option<LiveServer>, Failure> {
    let Some(addr) = &args.metrics_listen else {
        return Ok(None);
    };
    let lanes = info
        .scenarios
        .iter()
        .map(|s| (s.name.clone(), s.service.clone()))
        .collect();
    let server = LiveServer::start(addr, lanes).map_err(usage)?;
    eprintln!("loadtest: live metrics on http://{}/metrics", server.addr);
    if !server.addr.ip().is_loopback() {
        eprintln!(
            "loadtest: warning: --metrics-listen {} is reachable from other hosts",
            server.addr
        );
    }
    Ok(Some(server))
}

/// The per-turn log's writer, unless `--no-jsonl`.
fn start_sink(
    args: &RunArgs,
    plan: &Plan,
    files: &OutputFiles,
    run_id: &str,
) -> Result<Option<crate::sink::Sink>, Failure> {
    if args.no_jsonl {
        return Ok(None);
    }
    crate::sink::Sink::start(&files.results, plan, plan.cpus.len(), run_id)
        .map(Some)
        .map_err(|e| usage(format!("--out: {e}")))
}

/// Without a terminal, a progress line every this many seconds.
const PLAIN_PROGRESS_EVERY: u32 = 10;

/// Runs the engine, printing each stage's rows as it ends and a live
/// progress line (stderr) unless quiet.
fn drive(
    plan: &Plan,
    info: &PlanInfo,
    sink: Option<&crate::sink::Sink>,
    mut live: Option<&mut LiveServer>,
    quiet: bool,
) -> Result<results::RunResult, String> {
    let columns = Columns::of(info);
    if !quiet {
        say!("{}", columns.header());
    }
    let stages = plan.stages.len();
    // SAFETY: isatty only inspects the descriptor.
    let terminal = unsafe { libc::isatty(2) } == 1;
    let mut line_open = false;
    let mut show = |progress: &engine::Progress<'_>| match *progress {
        _ if quiet => {}
        // Progress goes to stderr so stdout stays the table.
        engine::Progress::StageStarted(index) => eprintln!(
            "stage {}/{stages} started: {}",
            index + 1,
            plan.stages[index].label()
        ),
        engine::Progress::Second {
            stage,
            point,
            window,
            ..
        } => {
            let s = &plan.stages[stage];
            let line = progress_line(&s.label(), (stage, stages), s, point, window);
            if terminal {
                // One line, rewritten every second.
                eprint!("\r\x1b[K{line}");
                line_open = true;
            } else if point.second % PLAIN_PROGRESS_EVERY == 0 {
                eprintln!("{line}");
            }
        }
        engine::Progress::StageFinished(stage) => {
            if line_open {
                eprint!("\r\x1b[K");
                line_open = false;
            }
            print_rows(&columns, stage, info.max_inflight);
            print_comparison(stage, info.baseline.as_deref());
        }
    };
    engine::run_with_sink(plan, sink, |progress| {
        if let Some(live) = live.as_deref_mut() {
            publish(live, plan, &progress);
        }
        show(&progress);
    })
}

/// Hands a step of the run to the live endpoint.
fn publish(live: &mut LiveServer, plan: &Plan, progress: &engine::Progress<'_>) {
    match progress {
        engine::Progress::StageStarted(index) => {
            let stage = &plan.stages[*index];
            let target = match stage.load {
                crate::stage::Load::Open { rate, .. } => Some(rate),
                crate::stage::Load::Closed { .. } => None,
            };
            live.update(|l| l.stage_started(*index, &stage.label(), target));
        }
        engine::Progress::Second {
            point,
            window,
            lanes,
            ..
        } => live.update(|l| l.second(point, window, lanes)),
        engine::Progress::StageFinished(stage) => live.update(|l| l.stage_finished(stage)),
    }
}

fn print_rows(columns: &Columns, stage: &StageSummary, max_inflight: u64) {
    for row in columns.rows(stage, max_inflight) {
        say!("{row}");
    }
}

/// A finished stage's services side by side (comparisons only).
fn print_comparison(stage: &StageSummary, baseline: Option<&str>) {
    if let Some(compared) = crate::results::StageComparison::of_stage(stage, baseline) {
        say!(
            "{}",
            crate::report::comparison::stage_table(&compared).trim_end()
        );
    }
}

/// The final results: (when quiet) the stage table, the per-turn table,
/// the verdict and where the files are.
fn finish(args: &RunArgs, summary: &RunSummary, verdict: &Verdict, files: &OutputFiles) {
    if args.quiet {
        let columns = Columns::of(&summary.plan);
        say!("{}", columns.header());
        for stage in &summary.stages {
            print_rows(&columns, stage, summary.plan.max_inflight);
            print_comparison(stage, summary.plan.baseline.as_deref());
        }
    }
    if let Some(comparison) = &summary.comparison {
        let overall = crate::report::comparison::overall_tables(comparison);
        if !overall.is_empty() {
            say!(
                "\nservices over all {} rounds:\n{}",
                comparison.rounds,
                overall.trim_end()
            );
        }
    }
    let turns = crate::report::text::turn_table(summary);
    if !turns.is_empty() {
        say!("\nper turn (all stages; prompt tokens from server usage):\n{turns}");
    }
    print_verdict(verdict);
    if let Some(results) = summary.hosts.first().and_then(|h| h.results_file.as_ref()) {
        let lines: u64 = summary.hosts.iter().map(|h| h.jsonl_lines).sum();
        say!("results: {results} ({lines} lines)");
    }
    say!(
        "report: {}, {}, {} and {}",
        files.text.display(),
        files.html.display(),
        files.csv.display(),
        files.prometheus.display()
    );
    say!("summary: {}", files.summary.display());
    match (&summary.stop, verdict.exit) {
        (Some(Stop::Interrupted { signal, abandoned }), _) => {
            let given_up = match abandoned {
                0 => String::new(),
                n => format!("; {n} requests in flight were abandoned, not counted"),
            };
            eprintln!(
                "loadtest: stopped by {}; the stages shown were measured and every output was written{given_up}",
                signal.name()
            );
        }
        (_, Exit::Invalid) => eprintln!(
            "loadtest: run invalid: {}",
            verdict.generator.invalid_reasons.join("; ")
        ),
        _ => {}
    }
}

/// Thresholds, the knee and generator validity, a line each.
pub fn print_verdict(verdict: &Verdict) {
    let failed: Vec<_> = verdict.thresholds.iter().filter(|c| !c.pass).collect();
    for check in &failed {
        say!(
            "threshold FAIL {} {}: {}",
            check.stage,
            check.scenario,
            check.failures.join("; ")
        );
    }
    if !verdict.thresholds.is_empty() {
        say!(
            "thresholds: {} ({} of {} checks failed)",
            if failed.is_empty() { "PASS" } else { "FAIL" },
            failed.len(),
            verdict.thresholds.len()
        );
    }
    for failure in &verdict.no_success {
        say!("FAIL: {failure}");
    }
    for flag in &verdict.fairness {
        say!("comparison: UNFAIR: {flag}");
    }
    if let Some(knee) = &verdict.knee {
        say!("{}", knee_line(knee));
    }
    for reason in &verdict.generator.invalid_reasons {
        say!("generator: INVALID: {reason}");
    }
    for caution in &verdict.generator.cautions {
        say!("generator: caution: {caution}");
    }
}
