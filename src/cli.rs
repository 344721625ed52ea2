//! The command line: flags defined once (clap derive), then `run`, which
//! turns them into a plan, runs it and writes the outputs.
//!
//! Exit codes: 0 ok; 1 a check failed (reserved for thresholds);
//! 2 usage or configuration error; 3 the run is invalid because the
//! generator failed; 130 stopped by Ctrl-C (what was measured is written).

use crate::engine;
use crate::mock::{self, MockConfig};
use crate::plan::{self, Overrides};
use crate::report;
use crate::rt;
use crate::stage;
use clap::{Args, Parser, Subcommand};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Scenario-driven load generator for LLM gateways.
#[derive(Debug, Parser)]
#[command(name = "loadtest", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a load test from a profile.
    Run(Box<RunArgs>),
    /// Check a profile and print the fully resolved configuration (JSON).
    Validate(ValidateArgs),
    /// Compare two summaries; exit 1 on a regression. No load is generated.
    Compare(CompareArgs),
    /// Merge summaries from several generator hosts into one, exactly.
    Merge(MergeArgs),
    /// Serve the built-in mock upstream (OpenAI Chat Completions and
    /// Anthropic Messages).
    Mock(MockArgs),
}

/// Command-line values that override a profile (`run` and `validate`).
#[derive(Debug, Args)]
pub struct OverrideArgs {
    /// Target URL for every scenario (http://host:port[/path]); a bare
    /// origin gets each protocol's default path.
    #[arg(long)]
    pub target: Option<String>,
    /// Stages, overriding the profile's: USERS:DURATION,... e.g. 1:10s,100:60s.
    #[arg(long)]
    pub stages: Option<String>,
    /// Model for every scenario (e.g. a gateway's provider/model form).
    #[arg(long)]
    pub model: Option<String>,
    /// Warm-up at the start of each stage, excluded from statistics (e.g. 2s).
    #[arg(long)]
    pub warmup: Option<String>,
    /// API key for every scenario: `Authorization: Bearer <vk>`, or
    /// `x-api-key: <vk>` for scenarios with `auth: x-api-key` (Anthropic's
    /// default).
    #[arg(long)]
    pub vk: Option<String>,
    /// Extra request header "K: V" (repeatable; applied to every scenario
    /// after --vk, replacing a header of the same name).
    #[arg(long = "header", value_name = "K: V")]
    pub headers: Vec<String>,
    /// Seed for blends and content (conversation UUIDs still differ per run).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Do not verify TLS certificates (https targets).
    #[arg(long)]
    pub insecure: bool,
    /// Open-loop stages: most conversations in flight (all shards); an
    /// arrival beyond it is counted as dropped. Default: sized from the
    /// file-descriptor limit.
    #[arg(long)]
    pub max_inflight: Option<u64>,
}

/// `loadtest compare`.
#[derive(Debug, Args)]
pub struct CompareArgs {
    /// The baseline summary-<ts>.json.
    pub old: PathBuf,
    /// The new summary-<ts>.json.
    pub new: PathBuf,
    /// A change for the worse by more than this percentage is a regression.
    #[arg(long, default_value_t = 10.0)]
    pub regress_pct: f64,
}

/// `loadtest merge`.
#[derive(Debug, Args)]
pub struct MergeArgs {
    /// Summaries of the same run from each generator host.
    #[arg(required = true, num_args = 1..)]
    pub summaries: Vec<PathBuf>,
    /// Where to write the merged summary.
    #[arg(short = 'o', long = "out")]
    pub out: PathBuf,
}

/// `loadtest validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Profile (JSON).
    pub profile: PathBuf,
    /// Overrides, as for `run`.
    #[command(flatten)]
    pub overrides: OverrideArgs,
}

