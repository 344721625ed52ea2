//! One shard's long-lived state: its connections (idle pools and connect
//! slots), pooled users, the requests in flight, its scenarios' prepared
//! requests and its queue to the JSONL writer; and how it counts a
//! finished turn. A shard owns all of it and shares none of it.
//!
//! The rest of the shard is one file per concern: `lifecycle` (start,
//! stages, ticks, reports), `closed` and `pacer` (the two sources of
//! work), `conversation` (the turns of one conversation), `request`
//! (connections, sending, retry) and `inflight` (the timeout watchdog).

use super::conversation::{TurnAt, User};
use super::exchange::Conn;
use super::inflight::Inflight;
use super::lifecycle::StageRun;
use super::request::Attempt;
use super::workload::ScenarioState;
use super::Tick;
use crate::limits;
use crate::plan::Plan;
use crate::results::{ErrorClass, FinishedTurn, LaneCounts};
use crate::rng::Rng;
use crate::rt;
use crate::sink::{Record, RecordKey, SinkSender};
use rustls::pki_types::ServerName;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

/// The shard's long-lived state.
pub(super) struct Shard {
    pub(super) index: usize,
    pub(super) count: usize,
    pub(super) plan: Arc<Plan>,
    /// Per scenario: head prefix, templates, generated text.
    pub(super) scenarios: Vec<ScenarioState>,
    /// Per target: the TLS configuration (this shard's own session cache)
    /// and the name to verify, for an https target.
    pub(super) tls: Vec<Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>>,
    /// Every target address (`Plan::addresses`): (target, address).
    pub(super) addresses: Vec<(usize, std::net::SocketAddr)>,
    /// Per target: the index in `addresses` of its first address, and the
    /// count of connections opened to it (the next goes to the address
    /// after), so a host with several addresses gets connections on all.
    pub(super) address_turn: Vec<(usize, Cell<usize>)>,
    /// Idle keep-alive connections, per target.
    pub(super) idle: Vec<RefCell<Vec<Conn>>>,
    /// Bounds concurrent connects (see `limits::CONNECTS_IN_FLIGHT_PER_SHARD_MAX`).
    pub(super) connect_slots: rt::Semaphore,
    /// Requests in flight, for the timeout watchdog.
    pub(super) inflight: RefCell<Inflight>,
    /// Tells the watchdog to exit.
    pub(super) watchdog_stop: Cell<bool>,
    /// Connections currently open.
    pub(super) open_connections: Rc<Cell<u64>>,
    /// Open loop: idle users, reused by arrivals so their buffers are too.
    /// Boxed: a `User` is 520 bytes, and held by value in the arrival's
    /// future it made each arrival's task allocation 1,392 bytes, past the
    /// largest size glibc's per-thread cache serves (1,032); boxed, it is
    /// 880, and the user is no longer copied in and out of the pool. (No
    /// change in lag or rate could be measured on the development VM.)
    #[expect(
        clippy::vec_box,
        reason = "an arrival moves a pointer out of the pool, not 520 bytes"
    )]
    pub(super) users: RefCell<Vec<Box<User>>>,
    /// Open loop: conversations in flight now.
    pub(super) open_inflight: Cell<u64>,
    /// Open loop: most conversations in flight in this stage.
    pub(super) inflight_peak: Cell<u64>,
    /// The JSONL writer's queue for this shard.
    pub(super) sink: Option<SinkSender>,
    /// Scratch for the per-turn ITL median.
    pub(super) itl_scratch: RefCell<Vec<u32>>,
}

impl Shard {
    pub(super) fn new(
        index: usize,
        count: usize,
        plan: Arc<Plan>,
        sink: Option<SinkSender>,
    ) -> Self {
        let seed = plan.seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut rng = Rng::new(seed);
        let scenarios = (0..plan.scenarios.len())
            .map(|i| ScenarioState::new(&plan, i, &mut rng))
            .collect();
        let config = plan.trust.as_ref().map(|trust| trust.config());
        let tls = plan
            .targets
            .iter()
            .map(|target| {
                let config = config.clone().filter(|_| target.tls)?;
                // Checked when the plan was built.
                let name = crate::transport::trust::server_name(&target.server_name).ok()?;
                Some((config, name))
            })
            .collect();
        let addresses = plan.addresses();
        let address_turn = (0..plan.targets.len())
            .map(|t| {
                let first = addresses.iter().position(|&(at, _)| at == t).unwrap_or(0);
                // Shards start on different addresses.
                (first, Cell::new(index))
            })
            .collect();
        Shard {
            index,
            count,
            tls,
            addresses,
            address_turn,
            idle: plan
                .targets
                .iter()
                .map(|_| RefCell::new(Vec::new()))
                .collect(),
            plan,
            scenarios,
            connect_slots: rt::Semaphore::new(limits::CONNECTS_IN_FLIGHT_PER_SHARD_MAX),
            inflight: RefCell::new(Inflight::default()),
            watchdog_stop: Cell::new(false),
            open_connections: Rc::new(Cell::new(0)),
            users: RefCell::new(Vec::new()),
            open_inflight: Cell::new(0),
            inflight_peak: Cell::new(0),
            sink,
            itl_scratch: RefCell::new(Vec::new()),
        }
    }

