//! Every bound the engine relies on, in one place.
//!
//! Each constant says what it costs (memory allocated at start-up, latency
//! added) with the arithmetic written out. Related bounds are tied together by
//! `const` assertions at the bottom, so changing one without the other fails
//! to compile. Nothing here is read from the network or a profile: profile
//! values are validated *against* these bounds in `plan`.

use std::time::Duration;

/// Bytes of the per-connection read buffer.
///
/// Cost: one buffer per open connection, allocated when the connection is
/// made and reused for every response on it. 16 KiB × 10,000 connections =
/// 160 MiB, which is the most a single host can open here anyway (the file
/// descriptor limit is 20,000 and a loopback test needs two per connection).
/// A response head must fit in it (see `HEAD_BYTES_MAX`); bodies stream
/// through it and need not fit.
pub const READ_BUFFER_BYTES: usize = 16 * 1024;

/// Largest response head (status line plus headers) we accept.
///
/// Gateways send a few hundred bytes; 8 KiB matches common server limits.
/// Anything larger is reported as `bad_response` rather than grown into.
pub const HEAD_BYTES_MAX: usize = 8 * 1024;

/// Most response headers parsed per response.
///
/// Cost: `HEADERS_MAX` × 32 bytes of `httparse::Header` on the stack per
/// parse attempt (2 KiB). More headers than this is `bad_response`.
pub const HEADERS_MAX: usize = 64;

/// Largest non-streamed response body we keep for JSON decoding.
///
/// Cost: the body buffer grows up to this size per virtual user, at most
/// once; 4 MiB × 1,000 users would be 4 GiB, but real bodies are a few KiB,
/// and the buffer only grows to the largest body actually seen.
pub const BODY_BYTES_MAX: usize = 4 * 1024 * 1024;

/// Largest single SSE line (one `data:` field) or event.
///
/// OpenAI and Anthropic chunks are well under 2 KiB; 256 KiB leaves room
/// for gateways that put a whole tool-call argument in one chunk. The carry
/// buffer that holds a line split across reads grows at most to this size.
pub const SSE_EVENT_BYTES_MAX: usize = 256 * 1024;

/// Largest frame (an event's data less its text) that
/// `protocol::memo::EventMemo` keeps, per virtual user. OpenAI and
/// Anthropic text events have frames of 100–300 bytes; a larger one is
/// parsed in full each time rather than held.
pub const EVENT_MEMO_FRAME_BYTES_MAX: usize = 1024;

/// Most content-bearing SSE events whose gaps we keep per response.
///
/// Cost: 4 bytes per gap per virtual user (`u32` microseconds), 64 KiB at
/// this bound. Gaps past the bound are still counted as events but not
/// recorded as inter-token latency, and the overflow is counted.
pub const ITL_GAPS_PER_RESPONSE_MAX: usize = 16 * 1024;

/// Largest request we build (head plus body).
///
/// Long-context scenarios send ~12.5k tokens ≈ 50 KiB; 8 MiB is far above any
/// provider's context window in bytes.
pub const REQUEST_BYTES_MAX: usize = 8 * 1024 * 1024;

/// Most connects in progress at once on one shard.
///
/// A burst of thousands of simultaneous SYNs overflows the target's accept
/// queue (Linux backlog 128 to 4096), and each overflowed SYN costs a 1 s
/// retransmit, which shows up as a false latency spike. 256 per shard keeps
/// two shards below nginx's default backlog of 511.
pub const CONNECTS_IN_FLIGHT_PER_SHARD_MAX: u64 = 256;

/// Default connect timeout.
pub const CONNECT_TIMEOUT_DEFAULT: Duration = Duration::from_secs(5);

/// Default whole-request timeout (connect not included), as in the seed tool.
pub const REQUEST_TIMEOUT_DEFAULT: Duration = Duration::from_secs(120);

/// How often a shard's watchdog looks for requests past their timeout.
///
/// A timeout therefore fires up to this much late. The watchdog is one timer
/// wake-up per tick per shard (10/s), instead of one timer per request, which
/// the research notes price at ~35 µs CPU each.
pub const TIMEOUT_TICK: Duration = Duration::from_millis(100);