/// `loadtest run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Profile (JSON), e.g. profiles/realistic.json.
    #[arg(long)]
    pub config: PathBuf,
    /// Overrides of the profile.
    #[command(flatten)]
    pub overrides: OverrideArgs,
    /// Output directory for summary-<ts>.json.
    #[arg(long, default_value = "runs")]
    pub out: PathBuf,
    /// Start the built-in mock upstream in-process and target it.
    #[arg(long, conflicts_with = "target")]
    pub mock: bool,
    /// No live progress line.
    #[arg(long)]
    pub quiet: bool,
    /// Do not write results-<ts>.jsonl (the per-turn log costs ~5-8 % of
    /// the engine's CPU at tens of thousands of requests per second).
    #[arg(long)]
    pub no_jsonl: bool,
    /// Generator CPUs, one pinned shard each (e.g. 0,2-3). Default: all
    /// (with --mock: the first half).
    #[arg(long, conflicts_with = "shards")]
    pub cpus: Option<String>,
    /// Number of generator shards, on the first N available CPUs.
    #[arg(long)]
    pub shards: Option<usize>,
    /// CPUs for the in-process mock. Default: the CPUs the generator does
    /// not use (or the last CPU).
    #[arg(long, requires = "mock")]
    pub mock_cpus: Option<String>,
    /// In-process mock: time to first token (e.g. 50ms).
    #[arg(long, requires = "mock")]
    pub mock_ttft: Option<String>,
    /// In-process mock: delay between tokens.
    #[arg(long, requires = "mock")]
    pub mock_itl: Option<String>,
    /// In-process mock: non-stream latency.
    #[arg(long, requires = "mock")]
    pub mock_latency: Option<String>,
    /// In-process mock: output tokens per response (capped by max_tokens).
    #[arg(long, requires = "mock")]
    pub mock_tokens: Option<u32>,
}

/// `loadtest mock`.
#[derive(Debug, Args)]
pub struct MockArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// CPUs, one pinned shard each. Default: the last available CPU.
    #[arg(long)]
    pub cpus: Option<String>,
    /// Time to first token of a streamed response (e.g. 50ms).
    #[arg(long, default_value = "0ms")]
    pub ttft: String,
    /// Delay between streamed tokens.
    #[arg(long, default_value = "0ms")]
    pub itl: String,
    /// Delay before a non-streamed response.
    #[arg(long, default_value = "0ms")]
    pub latency: String,
    /// Output tokens per response (capped by the request's max_tokens).
    /// Default: exactly the request's max_tokens.
    #[arg(long)]
    pub tokens: Option<u32>,
    /// Freeze once, this long after starting (with --stall-for), e.g. 10s:
    /// requests arriving in the window are answered when it ends.
    #[arg(long, requires = "stall_for")]
    pub stall_at: Option<String>,
    /// Length of that freeze, e.g. 1s.
    #[arg(long, requires = "stall_at")]
    pub stall_for: Option<String>,
}

/// An error at the edge: a message for the user and an exit code.
#[derive(Debug)]
pub struct Failure {
    /// Process exit code.
    pub code: u8,
    /// One line.
    pub message: String,
}

fn usage(message: impl Into<String>) -> Failure {
    Failure {
        code: 2,
        message: message.into(),
    }
}

/// Runs a parsed command line; returns the exit code.
pub fn dispatch(cli: Cli) -> Result<u8, Failure> {
    match cli.command {
        Command::Run(args) => run(*args),
        Command::Validate(args) => validate(args),
        Command::Compare(args) => compare(args),
        Command::Merge(args) => merge(args),
        Command::Mock(args) => serve_mock(args),
    }
}

/// Long flags the seed tool spelled with one dash (`-config`); they are
/// rewritten to two dashes so existing scripts keep working.
const SINGLE_DASH_FLAGS: &[&str] = &[
    "config", "vk", "target", "model", "stages", "out", "header", "version", "seed", "warmup",
    "insecure", "mock", "help",
];

