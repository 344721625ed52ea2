//! One conversation of a scenario: its turns back to back, each built by
//! `workload`, sent by `Shard::request` and counted by `Shard::record`,
//! the reply appended to the history before the user thinks and sends
//! the next turn. Closed-loop users and open-loop arrivals both run
//! conversations through here.

use super::exchange::{Conn, Observed, Scratch};
use super::lifecycle::StageRun;
use super::request::Attempt;
use super::shard::Shard;
use super::workload::{self, UUID_LEN};
use crate::limits;
use crate::protocol::{Message, Role};
use crate::results::ErrorClass;
use crate::rng::Rng;
use crate::rt;
use futures_lite::FutureExt;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

/// How a conversation ended, for the loop that runs the next one.
pub(super) struct Outcome {
    /// The instant to continue from (the last response's completion when
    /// known, so no extra clock read is needed).
    pub(super) now: Instant,
    /// It ended because a connection could not be opened.
    pub(super) connect_failed: bool,
}

/// Runs one conversation of `scenario` with `user`: its turns back to back
/// with think time between them, each reply fed into the next turn's
/// history, until the last turn, a failed turn or the end of the stage.
/// `intended` is the open-loop arrival time of its first turn; closed-loop
/// conversations pass `None`. Over 70 lines because the send is awaited
/// here, not in a helper (see the comment there).
pub(super) async fn conversation(
    shard: &Shard,
    run: &StageRun,
    scenario: usize,
    user: &mut User,
    mut now: Instant,
    mut intended: Option<Instant>,
) -> Outcome {
    let sc = &shard.plan.scenarios[scenario];
    let turns = user.rng.range_inclusive(sc.turns.0, sc.turns.1);
    user.uuid = workload::new_uuid(&mut user.ids);
    user.history.clear();
    user.response_id.clear();
    for turn in 0..turns {
        if turn > 0 {
            let think = user.think_time(sc.think_time);
            if intended.is_some() {
                // A later turn is due one think time after the previous
                // answer; a late timer shows as scheduler lag.
                intended = Some(now + think);
            }
            now = think_until(run, think, now).await;
            if now >= run.end.get() {
                run.metrics.borrow_mut()[scenario].conversations_cut += 1;
                break;
            }
        }
        let Some(source) = shard.prepare(scenario, user, turn) else {
            run.metrics.borrow_mut()[scenario].context_limit += 1;
            // The plan bounds first turns, but escaping can still grow one
            // past the limit; back off rather than spin on it.
            if turn == 0 {
                let left = run.end.get().saturating_duration_since(Instant::now());
                rt::sleep(limits::CONNECT_RETRY_BACKOFF.min(left)).await;
            }
            return Outcome {
                now: Instant::now(),
                connect_failed: false,
            };
        };
        // Awaited here rather than in a helper `async fn`: a helper's own
        // copy of its arguments made every open-loop arrival's task larger.
        let sent = AssertUnwindSafe(shard.request(user, scenario, source, now))
            .catch_unwind()
            .await;
        let result = panic_is_an_error(sent, shard, user, now);
        let connect_failed = matches!(&result, Err(a) if a.class.is_connect());
        now = match (&result, user.observed.done_at) {
            (Ok(_), Some(done)) => done,
            _ => Instant::now(),
        };
        let at = TurnAt {
            scenario,
            turn,
            turns,
            intended,
        };
        if !shard.record(run, user, result, at) {
            return Outcome {
                now,
                connect_failed,
            };
        }
        if turn + 1 < turns {
            if !sc.server_history && user.scratch.reply.content_was_cut() {
                // The reply passed what a history keeps: a next turn would
                // send a context the server never wrote. End here, counted.
                run.metrics.borrow_mut()[scenario].context_limit += 1;
                return Outcome {
                    now,
                    connect_failed: false,
                };
            }
            feed_back(user, sc.server_history);
        }
    }
    Outcome {
        now,
        connect_failed: false,
    }
}

/// Sleeps `think` (never past the stage's end); returns the time after.
async fn think_until(run: &StageRun, think: Duration, now: Instant) -> Instant {
    if think.is_zero() {
        return now;
    }
    let left = run.end.get().saturating_duration_since(Instant::now());
    rt::sleep(think.min(left)).await;
    Instant::now()
}

/// Prepares the next turn after a successful one: the reply joins the
/// history, or, when the server keeps the history, only its id is kept.
fn feed_back(user: &mut User, server_history: bool) {
    let reply = &user.scratch.reply;
    if server_history {
        user.history.clear();
        user.response_id.clear();
        user.response_id
            .push_str(&String::from_utf8_lossy(&reply.response_id));
        return;
    }
    let content = String::from_utf8_lossy(&reply.content).into_owned();
    user.history.push(Message {
        role: Role::Assistant,
        content,
    });
}

/// A panic in the request code is counted as the `panic` error class (its
/// connection dropped), never a lost shard.
fn panic_is_an_error(
    sent: std::thread::Result<Result<Instant, Attempt>>,
    shard: &Shard,
    user: &mut User,
    now: Instant,
) -> Result<Instant, Attempt> {
    sent.unwrap_or_else(|_| {
        shard.close(&mut user.conn);
        Err(Attempt {
            class: ErrorClass::Panic,
            t0: now,
        })
    })
}