/// Most virtual users in one closed-loop stage (all shards together).
///
/// Each VU holds at most one connection, so this is also bounded by the file
/// descriptor limit; the plan checks that separately.
pub const USERS_MAX: u64 = 1_000_000;

/// Highest open-loop rate, arrivals per second over all shards. Far above
/// what one host can send (about 80k/s per core here); a typo such as an
/// extra zero is caught instead of being attempted.
pub const RATE_MAX: f64 = 10_000_000.0;

/// How long an open-loop pacer sleeps at least between wake-ups by default
/// (`pacer_tick` sets it per run), so at high
/// rates it fires every arrival already due once per tick instead of one
/// timer wake-up per arrival. The research notes priced a glommio timer
/// wake-up at ~35 µs of CPU; the shard's own timers (`rt`) cost far less,
/// but a 10 µs tick still measured ~20 % more CPU per request at 20k/s with
/// no clear gain in the lag p99, so the tick stays at 100 µs (10,000 pacer
/// wake-ups/s at most).
pub const PACER_TICK: Duration = Duration::from_micros(100);

/// The range `pacer_tick` may be set to. Below 10 µs a tick is shorter
/// than one wake-up's own cost; above 10 ms the arrivals go out in bursts
/// so large (100 at 10,000/s) that the schedule no longer describes the
/// traffic. Measured at 20,000 arrivals/s on one core (`benches/README.md`):
/// 100 µs costs ~27 µs of CPU per request with a lag p99 of 0.14 ms,
/// 500 µs ~15 µs with 0.55 ms, 1 ms ~12.5 µs with 1.03 ms.
pub const PACER_TICK_MIN: Duration = Duration::from_micros(10);
/// The longest `pacer_tick` (see `PACER_TICK_MIN`).
pub const PACER_TICK_MAX: Duration = Duration::from_millis(10);

/// Open loop: arrivals a pacer starts in one pass that will find no idle
/// connection and must connect, before it lets the answers already in its
/// sockets be read (`rt::after_socket_poll`). Arrivals that an idle
/// connection can serve are not limited. A loopback connect costs the
/// generator ~60-80 µs of CPU (the whole handshake runs on its core), an
/// answer read ~3 µs, and each answer read puts a connection back in the
/// pool. Without the bound, a shard that fell behind with an empty pool
/// (a stage's start, or a deep backlog) spawned its whole backlog before
/// reading one answer: every arrival connected, the backlog grew faster
/// than it drained, and at 50,000/s on one core a stage ended with over
/// 9,000 connections and, with the JSONL log on, never caught up (59 %
/// of the rate achieved, lag p99 5 s; `benches/README.md`). 32 connects
/// are ~2 ms of CPU, about one preemption slice.
pub const PACER_CONNECTS_PER_PASS: u32 = 32;

/// Default bound on conversations in flight per open-loop stage, when the
/// file-descriptor limit is unknown.
pub const MAX_INFLIGHT_DEFAULT: u64 = 10_000;

/// Records a shard may queue for the JSONL writer before it starts
/// dropping (and counting) them.
///
/// Cost: the queue is allocated up front, ~230 bytes a record, so 8,192
/// records ≈ 1.9 MiB per shard (120 MiB on a 64-core box). The writer
/// drains every queue at least every 5 ms; at 80k requests/s a shard fills
/// its queue only if the writer falls 100 ms behind.
pub const SINK_QUEUE_PER_SHARD: usize = 8_192;

/// The JSONL writer appends in batches of about this many bytes...
pub const SINK_BATCH_BYTES: usize = 64 * 1024;

/// ...or at least this often, so lines reach the file while a run is going.
pub const SINK_FLUSH_INTERVAL: Duration = Duration::from_millis(250);

/// Largest file-descriptor table grown up front (`host::presize_fd_table`):
/// 262,144 descriptors, a 2 MiB table. A run that needs more grows it
/// later, one blocking step at a time, as before.
pub const FD_TABLE_PRESIZE_MAX: u64 = 1 << 18;

/// Descriptors a run needs besides its connections (epoll sets, output
/// files, the odd pipe). An in-process mock (`--mock`) sizes the table for
/// its own side when it starts (`mock::start`).
pub const FDS_BESIDES_CONNECTIONS: u64 = 256;