/// Rewrites the seed tool's command line into this one: single-dash long
/// flags get a second dash, and a command line that starts with a flag
/// (no subcommand, as the seed tool was used) means `run`.
pub fn normalize_args(args: Vec<OsString>) -> Vec<OsString> {
    // The seed tool's `-compare old.json,new.json [-regress-pct N]`.
    let texts: Vec<Option<&str>> = args.iter().map(|a| a.to_str()).collect();
    if let Some(at) = texts
        .iter()
        .position(|a| matches!(a, Some("-compare") | Some("--compare")))
    {
        if let Some(Some((old, new))) = texts.get(at + 1).map(|v| v.and_then(|v| v.split_once(',')))
        {
            let mut out = vec![
                args[0].clone(),
                OsString::from("compare"),
                OsString::from(old),
                OsString::from(new),
            ];
            if let Some(pct) = texts
                .iter()
                .position(|a| matches!(a, Some("-regress-pct") | Some("--regress-pct")))
                .and_then(|i| args.get(i + 1))
            {
                out.push(OsString::from("--regress-pct"));
                out.push(pct.clone());
            }
            return out;
        }
    }
    let mut out: Vec<OsString> = Vec::with_capacity(args.len() + 1);
    for (i, arg) in args.into_iter().enumerate() {
        let rewritten = arg.to_str().and_then(|text| {
            let name = text.strip_prefix('-')?;
            if name.starts_with('-') || i == 0 {
                return None;
            }
            let key = name.split('=').next().unwrap_or(name);
            SINGLE_DASH_FLAGS
                .contains(&key)
                .then(|| OsString::from(format!("-{text}")))
        });
        out.push(rewritten.unwrap_or(arg));
    }
    let first = out.get(1).and_then(|a| a.to_str()).unwrap_or("");
    let bare_flag = first.starts_with('-')
        && !matches!(first, "-h" | "--help" | "-V" | "--version")
        && !first.starts_with("--version=");
    if bare_flag {
        out.insert(1, OsString::from("run"));
    }
    out
}

fn duration_flag(flag: &str, text: &str) -> Result<Duration, Failure> {
    stage::parse_duration(text).map_err(|e| usage(format!("--{flag}: {e}")))
}

fn serve_mock(args: MockArgs) -> Result<u8, Failure> {
    let allowed = rt::allowed_cpus();
    let cpus = match &args.cpus {
        Some(text) => {
            plan::parse_cpus(text, &allowed).map_err(|e| usage(format!("--cpus: {e}")))?
        }
        None => allowed.last().map(|&c| vec![c]).unwrap_or_default(),
    };
    let listen = resolve_listen(&args.listen)?;
    let config = MockConfig {
        latency: duration_flag("latency", &args.latency)?,
        ttft: duration_flag("ttft", &args.ttft)?,
        itl: duration_flag("itl", &args.itl)?,
        tokens: args.tokens,
        cpus: cpus.clone(),
        stall: match (&args.stall_at, &args.stall_for) {
            (Some(at), Some(length)) => Some((
                duration_flag("stall-at", at)?,
                duration_flag("stall-for", length)?,
            )),
            _ => None,
        },
    };
    rt::raise_fd_limit();
    let server = mock::start(listen, config).map_err(|e| usage(format!("mock: {e}")))?;
    println!(
        "mock upstream listening on http://{} (CPUs {}); POST /v1/chat/completions, POST /v1/messages, GET /health",
        server.addr(),
        plan::format_cpus(&cpus)
    );
    // `wait` returns only when a shard has ended, which is a failure.
    Err(Failure {
        code: 3,
        message: server.wait(),
    })
}

fn resolve_listen(text: &str) -> Result<std::net::SocketAddr, Failure> {
    use std::net::ToSocketAddrs;
    text.to_socket_addrs()
        .map_err(|e| usage(format!("--listen `{text}`: {e}")))?
        .next()
        .ok_or_else(|| usage(format!("--listen `{text}`: no address")))
}

/// Chooses generator and mock CPUs.
fn choose_cpus(args: &RunArgs, allowed: &[usize]) -> Result<(Vec<usize>, Vec<usize>), Failure> {
    if allowed.is_empty() {
        return Err(usage("cannot determine the available CPUs"));
    }
    let generator = if let Some(text) = &args.cpus {
        plan::parse_cpus(text, allowed).map_err(|e| usage(format!("--cpus: {e}")))?
    } else if let Some(n) = args.shards {
        if n == 0 || n > allowed.len() {
            return Err(usage(format!(
                "--shards: must be between 1 and {} (available CPUs: {})",
                allowed.len(),
                plan::format_cpus(allowed)
            )));
        }
        allowed[..n].to_vec()
    } else if args.mock {
        allowed[..(allowed.len() / 2).max(1)].to_vec()
    } else {
        allowed.to_vec()
    };
    let mock = if let Some(text) = &args.mock_cpus {
        plan::parse_cpus(text, allowed).map_err(|e| usage(format!("--mock-cpus: {e}")))?
    } else {
        let rest: Vec<usize> = allowed
            .iter()
            .copied()
            .filter(|c| !generator.contains(c))
            .collect();
        if rest.is_empty() {
            vec![allowed[allowed.len() - 1]]
        } else {
            rest
        }
    };
    Ok((generator, mock))
}

