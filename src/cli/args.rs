//! The command line as data: every flag of every command, defined once
//! with its help. `--help` and the seed tool's single-dash spellings are
//! both made from these definitions.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

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
    /// Render a summary (a merged one too) as a run writes it: the text
    /// report (default), HTML, CSV, Prometheus exposition or summary JSON.
    Report(ReportArgs),
    /// Serve the built-in mock upstream (OpenAI Chat Completions, OpenAI
    /// Responses and Anthropic Messages).
    Mock(MockArgs),
    /// Join a run's per-turn log with a server's own request rows (CSV or
    /// JSONL): time inside the server's handler against time outside it.
    Join(JoinArgs),
}

/// `loadtest join`.
#[derive(Debug, Args)]
pub struct JoinArgs {
    /// The run's results-<id>.jsonl.
    pub results: PathBuf,
    /// The server's rows: CSV with a header row, or JSONL (e.g. the mock's
    /// --log-requests, or `\copy (SELECT …) TO 'rows.csv' CSV HEADER`).
    pub server_rows: PathBuf,
    /// Match on each request's id, or on the conversation UUID (a
    /// conversation's turns in order against its rows in file order).
    #[arg(long, value_enum, default_value = "request-id")]
    pub key: JoinKey,
    /// The server column holding the key. Default: `request_id` or
    /// `conv_uuid`, as --key says.
    #[arg(long, value_name = "COL")]
    pub server_key: Option<String>,
    /// The server column with the time inside the handler, in ms.
    #[arg(long, value_name = "COL", default_value = "latency_ms")]
    pub server_latency: String,
    /// The server column with its time to first response byte, in ms.
    #[arg(long, value_name = "COL", default_value = "ttfb_ms")]
    pub server_ttfb: String,
    /// The server column with the time it waited on its own upstream, in
    /// ms (absent columns are left empty).
    #[arg(long, value_name = "COL", default_value = "upstream_ms")]
    pub server_upstream: String,
    /// Also write the matched rows as CSV to this file.
    #[arg(short = 'o', long = "out", value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// `loadtest join --key`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum JoinKey {
    /// `request_id` (`<conversation UUID>-t<turn>`).
    RequestId,
    /// `conv_uuid`.
    ConvUuid,
}

/// Command-line values that override a profile (`run` and `validate`).
#[derive(Debug, Args)]
pub struct OverrideArgs {
    /// Target URL for every scenario (http[s]://host:port[/path]); a bare
    /// origin gets each protocol's default path, an SDK base URL (…/v1)
    /// the protocol's path appended.
    #[arg(long)]
    pub target: Option<String>,
    /// Stages, overriding the profile's, comma-separated: USERS:DURATION
    /// (closed loop, e.g. 100:60s), @RATE:DURATION (open loop, evenly
    /// spaced arrivals per second, e.g. @40000:60s or @40k:60s) or
    /// @~RATE:DURATION (Poisson arrivals).
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
    /// Do not verify TLS certificates (https targets); said at the start
    /// and recorded in every output.
    #[arg(long)]
    pub insecure: bool,
    /// Trust the CA certificates in this PEM file too, beside the
    /// system's (repeatable).
    #[arg(long, value_name = "FILE")]
    pub cacert: Vec<PathBuf>,
    /// Send what is for HOST:PORT to ADDR instead of resolving HOST; TLS
    /// still verifies the name HOST (as curl's flag; repeatable).
    #[arg(long, value_name = "HOST:PORT:ADDR")]
    pub resolve: Vec<String>,
    /// Negotiate every TLS connection in full instead of resuming the
    /// session on reconnect (to measure full handshakes).
    #[arg(long)]
    pub no_tls_resume: bool,
    /// Open-loop stages: most conversations in flight (all shards); an
    /// arrival beyond it is counted as dropped. Default: sized from the
    /// file-descriptor limit.
    #[arg(long)]
    pub max_inflight: Option<u64>,
    /// Open loop: the pacer's shortest sleep between wake-ups (default
    /// 100us). Arrivals due within one tick are sent together at its end:
    /// a longer tick costs less CPU per arrival and adds up to one tick of
    /// scheduler lag (which the corrected latencies include).
    #[arg(long, value_name = "DURATION")]
    pub pacer_tick: Option<String>,
    /// Do not retry a request whose reused keep-alive connection turns out
    /// closed before any answer (by default it is retried once on a fresh
    /// connection and counted as `retried`; the server may then have
    /// received the POST twice).
    #[arg(long)]
    pub no_retry: bool,
    /// A service to compare, NAME=URL[,model=M][,key_env=VAR][,header=K:V]
    /// (repeatable; replaces the profile's `services`). Every scenario runs
    /// against every service in the same stages and window, each stage's
    /// load going to each service; key_env names the variable holding its
    /// key. With --mock, the URL `mock` is the in-process mock.
    #[arg(long = "service", value_name = "NAME=URL[,…]")]
    pub services: Vec<String>,
    /// The service the others' deltas are taken against. Default: the
    /// fastest by TTFT p50 (latency p50 if not streamed) in each round.
    #[arg(long, value_name = "NAME")]
    pub baseline: Option<String>,
    /// Run the stage list this many times, rotating which service each
    /// user and arrival starts on; deltas are shown per round and over all.
    #[arg(long, value_name = "N")]
    pub rounds: Option<u32>,
}