/// Open loop: a scheduler lag p99 above this makes the run invalid (exit
/// code 3): arrivals were that late because the generator itself was
/// saturated, so the numbers describe the generator, not the target.
pub const SCHED_LAG_INVALID: Duration = Duration::from_millis(50);

/// Open loop: how long after a stage's end instant its pacer may still
/// send arrivals that were due before it. The pacer wakes at the end (or a
/// tick later), and a timer that fires a little late must not turn the
/// stage's last arrivals into misses; a pacer later than this is behind,
/// and what it has not sent is missed. It bounds how long a stage can
/// overrun its end with sending.
pub const STAGE_END_GRACE: Duration = Duration::from_millis(10);

/// Open loop: missed arrivals (due, never sent by the end plus
/// `STAGE_END_GRACE`) above this share of a stage's arrivals make the run
/// invalid; below it they are counted and shown.
pub const MISSED_ARRIVALS_INVALID: f64 = 0.001;

/// Open loop: a scheduler lag p99 above this (and up to `SCHED_LAG_INVALID`)
/// leaves the run valid but earns a caution in the report, the summary and
/// on stdout: more than one arrival in a hundred went out over a
/// millisecond late, in bursts, so the corrected percentiles carry that
/// lateness and a sub-millisecond difference between two runs may be the
/// generator's. One millisecond is the accuracy the project aims for
/// (`benches/README.md`, open-loop accuracy).
pub const SCHED_LAG_CAUTION: Duration = Duration::from_millis(1);

/// A shard busier than this share of a stage's wall time (its thread's CPU
/// time over the stage's) earns the stage a caution: a generator CPU that
/// stays near full adds its own queueing to every latency (an answer waits
/// in its socket until the shard gets to it) and caps the rate, in closed
/// loop too, where no scheduler lag shows it. Measured on one core against
/// the mock: 16 % busy at 5,000 arrivals/s, 37 % at 20,000, 73 % at 60,000
/// (still on rate), 98 % at a 150,000/s target it could not reach.
pub const SHARD_BUSY_CAUTION: f64 = 0.9;

/// A shard that waited on average more than this for its CPU each time it
/// became runnable (another process or thread had the CPU;
/// `/proc/thread-self/schedstat`) earns the stage a caution: each wait
/// stamps what the shard then reads that much late. Closed loop shows no
/// scheduler lag, so this is how a starved generator shows there.
/// Measured with a shard at 500 requests/s on one CPU: 1 µs alone, 0.22 ms
/// beside 4 busy loops, 1.5 ms beside 16 (`benches/history.md`).
pub const SHARD_WAIT_PER_RUN_CAUTION: Duration = Duration::from_micros(100);

/// ... and above this the run is invalid: a gateway's own overhead is
/// often about a millisecond, the size of this error.
pub const SHARD_WAIT_PER_RUN_INVALID: Duration = Duration::from_millis(1);

/// Hypervisor steal on the shards' CPUs above this share of a stage earns
/// a caution (the guest's CPUs ran for another guest: time it did not
/// have, in every latency).
pub const STEAL_CAUTION: f64 = 0.02;

/// Most stages in one run.
pub const STAGES_MAX: usize = 1_000;

/// Longest stage.
pub const STAGE_DURATION_MAX: Duration = Duration::from_secs(7 * 24 * 3600);

/// Largest value a latency histogram records, in microseconds (one hour).
///
/// Cost: an HDR histogram with 3 significant digits over 1 µs..1 h holds
/// 2,048 sub-buckets × 23 buckets ÷ 2 ≈ 24k `u64` counters ≈ 190 KiB. Each
/// shard keeps four per stage (latency, TTFT, TTFB, ITL). Larger values are
/// clamped to this and counted as `histogram_clamped`.
pub const HISTOGRAM_US_MAX: u64 = 3_600_000_000;

/// Significant decimal digits kept by every histogram (0.1 % resolution).
pub const HISTOGRAM_SIGFIG: u8 = 3;

/// Most scenarios in one profile.
///
/// Cost: each shard keeps one set of stage metrics per scenario (five lazily
/// allocated histograms of ~190 KiB each once used), so 64 scenarios that
/// all stream cost ~60 MiB per shard per stage at most.
pub const SCENARIOS_MAX: usize = 64;

