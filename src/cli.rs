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
    /// Serve the built-in mock upstream (OpenAI chat completions).
    Mock(MockArgs),
}

/// `loadtest run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Profile (JSON), e.g. profiles/ai-gateway.json.
    #[arg(long)]
    pub config: PathBuf,
    /// Target URL, overriding the profile's (http://host:port[/path]).
    #[arg(long, conflicts_with = "mock")]
    pub target: Option<String>,
    /// Stages, overriding the profile's: USERS:DURATION,... e.g. 1:10s,100:60s.
    #[arg(long)]
    pub stages: Option<String>,
    /// Model, overriding the profile's.
    #[arg(long)]
    pub model: Option<String>,
    /// Warm-up at the start of each stage, excluded from statistics (e.g. 2s).
    #[arg(long)]
    pub warmup: Option<String>,
    /// Extra request header "K: V" (repeatable; overrides the profile's).
    #[arg(long = "header", value_name = "K: V")]
    pub headers: Vec<String>,
    /// Seed for random choices.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Output directory for summary-<ts>.json.
    #[arg(long, default_value = "runs")]
    pub out: PathBuf,
    /// Start the built-in mock upstream in-process and target it.
    #[arg(long)]
    pub mock: bool,
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
    #[arg(long, default_value_t = 128)]
    pub tokens: u32,
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
        Command::Mock(args) => serve_mock(args),
    }
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
    };
    rt::raise_fd_limit();
    let server = mock::start(listen, config).map_err(|e| usage(format!("mock: {e}")))?;
    println!(
        "mock upstream listening on http://{} (CPUs {}); POST /v1/chat/completions, GET /health",
        server.addr(),
        plan::format_cpus(&cpus)
    );
    server.wait();
    Ok(0)
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

fn run(args: RunArgs) -> Result<u8, Failure> {
    let text = std::fs::read_to_string(&args.config)
        .map_err(|e| usage(format!("{}: {e}", args.config.display())))?;
    let profile = crate::config::parse(&text)
        .map_err(|e| usage(format!("{}: {e}", args.config.display())))?;
    let allowed = rt::allowed_cpus();
    let (generator_cpus, mock_cpus) = choose_cpus(&args, &allowed)?;
    let mut overrides = Overrides {
        target: args.target.clone(),
        stages: args.stages.clone(),
        model: args.model.clone(),
        warmup: args.warmup.clone(),
        seed: args.seed,
        headers: parse_headers(&args.headers)?,
    };
    let fd_limit = rt::raise_fd_limit();
    let mock_server = if args.mock {
        let config = MockConfig {
            latency: opt_duration("mock-latency", &args.mock_latency)?,
            ttft: opt_duration("mock-ttft", &args.mock_ttft)?,
            itl: opt_duration("mock-itl", &args.mock_itl)?,
            tokens: args.mock_tokens.unwrap_or(128),
            cpus: mock_cpus.clone(),
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

    println!("{}", report::run_header(&plan));
    if let Some(server) = &mock_server {
        println!(
            "built-in mock upstream on {} (CPUs {})",
            server.addr(),
            plan::format_cpus(&mock_cpus)
        );
    }
    println!("{}", report::table_header());
    let stages_total = plan.stages.len();
    let result = engine::run(&plan, |progress| match progress {
        // Progress goes to stderr so stdout stays the table.
        engine::Progress::StageStarted(index) => eprintln!(
            "stage {}/{stages_total} started: {}",
            index + 1,
            plan.stages[index].label()
        ),
        engine::Progress::StageFinished(stage) => println!("{}", report::table_row(stage)),
    });
    if let Some(server) = mock_server {
        server.stop();
    }
    let result = result.map_err(|e| Failure {
        code: 3,
        message: e,
    })?;
    let run_id = uuid::Uuid::new_v4().to_string();
    let summary = report::summary_json(&plan, &result, fd_limit, &run_id);
    let path = args.out.join(format!(
        "summary-{}.json",
        report::timestamp(result.started_at)
    ));
    write_json(&path, &summary)?;
    println!("summary: {}", path.display());
    match &result.aborted {
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

fn opt_duration(flag: &str, text: &Option<String>) -> Result<Duration, Failure> {
    text.as_deref()
        .map_or(Ok(Duration::ZERO), |t| duration_flag(flag, t))
}

/// Checks, before any shard starts, that the target answers a TCP connect
/// and that the file-descriptor limit can hold the largest stage.
fn preflight(plan: &plan::Plan, fd_limit: u64, local_mock: bool) -> Result<(), Failure> {
    let target = &plan.target;
    std::net::TcpStream::connect_timeout(&target.addr, plan.connect_timeout).map_err(|e| {
        usage(format!(
            "target {} ({}) is unreachable: {e}",
            target.url, target.addr
        ))
    })?;
    // Each user holds one socket; an in-process mock holds the other end.
    let per_user = if local_mock { 2 } else { 1 };
    let needed = plan.users_max() * per_user + 64;
    if fd_limit > 0 && needed > fd_limit {
        return Err(usage(format!(
            "the largest stage needs about {needed} open files but the limit is {fd_limit}; raise `ulimit -n` or lower the users"
        )));
    }
    Ok(())
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
            Command::Mock(_) => unreachable!(),
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