    /// Closes the current second of `run` into a tick.
    pub(super) fn tick(&self, run: &StageRun) -> Box<Tick> {
        let second = run.ticks.get() + 1;
        run.ticks.set(second);
        let in_flight = if run.done.get() {
            0
        } else {
            self.inflight.borrow().live as u64
        };
        Box::new(Tick {
            shard: self.index,
            stage: run.index,
            second,
            window: run.window.take(),
            in_flight,
            lanes: run.metrics.borrow().iter().map(LaneCounts::of).collect(),
        })
    }

    /// An idle user for an open-loop arrival of `scenario`, seeded by the
    /// arrival (the same arrival on each service draws the same content).
    pub(super) fn take_user(&self, scenario: usize, seed: u64) -> Box<User> {
        let sc = &self.plan.scenarios[scenario];
        let keep = !sc.single_turn();
        let nonce = self.plan.run_nonce;
        let mut user = match self.users.borrow_mut().pop() {
            Some(mut user) => {
                user.reseed(seed, nonce, sc.service);
                user
            }
            None => Box::new(User::new(seed, nonce, sc.service, keep)),
        };
        user.scratch.reply.keep_content = keep;
        user
    }

    /// Counts one finished turn: in its scenario's metrics, the current
    /// second and the per-turn log. Returns whether it succeeded (a failed
    /// turn ends the conversation).
    pub(super) fn record(
        &self,
        run: &StageRun,
        user: &User,
        result: Result<Instant, Attempt>,
        at: TurnAt,
    ) -> bool {
        let observed = &user.observed;
        let reply = &user.scratch.reply;
        let (t0, error) = match result {
            Err(a) => (a.t0, Some(a.class)),
            Ok(t0) if (200..300).contains(&observed.status) => (t0, None),
            Ok(t0) => (t0, Some(ErrorClass::for_status(observed.status))),
        };
        let turn = FinishedTurn {
            turn: at.turn,
            turns: at.turns,
            // Open loop: a request belongs to the window its intended time
            // falls in, so a late start cannot move it out of a stage's count.
            warmup: at.intended.unwrap_or(t0) < run.measure_from,
            error,
            status: observed.status,
            connect: user.connect_time,
            tls: user.tls_time,
            tls_resumed: user.tls_resumed,
            stale_retry: user.stale_retry,
            ttfb: observed.ttfb,
            ttft: observed.ttft,
            ttfr: observed.ttfr,
            latency: observed
                .done_at
                .map(|done| done.saturating_duration_since(t0)),
            late: at
                .intended
                .map(|intended| t0.saturating_duration_since(intended)),
            retry_after_s: observed.retry_after_s,
            itl_gaps_us: &user.scratch.itl_gaps_us,
            itl_gaps_dropped: observed.itl_gaps_dropped,
            sse_events: observed.sse_events,
            content_events: observed.content_events,
            reasoning_events: observed.reasoning_events,
            sequence_gaps: reply.sequence_gaps,
            content_bytes: reply.content_bytes,
            prompt_tokens: reply.prompt_tokens,
            completion_tokens: reply.completion_tokens,
            cached_tokens: reply.cached_tokens,
            reasoning_tokens: reply.reasoning_tokens,
            prompt_bytes: user.prompt_bytes,
        };
        if let Some(sink) = &self.sink {
            let key = RecordKey {
                conv_uuid: user.uuid,
                scenario: at.scenario as u16,
                stage: run.index as u16,
                shard: self.index as u16,
                intended: at.intended,
                start: t0,
            };
            sink.send(Record::of(key, &turn, &mut self.itl_scratch.borrow_mut()));
        }
        if !turn.warmup {
            if let Some(n) = run.address_requests.borrow_mut().get_mut(user.address) {
                *n += 1;
            }
        }
        {
            let mut window = run.window.borrow_mut();
            window.record_turn(&turn);
            if self.plan.live {
                window.record_itl(&turn);
            }
        }
        run.metrics.borrow_mut()[at.scenario].record_turn(&turn)
    }
}