/// Most services in one comparison.
pub const SERVICES_MAX: usize = 16;

/// Most scenario × service pairs (lanes) in one run: each is measured on
/// its own, so it costs what a scenario costs (above), and 128 lanes that
/// all stream cost ~120 MiB per shard per stage at most.
pub const LANES_MAX: usize = 128;

/// A service whose error rate exceeds the best service's in the same
/// stage by more than this many percentage points is flagged: its delta
/// is then not an overhead.
pub const FAIRNESS_ERROR_POINTS: f64 = 5.0;

/// Open loop: a service sent this share fewer arrivals than another in the
/// same stage is flagged (the schedule gives each the same arrivals, so a
/// shortfall is drops at `max_inflight` or arrivals missed).
pub const FAIRNESS_SHORTFALL: f64 = 0.05;

/// Most rounds of a comparison (`--rounds`); rounds × stages stays within
/// `STAGES_MAX`.
pub const ROUNDS_MAX: u32 = 100;

/// Most turns in one conversation.
///
/// The history is resent every turn, so request size grows with the turn;
/// requests are still bounded by `REQUEST_BYTES_MAX` (a conversation that
/// would exceed it ends early and is counted as `context_limit`).
pub const TURNS_MAX: u64 = 1_000;

/// Turns tracked one by one in the per-turn table; later turns share the
/// last row.
pub const TURN_ROWS: usize = 16;

/// Largest `approx_input_tokens` (about 4 bytes each, so ~4 MiB of text).
pub const SIZED_TOKENS_MAX: u64 = 1_000_000;

/// Different sized texts prepared per scenario per shard. A sized request
/// picks one at random (and the conversation UUID in front makes each one
/// unique anyway); 16 × 12.5k tokens ≈ 800 KiB for the largest shipped tier.
pub const SIZED_VARIANTS: usize = 16;

/// Longest think time.
pub const THINK_TIME_MAX: Duration = Duration::from_secs(3600);

/// Most prompts or script lines in one scenario.
pub const PROMPTS_MAX: usize = 100_000;

/// Longest scenario name (it appears in every table row and label).
pub const SCENARIO_NAME_MAX: usize = 64;

/// Messages each shard may have queued for the coordinator: one tick per
/// second while a stage runs, one report at its end. The coordinator drains
/// the channel every 50 ms, so 16 is far more than needed; a tick that does
/// not fit is dropped (its second is then partial in the time series).
pub const SHARD_MESSAGE_DEPTH: usize = 16;

/// Depth of the bounded channels between the coordinator and each shard.
///
/// Messages are stage commands and stage snapshots, one per stage per
/// direction, so two is enough; four leaves room for a stop command.
pub const CONTROL_CHANNEL_DEPTH: usize = 4;

/// io_uring submission queue depth per shard.
///
/// The research notes saw no difference between 16 and 2048 at 64–1024
/// connections but one SQ-overflow stall at 128; 1024 costs ~64 KiB.
pub const RING_DEPTH: usize = 1024;

/// glommio's registered I/O memory per executor.
///
/// Registered buffers serve only DMA file I/O, which we never do; the
/// default 10 MiB is locked three times per executor and warns as non-root.
pub const IO_MEMORY_BYTES: usize = 64 * 1024;

/// glommio's preemption timer: how long a task may run before the executor
/// asks it to yield. Short, so a long SSE parse cannot delay other users'
/// timestamps by more than this.
pub const PREEMPT_TIMER: Duration = Duration::from_millis(2);

/// Mock server: most concurrent connections per mock shard.
pub const MOCK_CONNECTIONS_PER_SHARD_MAX: usize = 20_000;

/// Mock server: how long a client may take over the TLS handshake before
/// the connection is dropped (a client that never speaks holds nothing
/// longer).
pub const MOCK_TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Mock server: largest request body it reads.
pub const MOCK_REQUEST_BODY_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Mock server: most output tokens it will generate for one response.
pub const MOCK_OUTPUT_TOKENS_MAX: u32 = 1_000_000;

