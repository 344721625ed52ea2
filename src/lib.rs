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
//! - `cli`: flags and the `run` / `mock` commands; the only place that does
//!   file I/O and prints.
//! - `config` → `plan`: profile JSON as written, then a validated `Plan`
//!   (stages, resolved target, CPUs). The engine only sees a `Plan`.
//! - `engine`: coordinator and shards; virtual users as the source of work;
//!   one request at a time per connection (`engine::exchange`).
//! - `http`, `sse`: the hand-rolled HTTP/1.1 response parser and the SSE
//!   parser; push parsers over byte slices, bounded, panic-free.
//! - `protocol`: wire-format adapters (OpenAI chat), registered in one list.
//! - `metrics`: shard-local counters and HDR histograms, merged exactly.
//! - `report`: the console table and `summary-<ts>.json`.
//! - `mock`: the built-in OpenAI-compatible upstream, on the same runtime.
//! - `rt`: the runtime seam, the only module that names glommio.
//! - `limits`: every bound, with its cost.

#![warn(missing_docs)]

pub mod cli;
pub mod combine;
pub mod config;
pub mod content;
pub mod engine;
pub mod http;
pub mod limits;
pub mod metrics;
pub mod mock;
pub mod plan;
pub mod protocol;
pub mod report;
pub mod rng;
pub mod rt;
pub mod sink;
pub mod sse;
pub mod stage;