fn parse_headers(raw: &[String]) -> Result<Vec<(String, String)>, Failure> {
    raw.iter()
        .map(|h| {
            let (name, value) = h
                .split_once(':')
                .ok_or_else(|| usage(format!("--header `{h}`: expected \"Name: value\"")))?;
            Ok((name.trim().to_string(), value.trim().to_string()))
        })
        .collect()
}

fn load_profile(path: &Path) -> Result<crate::config::Profile, Failure> {
    let text =
        std::fs::read_to_string(path).map_err(|e| usage(format!("{}: {e}", path.display())))?;
    crate::config::parse(&text).map_err(|e| usage(format!("{}: {e}", path.display())))
}

fn overrides(args: &OverrideArgs) -> Result<Overrides, Failure> {
    if args.vk.as_deref().is_some_and(|k| k.trim().is_empty()) {
        return Err(usage("--vk: empty key"));
    }
    Ok(Overrides {
        target: args.target.clone(),
        stages: args.stages.clone(),
        model: args.model.clone(),
        warmup: args.warmup.clone(),
        seed: args.seed,
        vk: args.vk.clone(),
        headers: parse_headers(&args.headers)?,
        insecure: args.insecure,
        max_inflight: args.max_inflight,
    })
}

fn read_summary(path: &Path) -> Result<serde_json::Value, Failure> {
    let text =
        std::fs::read_to_string(path).map_err(|e| usage(format!("{}: {e}", path.display())))?;
    serde_json::from_str(&text).map_err(|e| usage(format!("{}: not JSON: {e}", path.display())))
}

fn compare(args: CompareArgs) -> Result<u8, Failure> {
    if !(args.regress_pct.is_finite() && args.regress_pct >= 0.0) {
        return Err(usage("--regress-pct: must be a percentage of 0 or more"));
    }
    let old = read_summary(&args.old)?;
    let new = read_summary(&args.new)?;
    let (table, regressions) = crate::combine::compare(&old, &new, args.regress_pct)
        .map_err(|e| usage(format!("compare: {e}")))?;
    print!("{table}");
    Ok(if regressions > 0 { 1 } else { 0 })
}

fn merge(args: MergeArgs) -> Result<u8, Failure> {
    let mut summaries = Vec::new();
    for path in &args.summaries {
        summaries.push((path.display().to_string(), read_summary(path)?));
    }
    let merged = crate::combine::merge(&summaries).map_err(|e| usage(format!("merge: {e}")))?;
    write_json(&args.out, &merged)?;
    println!(
        "merged {} summaries into {}",
        summaries.len(),
        args.out.display()
    );
    Ok(0)
}

fn validate(args: ValidateArgs) -> Result<u8, Failure> {
    let profile = load_profile(&args.profile)?;
    let overrides = overrides(&args.overrides)?;
    let cpus = rt::allowed_cpus();
    let plan = plan::build(&profile, &overrides, cpus)
        .map_err(|e| usage(format!("{}: {e}", args.profile.display())))?;
    let mut text = serde_json::to_string_pretty(&report::plan_json(&plan)).unwrap_or_default();
    text.push('\n');
    print!("{text}");
    eprintln!("{}: ok", args.profile.display());
    Ok(0)
}