/// Mock server: the gap between the bytes of a `slow_head` fault's
/// response head (~100 bytes, so about 10 s for the head).
pub const MOCK_SLOW_HEAD_BYTE_GAP: Duration = Duration::from_millis(100);

/// Mock server: listen backlog. Large, so the generator's connect bursts are
/// never turned into 1 s SYN retransmits by the mock itself.
pub const MOCK_LISTEN_BACKLOG: i32 = 4096;

/// How often parked executors are nudged.
pub const KICK_INTERVAL: Duration = Duration::from_millis(20);

/// How many kicks reuse one listing of the executor threads.
pub const KICKS_PER_SCAN: u32 = 10;

/// Most ready sockets (epoll) or completions (io_uring) one driver turn
/// hands out. The tasks woken in a
/// turn all run before the driver's next turn, which is when the next
/// due timer (the open-loop pacer's) can fire; a burst of a few hundred
/// answers, each parsed and recorded by its task, would hold the pacer
/// back for milliseconds. Events beyond this stay on epoll's ready list
/// (or in the completion queue) for the next turn.
pub const REACTOR_EVENTS_PER_TURN: usize = 64;

/// The longest the driver blocks without a timer due. Nothing should
/// need it; it bounds the cost of a wake-up this design failed to
/// foresee.
pub const REACTOR_IDLE_MAX: Duration = Duration::from_millis(10);

/// io_uring reactor: submission queue entries per shard (the completion
/// queue has twice as many). A full queue is submitted at once, so this
/// bounds only how much one turn batches; 64 bytes an entry, 16 a
/// completion: ~96 KiB per shard.
pub const URING_ENTRIES: u32 = 1024;

/// io_uring reactor: receive buffers in each shard's provided-buffer ring.
/// The kernel takes one only when bytes arrive and the task gives it back
/// as soon as it has read them, so what is held at once is about one per
/// connection whose answer arrived since the driver's last turn. Running
/// out is not a failure: the receive waits until buffers come back, but
/// behind the sockets still armed, so a pool smaller than the connections
/// with answers pending lengthens the latency tail (512 buffers: p99 96 ms
/// against 37 ms with 2,048 for 1,000 streams, `benches/history.md`). Cost:
/// `URING_BUFFERS × URING_BUFFER_BYTES` = 64 MiB of address space per
/// shard, of which only the pages answers were written into are ever
/// touched (a small answer touches one page of its buffer).
pub const URING_BUFFERS: u16 = 2048;

/// io_uring reactor: the fewest receive buffers the ring offers the kernel
/// at once (`rt::uring::bufs`: the offered set doubles when the kernel
/// wanted more in one turn and halves back when it stops). 32 × 32 KiB =
/// 1 MiB, which stays in cache as it cycles; offering the whole pool made
/// the kernel write every answer into memory the caches had lost.
pub const URING_BUFFERS_OFFERED_MIN: usize = 32;

/// io_uring reactor: bytes per receive buffer. Each receive takes one whole
/// buffer whatever it carries, so a buffer is a completion (a task wake-up
/// and a parse call): a 132-event SSE answer (23.6 KB) arrives in one 32 KiB
/// buffer where 4 KiB buffers needed six, which measured 1.3–1.4× the
/// streamed requests per CPU-second (`benches/history.md`). A small answer
/// in a large buffer wastes its memory but not its cache: only the bytes
/// written are touched.
pub const URING_BUFFER_BYTES: usize = 32 * 1024;

/// io_uring reactor: bytes a socket may have written but not yet taken by
/// the kernel before a writer waits (a request is copied whole when less
/// than this is pending).
pub const URING_SEND_BACKLOG_MAX: usize = 256 * 1024;

/// Queue passes `after_socket_poll` waits at most for the driver's poll.
pub const AFTER_SOCKET_POLL_PASSES_MAX: u32 = 4;

/// Responses ids one mock shard remembers for `previous_response_id`.
/// Cost: ~40 bytes each (a queue slot and a set entry), 4 MB per shard at
/// this bound; a conversation older than the last 100,000 responses of its
/// shard gets a 404, as an expired id does from the real API.
pub const MOCK_RESPONSE_IDS_MAX: usize = 100_000;

