//! `loadtest`: a scenario-driven load generator for LLM gateways (any
//! OpenAI- or Anthropic-compatible endpoint), built as a thread-per-core
//! io_uring engine.
//!
//! # The model and its costs
//! One glommio executor per selected CPU, pinned, each a *shard* that owns
//! its connections, virtual users, RNG, buffers and histograms. Scheduling
//! inside a shard is cooperative: a task runs until it awaits, so loops over
//! long SSE streams call `yield_if_needed` and the executor's preemption
//! timer is short (2 ms). Shards share nothing on the hot path; a
//! coordinator thread drives stage boundaries and merges the shards'
//! histograms once per stage. Needs Linux ≥ 5.8 (io_uring); as non-root, a
//! memlock limit of at least 512 KiB (each executor registers 3 × 64 KiB).
//!
//! # Layout (dependencies point down)
//! - `cli`: flags and the `run` / `validate` / `compare` / `merge` / `mock`
//!   commands; the only place that prints and writes report files.
//! - `config` → `plan`: profile JSON as written, then a validated `Plan`
//!   (scenarios, stages, resolved targets, CPUs). The engine only sees a
//!   `Plan`. `content` generates sized prompt text.
//! - `engine`: coordinator and shards; closed-loop users and the open-loop
//!   pacer (`engine::arrivals`) as the sources of work; request bytes per
//!   turn (`engine::workload`); one request at a time per connection
//!   (`engine::exchange`).
//! - `http`, `sse`: the hand-rolled HTTP/1.1 response parser and the SSE
//!   parser; push parsers over byte slices, bounded, panic-free.
//! - `protocol`: wire-format adapters (OpenAI Chat Completions, Anthropic
//!   Messages), registered in one list.
//! - `metrics`: shard-local counters and HDR histograms, merged exactly.
//! - `sink`: the per-turn JSONL writer thread.
//! - `report`: the console table, the text, CSV and Prometheus reports and
//!   `summary-<ts>.json`; `combine`: merging and comparing summaries.
//! - `mock`: the built-in OpenAI- and Anthropic-compatible upstream, on the
//!   same runtime.
//! - `rt`: the runtime seam, the only module that names glommio.
//! - `limits`: every bound, with its cost.

#![warn(missing_docs)]

pub mod cli;
pub mod compare;
pub mod config;
pub mod content;
pub mod engine;
pub mod host;
pub mod http;
pub mod limits;
pub mod mock;
pub mod plan;
pub mod protocol;
pub mod report;
pub mod results;
pub mod rng;
pub mod rt;
pub mod sink;
pub mod stage;
pub mod verdict;