fn run(args: RunArgs) -> Result<u8, Failure> {
    let profile = load_profile(&args.config)?;
    let allowed = rt::allowed_cpus();
    let (generator_cpus, mock_cpus) = choose_cpus(&args, &allowed)?;
    let mut overrides = overrides(&args.overrides)?;
    let fd_limit = rt::raise_fd_limit();
    if overrides.max_inflight.is_none() && profile.max_inflight.is_none() {
        overrides.max_inflight = Some(default_max_inflight(fd_limit, args.mock));
    }
    let mock_server = if args.mock {
        let config = MockConfig {
            latency: opt_duration("mock-latency", &args.mock_latency)?,
            ttft: opt_duration("mock-ttft", &args.mock_ttft)?,
            itl: opt_duration("mock-itl", &args.mock_itl)?,
            tokens: args.mock_tokens,
            cpus: mock_cpus.clone(),
            stall: None,
        };
        let server = mock::start("127.0.0.1:0".parse().expect("literal address"), config)
            .map_err(|e| usage(format!("--mock: {e}")))?;
        overrides.target = Some(format!("http://{}", server.addr()));
        Some(server)
    } else {
        None
    };
    let plan = plan::build(&profile, &overrides, generator_cpus)
        .map_err(|e| usage(format!("{}: {e}", args.config.display())))?;
    preflight(&plan, fd_limit, args.mock)?;
    std::fs::create_dir_all(&args.out)
        .map_err(|e| usage(format!("--out {}: {e}", args.out.display())))?;
    install_interrupt_handler();

    if !args.mock
        && plan
            .scenarios
            .iter()
            .any(|s| s.headers.iter().any(|(_, v)| v.contains("REPLACE_WITH_VK")))
    {
        eprintln!("loadtest: warning: a header still holds the REPLACE_WITH_VK placeholder; pass --vk KEY");
    }
    if plan.insecure {
        eprintln!("loadtest: note: --insecure has no effect on http:// targets");
    }
    if let Some(range) = rt::local_port_range() {
        for warning in port_range_warnings(&plan, range) {
            eprintln!("loadtest: warning: {warning}");
        }
    }
    for (stage, scenario) in zero_user_scenarios(&plan) {
        eprintln!(
            "loadtest: note: stage {stage} gives scenario {scenario} no users (too few users for its weight)"
        );
    }
    println!("{}", report::run_header(&plan));
    if let Some(server) = &mock_server {
        println!(
            "built-in mock upstream on {} (CPUs {})",
            server.addr(),
            plan::format_cpus(&mock_cpus)
        );
    }
    println!("{}", report::table_header());
    // One timestamp names every file of the run.
    let ts = report::timestamp(std::time::SystemTime::now());
    let results_path = args.out.join(format!("results-{ts}.jsonl"));
    let sink = if args.no_jsonl {
        None
    } else {
        Some(
            crate::sink::Sink::start(&results_path, &plan, plan.cpus.len(), plan.run_nonce)
                .map_err(|e| usage(format!("--out: {e}")))?,
        )
    };
    let stages_total = plan.stages.len();
    // SAFETY: isatty only inspects the descriptor.
    let terminal = unsafe { libc::isatty(2) } == 1;
    let mut line_open = false;
    let result = engine::run_with_sink(&plan, sink.as_ref(), |progress| match progress {
        // Progress goes to stderr so stdout stays the table.
        engine::Progress::StageStarted(index) => eprintln!(
            "stage {}/{stages_total} started: {}",
            index + 1,
            plan.stages[index].label()
        ),
        engine::Progress::Second { stage, point } => {
            if args.quiet {
                return;
            }
            let line = progress_line(&plan, stage, point);
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
            for row in report::table_rows(&plan, stage) {
                println!("{row}");
            }
        }
    });
    if let Some(server) = mock_server {
        // The results stand (a dead mock shard shows in them as errors);
        // say why the upstream misbehaved.
        if let Err(why) = server.stop() {
            eprintln!("loadtest: warning: --mock: {why}");
        }
    }
    let (jsonl_lines, sink_dropped) = match sink {
        Some(sink) => sink.finish().map_err(|e| Failure {
            code: 3,
            message: format!("{}: {e}", results_path.display()),
        })?,
        None => (0, 0),
    };
    // The engine fails only when a shard cannot start at all (no io_uring,
    // say): a host that is set up wrong, before anything was measured.
    let result = result.map_err(usage)?;
    let health = report::Health {
        fd_limit,
        sink_dropped,
        jsonl_lines,
        results_file: (!args.no_jsonl).then(|| results_path.display().to_string()),
        local_port_range: rt::local_port_range(),
    };
    let run_id = uuid::Uuid::new_v4().to_string();
    let summary = report::summary_json(&plan, &result, &health, &run_id);
    let path = args.out.join(format!("summary-{ts}.json"));
    write_json(&path, &summary)?;
    let text_path = args.out.join(format!("report-{ts}.txt"));
    write_text(&text_path, &report::text_report(&plan, &result, &health))?;
    let csv_path = args.out.join(format!("report-{ts}.csv"));
    write_text(&csv_path, &report::csv(&plan, &result))?;
    let prom_path = args.out.join(format!("metrics-{ts}.prom"));
    write_text(&prom_path, &report::prometheus(&plan, &result))?;
    let turns = report::turn_table(&plan, &result);
    if !turns.is_empty() {
        println!("\nper turn (all stages; prompt tokens from server usage):\n{turns}");
    }
    let verdicts = report::threshold_verdicts(&plan, &result);
    let failed: Vec<_> = verdicts.iter().filter(|v| !v.2.is_empty()).collect();
    if !verdicts.is_empty() {
        for (stage, scenario, failures) in &failed {
            println!("threshold FAIL {stage} {scenario}: {}", failures.join("; "));
        }
        println!(
            "thresholds: {} ({} of {} checks failed)",
            if failed.is_empty() { "PASS" } else { "FAIL" },
            failed.len(),
            verdicts.len()
        );
    }
    if let Some(knee) = report::knee(&plan, &result) {
        println!("{}", report::knee_line(&knee));
    }
    let invalid = report::generator_verdict(&result, &health);
    for reason in &invalid {
        println!("generator: INVALID: {reason}");
    }
    if invalid.is_empty() {
        for caution in report::generator_cautions(&plan, &result, &health) {
            println!("generator: caution: {caution}");
        }
    }
    if !args.no_jsonl {
        println!("results: {} ({jsonl_lines} lines)", results_path.display());
    }
    println!(
        "report: {}, {} and {}",
        text_path.display(),
        csv_path.display(),
        prom_path.display()
    );
    println!("summary: {}", path.display());
    match &result.aborted {
        None if !invalid.is_empty() => {
            eprintln!(
                "loadtest: run invalid: the generator was the bottleneck ({})",
                invalid.join("; ")
            );
            Ok(3)
        }
        None if !failed.is_empty() => Ok(1),
        None => Ok(0),
        Some(reason) if reason.contains("stopped by request") => {
            eprintln!("loadtest: {reason}; the stages shown were measured");
            Ok(130)
        }
        Some(reason) => {
            eprintln!("loadtest: run invalid: {reason}");
            Ok(3)
        }
    }
}

