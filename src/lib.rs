//! `loadtest`: a scenario-driven load generator for LLM gateways (any
//! OpenAI- or Anthropic-compatible endpoint), built as a thread-per-core
//! engine: glommio executors whose sockets run on an io_uring of their own,
//! one ring per shard (`--io epoll` and kernels without the ring's flags
//! use an epoll reactor instead; see `rt`).
//!
//! # The model and its costs
//! One glommio executor per selected CPU, pinned, each a *shard* that owns
//! its connections, virtual users, RNG, buffers and histograms. Scheduling
//! inside a shard is cooperative: a task runs until it awaits, so loops over
//! long SSE streams call `yield_if_needed` and the executor's preemption
//! timer is short (2 ms). Shards share nothing on the hot path; a
//! coordinator thread drives stage boundaries and merges the shards'
//! histograms once per stage. Needs Linux ≥ 5.8 (io_uring, for glommio;
//! the shards' own ring wants 6.0, 6.1 for `DEFER_TASKRUN`); as non-root, a
//! memlock limit of at least 512 KiB (each executor registers 3 × 64 KiB).
//!
//! # Layout (each module uses only those listed below it)
//! - `cli`: flags as data and the commands (`run`, `validate`, `compare`,
//!   `merge`, `report`, `mock`); planning in one place for `validate` and
//!   `run`; stop signals; the only place that prints and picks the exit
//!   code.
//! - `compare`: a baseline summary against a new one; `join`: the
//!   per-turn log against a server's own rows.
//! - `report`: the console lines and every output file, rendered from a
//!   `RunSummary` and its `Verdict`; no measuring, no judging.
//! - `engine`: the coordinator and the shards (lifecycle, closed-loop
//!   users, the open-loop pacer, conversations, requests and the timeout
//!   watchdog; `workload` builds each turn's bytes, `exchange` runs one
//!   request on one connection).
//! - `verdict`: thresholds, the knee, generator validity, a comparison's
//!   fairness and the exit code, judged once from the typed results.
//! - `sink`: the per-turn JSONL writer thread.
//! - `results`: the typed results model: shard-local `StageMetrics` and
//!   HDR histograms, stage and run summaries that are written and read
//!   back as `summary-<id>.json`, exact merging of hosts, and the
//!   services of a comparison side by side with their deltas.
//! - `mock`: the built-in OpenAI- and Anthropic-compatible upstream,
//!   faithful by default and hostile on request (faults, drawn delays).
//! - `plan`: a profile plus overrides, validated and resolved into the
//!   `Plan` the engine runs; `config` is the profile as written.
//! - `protocol`: wire-format adapters (OpenAI Chat Completions, Anthropic
//!   Messages) and the JSON skimmer.
//! - `http`: request serialization, the response and SSE push parsers.
//! - `transport`: plain TCP or TLS (rustls driven by hand) over a shard's
//!   socket, the client's trust and the mock's certificates.
//! - `rt`: the runtime seam (executors, the io_uring and epoll reactors,
//!   sockets), the only module that names glommio or a kernel I/O
//!   interface; `host`: process and kernel facts.
//! - `content`, `stage`, `rng`: prompt text, stage strings, the seeded RNG.
//! - `secrets`: what of a header value or URL may ever be shown.
//! - `limits`: every bound, with its cost.

#![warn(missing_docs)]

pub mod cli;
pub mod compare;
pub mod config;
pub mod content;
pub mod engine;
pub mod host;
pub mod http;
pub mod join;
pub mod limits;
pub mod mock;
pub mod plan;
pub mod protocol;
pub mod report;
pub mod results;
pub mod rng;
pub mod rt;
pub mod secrets;
pub mod sink;
pub mod stage;
pub mod transport;
pub mod verdict;