/// Where the generator runs (`run` and `validate`, so both resolve the
/// same plan).
#[derive(Debug, Args)]
pub struct PlacementArgs {
    /// Generator CPUs, one pinned shard each (e.g. 0,2-3). Default: all
    /// (with --mock: the first half).
    #[arg(long, conflicts_with = "shards")]
    pub cpus: Option<String>,
    /// Number of generator shards, on the first N available CPUs.
    #[arg(long)]
    pub shards: Option<usize>,
    /// Start the built-in mock upstream in-process and target it.
    #[arg(long, conflicts_with = "target")]
    pub mock: bool,
    /// CPUs for the in-process mock. Default: the CPUs the generator does
    /// not use (or the last CPU).
    #[arg(long, requires = "mock")]
    pub mock_cpus: Option<String>,
    /// What carries the shards' sockets (and the in-process mock's):
    /// io_uring, or epoll. Default: io_uring where the kernel supports it
    /// (6.0+, not refused by a sandbox), else epoll with a line saying why.
    #[arg(long, value_enum)]
    pub io: Option<IoArg>,
}

/// A reactor, as `--io` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum IoArg {
    /// One io_uring per shard.
    Uring,
    /// One epoll set per shard.
    Epoll,
}

impl IoArg {
    /// The runtime's name for it.
    pub fn io(self) -> crate::rt::Io {
        match self {
            IoArg::Uring => crate::rt::Io::Uring,
            IoArg::Epoll => crate::rt::Io::Epoll,
        }
    }
}

/// `loadtest compare`.
#[derive(Debug, Args)]
pub struct CompareArgs {
    /// The baseline summary-<id>.json.
    pub old: PathBuf,
    /// The new summary-<id>.json.
    pub new: PathBuf,
    /// A change for the worse by more than this percentage is a regression.
    #[arg(long, default_value_t = 10.0)]
    pub regress_pct: f64,
    /// Also write the comparison as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Also draw the comparison as one HTML page in this file: the table,
    /// and per stage both runs' percentiles on the same axes.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
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

/// `loadtest report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// A `summary-<id>.json`, from a run or from `merge`.
    pub summary: PathBuf,
    /// What to render.
    #[arg(long, value_enum, default_value = "txt")]
    pub format: ReportFormat,
    /// Write it here (replacing the file, whole or not at all) instead of
    /// to stdout.
    #[arg(short = 'o', long = "out")]
    pub out: Option<PathBuf>,
}

/// A format `loadtest report` renders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    /// The text report (`report-<id>.txt`).
    Txt,
    /// One row per stage × scenario (`report-<id>.csv`).
    Csv,
    /// The drawn report (`report-<id>.html`).
    Html,
    /// Prometheus text exposition (`metrics-<id>.prom`).
    Prom,
    /// The summary itself, with its verdict judged again.
    Json,
}