/// Without a terminal, a progress line every this many seconds.
const PLAIN_PROGRESS_EVERY: u32 = 10;

/// The live progress line for one second of a stage.
fn progress_line(plan: &plan::Plan, stage: usize, point: &engine::Point) -> String {
    let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
    let s = &plan.stages[stage];
    format!(
        "stage {}/{} {} {}/{}s{}: {} req/s, p50 {} p99 {} ms, ttft p50 {} ms, errors {}, in flight {}",
        stage + 1,
        plan.stages.len(),
        s.label(),
        point.second,
        s.duration.as_secs(),
        if point.warmup { " (warm-up)" } else { "" },
        point.rps,
        ms(point.latency_p50_ms),
        ms(point.latency_p99_ms),
        ms(point.ttft_p50_ms),
        point.errors,
        point.in_flight
    )
}

fn opt_duration(flag: &str, text: &Option<String>) -> Result<Duration, Failure> {
    text.as_deref()
        .map_or(Ok(Duration::ZERO), |t| duration_flag(flag, t))
}

/// The default bound on open-loop conversations in flight: what the
/// file-descriptor limit leaves after a reserve (each conversation holds a
/// connection; an in-process mock holds the other end too).
fn default_max_inflight(fd_limit: u64, local_mock: bool) -> u64 {
    const RESERVE: u64 = 256;
    if fd_limit == 0 {
        return crate::limits::MAX_INFLIGHT_DEFAULT;
    }
    let per = if local_mock { 2 } else { 1 };
    (fd_limit.saturating_sub(RESERVE) / per).clamp(16, crate::limits::USERS_MAX)
}