/// Deepest JSON nesting the skimmer accepts; deeper documents are `Bad`.
/// It bounds the skimmer's recursion: 64 frames of a few dozen bytes of
/// stack each, while real replies nest four or five deep.
pub const JSON_DEPTH_MAX: u32 = 64;

/// How long a user waits after a failed connect before trying again, so a
/// refused target does not turn into a busy loop of errors.
pub const CONNECT_RETRY_BACKOFF: Duration = Duration::from_millis(100);

/// Most interim (1xx) responses skipped before the real one.
pub const INTERIM_RESPONSES_MAX: usize = 8;

/// Most templates prepared per scenario (a larger prompt pool is
/// serialized per request instead of holding every variant in memory).
pub const TEMPLATES_MAX: usize = 1024;

/// How often a pacer checks whether its stage's conversations are done.
pub const OPEN_DRAIN_POLL: Duration = Duration::from_millis(1);

/// How often the coordinator checks for a stop request while waiting.
pub const STOP_POLL: Duration = Duration::from_millis(50);

/// After a stop request (Ctrl-C, SIGTERM, SIGHUP), how long requests in
/// flight may take to finish before the shards report without them: long
/// enough for a typical answer, short enough for a container runtime's
/// grace period (Docker's and Kubernetes' defaults are 10 s and 30 s).
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// How often an idle shard looks for its next command, and a running shard
/// for a stop command.
pub const COMMAND_POLL: Duration = Duration::from_millis(10);

/// How far ahead of its command a stage's start instant is set, so every
/// shard has seen the command (within `COMMAND_POLL`) and waits for the
/// start instead of beginning behind it. A start stamped when the command
/// was sent left an open-loop shard up to 10 ms of arrivals behind before
/// its first one, with an empty connection pool: 500 connects at once at
/// 50,000/s.
pub const STAGE_START_LEAD: Duration = Duration::from_millis(25);

/// Longest event name kept; longer names are an error.
pub const EVENT_NAME_BYTES_MAX: usize = 128;

/// Largest Content-Length accepted (1 PiB): far above any real body, and far
/// below `u64::MAX`, so arithmetic on it cannot overflow.
pub const CONTENT_LENGTH_MAX: u64 = 1 << 50;

/// How long the JSONL writer sleeps when every queue is empty: at most
/// 5 ms of records wait, far inside a queue of `SINK_QUEUE_PER_SHARD`.
pub const SINK_POLL: Duration = Duration::from_millis(5);

const _: () = assert!(HEAD_BYTES_MAX <= READ_BUFFER_BYTES);
const _: () = assert!(SSE_EVENT_BYTES_MAX <= BODY_BYTES_MAX);
const _: () = assert!(HISTOGRAM_SIGFIG <= 5);
const _: () = assert!(CONTROL_CHANNEL_DEPTH >= 2);
const _: () = assert!(TIMEOUT_TICK.as_millis() < REQUEST_TIMEOUT_DEFAULT.as_millis());
// A pacer pass must be able to start at least one arrival on a new
// connection, or an empty pool with nothing in flight would hold it
// forever; and a pass needs no more connects than a shard may have in
// flight.
const _: () = assert!(PACER_CONNECTS_PER_PASS >= 1);
const _: () = assert!(PACER_TICK_MIN.as_micros() <= PACER_TICK.as_micros());
const _: () = assert!(PACER_TICK.as_micros() <= PACER_TICK_MAX.as_micros());
const _: () = assert!(PACER_CONNECTS_PER_PASS as u64 <= CONNECTS_IN_FLIGHT_PER_SHARD_MAX);
// Every shard must see a stage command before the stage's start instant.
const _: () = assert!(STAGE_START_LEAD.as_millis() > COMMAND_POLL.as_millis());
// The writer must wake more often than it flushes.
const _: () = assert!(SINK_POLL.as_millis() < SINK_FLUSH_INTERVAL.as_millis());
const _: () = assert!(EVENT_NAME_BYTES_MAX <= SSE_EVENT_BYTES_MAX);
const _: () = assert!(CONTENT_LENGTH_MAX < u64::MAX / 2);
const _: () = assert!(URING_BUFFERS.is_power_of_two());
const _: () = assert!(URING_BUFFERS_OFFERED_MIN <= URING_BUFFERS as usize);
