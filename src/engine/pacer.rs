//! The open-loop source of work: each shard's share of the arrivals,
//! started at their scheduled instants whatever the responses do, each
//! arrival a conversation on a pooled user.

use super::arrivals::{Blend, Schedule};
use super::closed::share_of;
use super::conversation::conversation;
use super::lifecycle::StageRun;
use super::shard::Shard;
use crate::limits;
use crate::rng::Rng;
use crate::rt;
use std::rc::Rc;
use std::time::Instant;

/// The open-loop pacer of one shard for one stage: starts a conversation at
/// every arrival time of its schedule, whatever the responses do.
///
/// Arrivals are due at absolute instants (stage start + offset), so the
/// pacer catches up after any delay instead of drifting. It sleeps until the
/// next arrival but at least `plan.pacer_tick`, and on each wake-up
/// starts every arrival already due: at high rates that is one timer
/// wake-up per tick instead of one per arrival. An arrival that finds
/// `max_inflight` conversations in flight is counted as dropped, never
/// queued or delayed. The stage ends at its end instant whatever the
/// pacer's lag: arrivals due before it but not sent by then (give or take
/// `limits::STAGE_END_GRACE`) are counted as missed (`miss_the_rest`),
/// never sent later.
///
/// Over 70 lines on purpose: the arrival loop is the open loop's hot path
/// and reads best as one control flow with its reasons beside it.
pub(super) async fn pacer(
    shard: Rc<Shard>,
    run: Rc<StageRun>,
    stage: usize,
    rate: f64,
    poisson: bool,
) {
    let plan = &shard.plan;
    let seed = plan.seed ^ (stage as u64).wrapping_mul(0x2545_F491_4F6C_DD1D);
    let mut schedule = Schedule::new(rate, poisson, shard.index, shard.count, seed);
    let mut blend = Blend::new(&plan.blend_weights());
    // With services, each arrival of the schedule is one per service, at
    // the same intended instant and with the same content seed; which
    // service goes first rotates arrival by arrival and round by round.
    let services = plan.service_count();
    let round = plan.round_of(stage) as usize - 1;
    let mut tick = 0usize;
    let mut seeds = Rng::new(seed ^ (shard.index as u64).wrapping_mul(0x9E6C_63D0_676A_9A99));
    let limit = share_of(plan.max_inflight, shard.index, shard.count).max(1);
    let mut pass = PacerPass::new(plan.targets.len());
    // The next arrival's instant, converted from the schedule once per
    // arrival.
    let mut due = run.start + schedule.peek();
    'pacing: loop {
        let mut now = Instant::now();
        pass.reset();
        loop {
            if due >= run.end.get() {
                break 'pacing;
            }
            if now >= run.end.get() + limits::STAGE_END_GRACE {
                miss_the_rest(&run, &mut schedule, &mut blend);
                break 'pacing;
            }
            if due > now {
                break;
            }
            let intended = due;
            schedule.advance();
            due = run.start + schedule.peek();
            let base = blend.pick();
            let seed = seeds.next_u64();
            let first = (tick + round) % services;
            tick += 1;
            let measured = intended >= run.measure_from;
            for j in 0..services {
                let scenario = plan.lane(base, (first + j) % services);
                if measured {
                    run.metrics.borrow_mut()[scenario].arrivals += 1;
                }
                if shard.open_inflight.get() >= limit {
                    if measured {
                        run.metrics.borrow_mut()[scenario].dropped_arrivals += 1;
                    }
                    continue;
                }
                // An arrival past this pass's connect budget waits until
                // the answers already received have been read and their
                // connections pooled. It is held, not dropped: its
                // intended instant stays, and the wait shows as its
                // scheduler lag. The wait is for this shard's own CPU,
                // never for the server.
                let target = plan.scenarios[scenario].target;
                while !pass.admit(target, shard.idle[target].borrow().len()) {
                    rt::after_socket_poll().await;
                    pass.reset();
                    now = Instant::now();
                }
                let inflight = shard.open_inflight.get() + 1;
                shard.open_inflight.set(inflight);
                shard
                    .inflight_peak
                    .set(shard.inflight_peak.get().max(inflight));
                let arrival = open_arrival(shard.clone(), run.clone(), scenario, intended, seed);
                rt::spawn(arrival).detach();
            }
            // A long catch-up (the shard lost the CPU for a while) must
            // not keep it: answers that came in meanwhile would be read,
            // and their latency stamped, only after the whole backlog, and
            // their connections would not return to the pool, so every
            // late arrival would open a new one.
            if rt::need_yield() {
                rt::yield_if_needed().await;
                pass.reset();
                now = Instant::now();
            }
        }
        rt::sleep_until(due.max(now + plan.pacer_tick).min(run.end.get())).await;
    }
    // The stage's arrivals are all started; let them finish.
    while shard.open_inflight.get() > 0 {
        rt::sleep(limits::OPEN_DRAIN_POLL).await;
    }
}