/// Closed-loop stages whose users hold more connections to one target
/// address than half the local port range `(low, high)`: connects past
/// that point get slow (see `report::generator_cautions`), so the user
/// hears it before the run rather than from its report.
fn port_range_warnings(plan: &plan::Plan, (low, high): (u32, u32)) -> Vec<String> {
    let half = report::half_port_range((low, high));
    let mut out = Vec::new();
    for stage in &plan.stages {
        let stage::Load::Closed { users } = stage.load else {
            continue;
        };
        let mut per_address: Vec<(std::net::SocketAddr, u64)> = Vec::new();
        for (scenario, n) in plan.scenarios.iter().zip(plan.split_users(users)) {
            let addr = plan.targets[scenario.target].addr;
            match per_address.iter_mut().find(|(a, _)| *a == addr) {
                Some((_, total)) => *total += n,
                None => per_address.push((addr, n)),
            }
        }
        for (addr, n) in per_address.into_iter().filter(|&(_, n)| n > half) {
            out.push(format!(
                "stage {} holds {n} connections to {addr}, more than half the local port range {low}-{high}; past that Linux connects get slow and show as the target's connect time (widen net.ipv4.ip_local_port_range, see tuning/README.md)",
                stage.label()
            ));
        }
    }
    out
}

/// (stage label, scenario name) pairs where a scenario with weight gets no
/// users because the stage has too few for the blend.
fn zero_user_scenarios(plan: &plan::Plan) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for stage in &plan.stages {
        let stage::Load::Closed { users } = stage.load else {
            continue;
        };
        for (scenario, n) in plan.scenarios.iter().zip(plan.split_users(users)) {
            if n == 0 && scenario.weight > 0.0 {
                out.push((stage.label(), scenario.name.clone()));
            }
        }
    }
    out
}

/// Checks, before any shard starts, that every target answers a TCP
/// connect and that the file-descriptor limit can hold the largest stage.
fn preflight(plan: &plan::Plan, fd_limit: u64, local_mock: bool) -> Result<(), Failure> {
    for target in &plan.targets {
        std::net::TcpStream::connect_timeout(&target.addr, plan.connect_timeout).map_err(|e| {
            usage(format!(
                "target {} ({}) is unreachable: {e}",
                target.url, target.addr
            ))
        })?;
    }
    // Each user holds one socket; an in-process mock holds the other end.
    let per_user = if local_mock { 2 } else { 1 };
    let needed = plan.users_max() * per_user + 64;
    if fd_limit > 0 && needed > fd_limit {
        return Err(usage(format!(
            "the largest stage needs about {needed} open files but the limit is {fd_limit}; raise `ulimit -n`, or lower the users or --max-inflight"
        )));
    }
    Ok(())
}

fn write_text(path: &Path, text: &str) -> Result<(), Failure> {
    std::fs::write(path, text).map_err(|e| usage(format!("{}: {e}", path.display())))
}

fn write_json(path: &Path, value: &serde_json::Value) -> Result<(), Failure> {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    std::fs::write(path, text).map_err(|e| usage(format!("{}: {e}", path.display())))
}

extern "C" fn on_interrupt(_: libc::c_int) {
    if engine::stop_was_requested() {
        // Second Ctrl-C: leave now.
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(130) };
    }
    engine::request_stop();
}