/// `loadtest validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Profile (JSON).
    pub profile: PathBuf,
    /// Overrides, as for `run`.
    #[command(flatten)]
    pub overrides: OverrideArgs,
    /// Placement, as for `run`.
    #[command(flatten)]
    pub placement: PlacementArgs,
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
    /// Output folder. Each run writes results-<id>.jsonl (one line per
    /// turn), summary-<id>.json, report-<id>.txt, report-<id>.csv and
    /// metrics-<id>.prom, where <id> is the start time and a short random
    /// suffix, so runs never overwrite each other.
    #[arg(long, default_value = "runs")]
    pub out: PathBuf,
    /// Print nothing but warnings and the final results (no header, no
    /// stage rows, no progress).
    #[arg(long)]
    pub quiet: bool,
    /// Serve live Prometheus metrics at http://ADDR/metrics while the run
    /// goes (e.g. 127.0.0.1:9464; port 0 picks one, and the address is
    /// printed).
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<String>,
    /// Do not write results-<id>.jsonl (the per-turn log costs ~5-8 % of
    /// the engine's CPU at tens of thousands of requests per second).
    #[arg(long)]
    pub no_jsonl: bool,
    /// Placement of the generator (and the in-process mock).
    #[command(flatten)]
    pub placement: PlacementArgs,
    /// In-process mock: time to first token (50ms, 20ms..80ms or
    /// p50=50ms,p99=400ms).
    #[arg(long, requires = "mock")]
    pub mock_ttft: Option<String>,
    /// In-process mock: delay between tokens (same forms).
    #[arg(long, requires = "mock")]
    pub mock_itl: Option<String>,
    /// In-process mock: non-stream latency (same forms).
    #[arg(long, requires = "mock")]
    pub mock_latency: Option<String>,
    /// In-process mock: faults at seeded per-request rates (see `loadtest
    /// mock --help`).
    #[arg(long, requires = "mock")]
    pub mock_faults: Option<String>,
    /// In-process mock: output tokens per response (capped by max_tokens).
    #[arg(long, requires = "mock")]
    pub mock_tokens: Option<u32>,
    /// In-process mock over TLS, with a CA and certificate made at start
    /// that only this run trusts.
    #[arg(long, requires = "mock")]
    pub mock_tls: bool,
    /// In-process mock: append one JSONL row per answered request to this
    /// file (see `loadtest mock --log-requests`).
    #[arg(long, value_name = "FILE", requires = "mock")]
    pub mock_log_requests: Option<PathBuf>,
}

const MOCK_HELP: &str = "\
Delays (--latency, --ttft, --itl) take a fixed value (200ms), a uniform range (100ms..300ms) or a
log-normal distribution by its median and 99th percentile (p50=200ms,p99=800ms), drawn per
response (per token for --itl) from generators seeded by --seed.

Faults (--faults NAME=RATE,..., rates per request adding up to at most 1; or one request's with
the x-mock-fault: NAME header), and the error class the generator counts each in:
  reset             RST once the request is read: conn_reset (on a reused connection: retried
                    once as stale, or eof with --no-retry)
  close_mid_stream  a stream (or a non-streamed body) cut halfway, connection closed:
                    truncated_stream (non-streamed: eof)
  garbage           bytes that are not HTTP, then close: bad_response
  slow_head         the head sent one byte per 100 ms: timeout under a few seconds' timeout
  stall             no answer at all until the client closes: timeout
  status_500        500 with the API's error body: http_5xx
  status_429        429 with Retry-After: 1: http_429
  error_event       an error event mid-stream: stream_error_event

Per-request headers override the flags: x-mock-latency-ms, x-mock-ttft-ms, x-mock-itl-ms,
x-mock-tokens (output tokens), x-mock-status (force a status code), x-mock-close: 1 (close after
responding), x-mock-fault: NAME.

Routes: POST /v1/chat/completions, /v1/responses, /v1/messages, /v1/messages/count_tokens;
GET /v1/models (Anthropic's shape when the request has anthropic-version), /health.";

/// `loadtest mock`.
#[derive(Debug, Args)]
#[command(after_help = MOCK_HELP)]
pub struct MockArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// What carries the sockets: io_uring or epoll (default: io_uring where
    /// the kernel supports it).
    #[arg(long, value_enum)]
    pub io: Option<IoArg>,
    /// CPUs, one pinned shard each. Default: the last available CPU.
    #[arg(long)]
    pub cpus: Option<String>,
    /// Time to first token of a streamed response: 50ms, 20ms..80ms, or
    /// p50=50ms,p99=400ms.
    #[arg(long, default_value = "0ms")]
    pub ttft: String,
    /// Delay between streamed tokens (same forms, drawn per token).
    #[arg(long, default_value = "0ms")]
    pub itl: String,
    /// Delay before a non-streamed response (same forms).
    #[arg(long, default_value = "0ms")]
    pub latency: String,
    /// Faults at seeded per-request rates, e.g. reset=0.01,status_429=0.02
    /// (catalogue below).
    #[arg(long)]
    pub faults: Option<String>,
    /// Seed for the drawn delays and faults.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
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
    /// Serve TLS with this certificate chain (PEM; with --tls-key).
    #[arg(long, value_name = "CERT.pem", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "KEY.pem", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Serve TLS with a CA and certificate (for localhost, 127.0.0.1, ::1)
    /// made at start; the CA is written to this file for clients'
    /// --cacert.
    #[arg(long, value_name = "CA.pem", conflicts_with = "tls_cert")]
    pub tls_self_signed: Option<PathBuf>,
    /// Append one JSONL row per answered request to this file: its
    /// x-request-id, the conversation UUID, when it was received and when
    /// its first and last bytes went out, status and tokens (for
    /// `loadtest join`; one write per request).
    #[arg(long, value_name = "FILE")]
    pub log_requests: Option<PathBuf>,
}