/// One virtual user's state.
pub(super) struct User {
    /// The connection it holds, if any.
    pub(super) conn: Option<Conn>,
    /// Its response buffers.
    pub(super) scratch: Scratch,
    /// A request serialized for this user (multi-turn, or a filled template).
    pub(super) request: Vec<u8>,
    /// Body scratch while serializing.
    pub(super) body: Vec<u8>,
    /// The conversation so far (multi-turn only; with the server keeping
    /// the history, only the new message).
    pub(super) history: Vec<Message>,
    /// The previous response's id (stateful Responses conversations).
    pub(super) response_id: String,
    /// The current conversation's UUID.
    pub(super) uuid: [u8; UUID_LEN],
    /// Bytes of prompt text in the current request (for estimates).
    pub(super) prompt_bytes: u64,
    /// Content and turn choices, from the run's seed.
    pub(super) rng: Rng,
    /// Conversation UUIDs: the seed mixed with a per-run nonce, so reruns
    /// never repeat a UUID a cache might remember.
    pub(super) ids: Rng,
    /// What the exchange saw.
    pub(super) observed: Observed,
    /// Time spent opening a connection for the current request (TCP).
    pub(super) connect_time: Option<Duration>,
    /// The TLS handshake on that connection.
    pub(super) tls_time: Option<Duration>,
    /// That handshake resumed a session.
    pub(super) tls_resumed: bool,
    /// The address of the current request's connection (an index into
    /// `Plan::addresses`).
    pub(super) address: usize,
    /// The current request was retried after a stale connection.
    pub(super) stale_retry: bool,
}

impl User {
    /// A user whose choices follow `seed` and whose conversation UUIDs
    /// follow `seed`, the run's nonce and its service: users of the same
    /// seed on two services say the same things under different UUIDs, so
    /// neither service's requests can hit a cache the other's warmed.
    pub(super) fn new(seed: u64, nonce: u64, service: usize, keep_content: bool) -> Self {
        let mut scratch = Scratch::default();
        scratch.reply.keep_content = keep_content;
        User {
            conn: None,
            scratch,
            request: Vec::new(),
            body: Vec::new(),
            history: Vec::new(),
            response_id: String::new(),
            uuid: [b'0'; UUID_LEN],
            prompt_bytes: 0,
            rng: Rng::new(seed),
            ids: Rng::new(ids_seed(seed, nonce, service)),
            observed: Observed::default(),
            connect_time: None,
            tls_time: None,
            tls_resumed: false,
            address: 0,
            stale_retry: false,
        }
    }

    /// Starts over from `seed`, as `new` would (a pooled open-loop user
    /// taking a new arrival).
    pub(super) fn reseed(&mut self, seed: u64, nonce: u64, service: usize) {
        self.rng = Rng::new(seed);
        self.ids = Rng::new(ids_seed(seed, nonce, service));
    }

    /// A think time drawn from the scenario's range.
    pub(super) fn think_time(&mut self, (min, max): (Duration, Duration)) -> Duration {
        if max <= min {
            return min;
        }
        let span = (max - min).as_micros() as u64;
        min + Duration::from_micros(self.rng.below(span + 1))
    }
}

/// The seed of a user's conversation UUIDs (service 0's is what it was
/// before services existed).
fn ids_seed(seed: u64, nonce: u64, service: usize) -> u64 {
    seed ^ nonce ^ (service as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93)
}

/// Where the bytes of a request are.
#[derive(Debug, Clone, Copy)]
pub(super) enum Source {
    /// A shard template, sent as is (nothing in it varies).
    Template(usize),
    /// The user's own `request` buffer.
    Own,
}

/// Where a finished request sits: its scenario, its turn (0-based) of how
/// many, and its open-loop intended send time.
#[derive(Debug, Clone, Copy)]
pub(super) struct TurnAt {
    pub(super) scenario: usize,
    pub(super) turn: u64,
    pub(super) turns: u64,
    pub(super) intended: Option<Instant>,
}

impl Shard {
    /// Puts turn `turn` of the user's conversation into sendable bytes.
    /// `None` when the request would exceed `limits::REQUEST_BYTES_MAX`.
    pub(super) fn prepare(&self, scenario: usize, user: &mut User, turn: u64) -> Option<Source> {
        let sc = &self.plan.scenarios[scenario];
        let state = &self.scenarios[scenario];
        if turn == 0 {
            if let Some(i) = state.pick_template(sc, &mut user.rng) {
                let template = &state.templates[i];
                user.prompt_bytes = template.prompt_bytes;
                if template.uuid_at.is_empty() {
                    return Some(Source::Template(i));
                }
                workload::fill_template(template, &user.uuid, &mut user.request);
                return Some(Source::Own);
            }
        }
        let text = state.turn_text(sc, turn, &mut user.rng);
        let content = if turn == 0 {
            workload::first_message(&self.plan, &user.uuid, text)
        } else {
            text.to_string()
        };
        user.history.push(Message {
            role: Role::User,
            content,
        });
        user.prompt_bytes = workload::prompt_bytes(sc, &user.history);
        // Stateful (the server keeps the history): `history` holds only the
        // new message, and the previous response's id goes with it.
        let previous = (sc.server_history && turn > 0 && !user.response_id.is_empty())
            .then_some(user.response_id.as_str());
        let turn = workload::Turn {
            uuid: &user.uuid,
            number: turn + 1,
            messages: &user.history,
            previous_response_id: previous,
        };
        workload::build_request(
            &self.plan,
            sc,
            &state.head_prefix,
            turn,
            &mut user.body,
            &mut user.request,
        );
        (user.request.len() <= limits::REQUEST_BYTES_MAX).then_some(Source::Own)
    }
}