/// Counts the arrivals of the schedule that were due before the stage's
/// end but that the pacer never reached, by scenario; a stop request
/// moves the end, and arrivals after a stop are not missed.
fn miss_the_rest(run: &StageRun, schedule: &mut Schedule, blend: &mut Blend) {
    let offset = |at: Instant| at.saturating_duration_since(run.start);
    // Warm-up arrivals left over are skipped uncounted, as warm-up is.
    let warmup = schedule.skip_until(offset(run.measure_from));
    blend.split(warmup);
    let missed = schedule.skip_until(offset(run.end.get()));
    if run.stopped.get() {
        return;
    }
    let mut metrics = run.metrics.borrow_mut();
    let services = metrics.len() / blend.scenarios();
    for (lanes, n) in metrics.chunks_mut(services).zip(blend.split(missed)) {
        for m in lanes {
            m.arrivals += n;
            m.missed_arrivals += n;
        }
    }
}

/// What one pass of the pacer (its run between two yields) has started:
/// the arrivals it spawned run after it yields, so until then the idle
/// pool has not yet lost the connections they will take.
struct PacerPass {
    /// Per target: arrivals spawned this pass.
    spawned: Vec<usize>,
    /// Arrivals this pass may still start that will find no idle
    /// connection (`limits::PACER_CONNECTS_PER_PASS`).
    connects_left: u32,
}

impl PacerPass {
    fn new(targets: usize) -> Self {
        PacerPass {
            spawned: vec![0; targets],
            connects_left: limits::PACER_CONNECTS_PER_PASS,
        }
    }

    /// A new pass: the arrivals of the last one have run.
    fn reset(&mut self) {
        self.spawned.fill(0);
        self.connects_left = limits::PACER_CONNECTS_PER_PASS;
    }

    /// Whether an arrival for `target` may start in this pass, given the
    /// target's idle connections now; counts it if so.
    fn admit(&mut self, target: usize, idle: usize) -> bool {
        let Some(spawned) = self.spawned.get_mut(target) else {
            return true;
        };
        if *spawned >= idle {
            if self.connects_left == 0 {
                return false;
            }
            self.connects_left -= 1;
        }
        *spawned += 1;
        true
    }
}

/// One open-loop arrival: a conversation on a pooled user, then the user
/// and its connection go back to the shard's pools.
async fn open_arrival(
    shard: Rc<Shard>,
    run: Rc<StageRun>,
    scenario: usize,
    intended: Instant,
    seed: u64,
) {
    // Released on drop, so even a panic outside the per-request guard
    // cannot leave the pacer waiting for a conversation that is gone.
    struct InFlight<'a>(&'a Shard);
    impl Drop for InFlight<'_> {
        fn drop(&mut self) {
            let count = &self.0.open_inflight;
            count.set(count.get().saturating_sub(1));
        }
    }
    let _in_flight = InFlight(&shard);
    let now = Instant::now();
    let measured = intended >= run.measure_from;
    if now >= run.end.get() + limits::STAGE_END_GRACE {
        // Started by the pacer but first run well after the end: missed.
        if measured && !run.stopped.get() {
            run.metrics.borrow_mut()[scenario].missed_arrivals += 1;
        }
        return;
    }
    let mut user = shard.take_user(scenario, seed);
    let late = now.saturating_duration_since(intended);
    if now >= run.measure_from {
        let m = &mut run.metrics.borrow_mut()[scenario];
        m.arrivals_sent += 1;
        if measured {
            m.sched_lag.record(late);
        }
    }
    {
        let mut window = run.window.borrow_mut();
        window.arrivals_sent += 1;
        window.sched_lag.record(late);
    }
    conversation(&shard, &run, scenario, &mut user, now, Some(intended)).await;
    let target = shard.plan.scenarios[scenario].target;
    if let Some(conn) = user.conn.take() {
        shard.idle[target].borrow_mut().push(conn);
    }
    shard.users.borrow_mut().push(user);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pacer_pass_limits_connects_not_reuse() {
        let budget = limits::PACER_CONNECTS_PER_PASS as usize;
        let mut pass = PacerPass::new(2);
        // Target 0 has 5 idle connections: those 5 arrivals are free, the
        // next ones each spend a connect.
        let admitted = (0..1000).take_while(|_| pass.admit(0, 5)).count();
        assert_eq!(admitted, 5 + budget);
        // The budget is the pass's, whatever the target; idle connections
        // of target 1 still serve target 1.
        assert!(pass.admit(1, 3));
        assert!(pass.admit(1, 3));
        assert!(pass.admit(1, 3));
        assert!(!pass.admit(1, 3));
        // A new pass (the spawned arrivals have run) starts afresh.
        pass.reset();
        let admitted = (0..1000).take_while(|_| pass.admit(1, 0)).count();
        assert_eq!(admitted, budget);
        // An unknown target is never held (a plan always has its targets).
        assert!(pass.admit(7, 0));
    }
}