fn install_interrupt_handler() {
    // SAFETY: the handler only touches an atomic and calls _exit, both
    // async-signal-safe.
    unsafe {
        libc::signal(
            libc::SIGINT,
            on_interrupt as *const () as libc::sighandler_t,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> RunArgs {
        let mut argv = vec!["loadtest", "run", "--config", "x.json"];
        argv.extend_from_slice(extra);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Run(a) => *a,
            _ => unreachable!(),
        }
    }

    #[test]
    fn cpu_choice() {
        let allowed = [0, 1];
        assert_eq!(
            choose_cpus(&args(&["--mock"]), &allowed).unwrap(),
            (vec![0], vec![1])
        );
        assert_eq!(choose_cpus(&args(&[]), &allowed).unwrap().0, vec![0, 1]);
        assert_eq!(
            choose_cpus(&args(&["--shards", "1"]), &allowed).unwrap().0,
            vec![0]
        );
        assert!(choose_cpus(&args(&["--shards", "3"]), &allowed).is_err());
        assert!(choose_cpus(&args(&["--cpus", "0-5"]), &allowed).is_err());
        assert_eq!(
            choose_cpus(&args(&["--mock"]), &[3]).unwrap(),
            (vec![3], vec![3])
        );
        let (g, m) = choose_cpus(
            &args(&["--mock", "--cpus", "1", "--mock-cpus", "0"]),
            &allowed,
        )
        .unwrap();
        assert_eq!((g, m), (vec![1], vec![0]));
    }

    #[test]
    fn closed_stages_past_half_the_port_range_are_warned_about() {
        let profile = crate::config::parse(
            r#"{"defaults":{"target":"http://127.0.0.1:1"},
                "scenarios":[{"name":"a","weight":1},
                             {"name":"b","weight":1,"target":"http://127.0.0.1:2"}],
                "stages":"100:1s,20000:1s,@50000:1s"}"#,
        )
        .unwrap();
        let plan = plan::build(&profile, &plan::Overrides::default(), vec![0]).unwrap();
        // 20,000 users over two addresses: 10,000 each, under 14,116.
        assert!(port_range_warnings(&plan, (32768, 60999)).is_empty());
        // A narrower range: each address is past half of it.
        let warnings = port_range_warnings(&plan, (40000, 50000));
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(
            warnings[0].starts_with("stage 20000:1s holds 10000 connections to 127.0.0.1:1,"),
            "{}",
            warnings[0]
        );
        assert!(warnings[1].contains("127.0.0.1:2"), "{}", warnings[1]);
        // Open-loop stages are not counted: max_inflight is only a bound.
    }

    #[test]
    fn flag_conflicts_are_usage_errors() {
        let argv = [
            "loadtest", "run", "--config", "x", "--mock", "--target", "http://a",
        ];
        assert!(Cli::try_parse_from(argv).is_err());
        let argv = ["loadtest", "run", "--config", "x", "--mock-ttft", "5ms"];
        assert!(Cli::try_parse_from(argv).is_err());
        let argv = ["loadtest", "run"];
        assert!(Cli::try_parse_from(argv).is_err());
    }

    fn normalized(argv: &[&str]) -> Vec<String> {
        normalize_args(argv.iter().map(OsString::from).collect())
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    #[test]
    fn seed_spellings_are_accepted() {
        assert_eq!(
            normalized(&[
                "loadtest",
                "-config",
                "p.json",
                "-vk",
                "k",
                "-header",
                "X: 1",
                "-out=runs"
            ]),
            [
                "loadtest",
                "run",
                "--config",
                "p.json",
                "--vk",
                "k",
                "--header",
                "X: 1",
                "--out=runs"
            ]
        );
        assert_eq!(
            normalized(&["loadtest", "-version"]),
            ["loadtest", "--version"]
        );
        assert_eq!(
            normalized(&["loadtest", "run", "--config", "p", "--stages", "1:1s"]),
            ["loadtest", "run", "--config", "p", "--stages", "1:1s"]
        );
        // A value that starts with a dash but is not a known flag is kept.
        assert_eq!(
            normalized(&["loadtest", "run", "--model", "-x"]),
            ["loadtest", "run", "--model", "-x"]
        );
        let argv = normalized(&[
            "loadtest", "-config", "p.json", "-stages", "1:1s", "-model", "a/b",
        ]);
        let cli = Cli::try_parse_from(argv).unwrap();
        let Command::Run(args) = cli.command else {
            panic!("not run")
        };
        assert_eq!(args.overrides.model.as_deref(), Some("a/b"));
    }

    #[test]
    fn progress_line_says_where_the_run_is() {
        let profile = crate::config::parse(
            r#"{"defaults":{"target":"http://127.0.0.1:1"},"stages":"5:30s,@100:1m"}"#,
        )
        .unwrap();
        let plan = plan::build(&profile, &Overrides::default(), vec![0]).unwrap();
        let point = engine::Point {
            second: 12,
            warmup: false,
            requests: 990,
            rps: 990.0,
            errors: 3,
            latency_p50_ms: Some(1.5),
            latency_p99_ms: Some(9.25),
            ttft_p50_ms: None,
            in_flight: 7,
        };
        assert_eq!(
            progress_line(&plan, 1, &point),
            "stage 2/2 @100:1m 12/60s: 990 req/s, p50 1.50 p99 9.25 ms, ttft p50 - ms, errors 3, in flight 7"
        );
    }

    #[test]
    fn headers_flag() {
        let h = parse_headers(&["X-A: 1".into(), "Authorization:Bearer k".into()]).unwrap();
        assert_eq!(
            h,
            vec![
                ("X-A".into(), "1".into()),
                ("Authorization".into(), "Bearer k".into())
            ]
        );
        assert!(parse_headers(&["nocolon".into()]).is_err());
    }
}
