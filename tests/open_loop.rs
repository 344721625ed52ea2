//! Open-loop stages against the built-in mock, on loopback: arrivals at a
//! set rate whatever the server does, latency from the intended send time,
//! dropped arrivals at `max_inflight`, and the proof that coordinated
//! omission is handled. Rates are low (hundreds per second) and stages
//! short, so the tests are bounded and insensitive to a busy CI machine.

mod common;

use loadtest::engine::{self, RunResult};
use loadtest::mock::{Delay, MockConfig, MockServer};
use loadtest::plan::{self, Overrides, Plan};
use loadtest::report::console::Columns;
use loadtest::results::ErrorClass;
use loadtest::results::{Host, PlanInfo, RunSummary};
use loadtest::{config, verdict};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::cpus;

fn start_mock(tune: impl FnOnce(&mut MockConfig)) -> MockServer {
    common::start_mock(|c| {
        c.tokens = Some(8);
        tune(c);
    })
}

fn plan(profile: &str, mock: &MockServer) -> Plan {
    let profile = config::parse(profile).expect("profile parses");
    let overrides = Overrides {
        target: Some(format!("http://{}", mock.addr())),
        ..Overrides::default()
    };
    plan::build(&profile, &overrides, cpus().0).expect("plan builds")
}

fn run(plan: &Plan) -> RunResult {
    let result = engine::run(plan, |_| {}).expect("run completes");
    assert!(result.stop.is_none(), "stopped: {:?}", result.stop);
    result
}

/// Runs `profile` against a plain mock with its only scenario speaking
/// through `adapter` (a test adapter with a hook that stalls).
fn run_through(adapter: &'static common::Hooked, profile: &str) -> RunResult {
    let mock = start_mock(|_| {});
    let mut plan = plan(profile, &mock);
    plan.scenarios[0].protocol = adapter;
    let result = run(&plan);
    mock.stop().expect("the mock shut down cleanly");
    result
}

#[test]
fn mixed_closed_and_open_stages_make_one_report() {
    let mock = start_mock(|_| {});
    let plan = plan(
        r#"{"stages":"2:300ms,@400:500ms,@~400:500ms","defaults":{"stream":true}}"#,
        &mock,
    );
    let result = run(&plan);
    let served = mock.stop().expect("the mock shut down cleanly");
    assert_eq!(result.stages.len(), 3);
    let closed = &result.stages[0].total.metrics;
    assert!(closed.ok > 0);
    assert_eq!(
        closed.latency_corrected.count(),
        0,
        "closed loop has no intended times"
    );
    assert_eq!(closed.arrivals, 0);
    for stage in &result.stages[1..] {
        let m = &stage.total.metrics;
        assert_eq!(m.errors_total(), 0, "{:?}", m.error_counts());
        // 400/s for 0.5 s: 200 arrivals due (Poisson: about 200).
        if stage.index == 1 {
            assert_eq!(m.arrivals, 200);
        } else {
            assert!((120..=280).contains(&m.arrivals), "{}", m.arrivals);
        }
        assert_eq!(m.dropped_arrivals, 0);
        // Every arrival was sent and finished, but one due in the stage's
        // last moments may find it over (a pacer past the end's grace on a
        // busy machine): then it is missed, and counted.
        assert_eq!(
            m.requests + m.missed_arrivals,
            m.arrivals,
            "every arrival is sent or missed"
        );
        assert!(m.missed_arrivals <= 1, "{} missed", m.missed_arrivals);
        assert_eq!(m.latency_corrected.count(), m.ok);
        assert_eq!(m.ttft_corrected.count(), m.ok);
        assert_eq!(m.sched_lag.count(), m.requests);
        // Corrected is never below uncorrected.
        for p in [50.0, 99.0, 100.0] {
            assert!(m.latency_corrected.percentile_ms(p) >= m.latency.percentile_ms(p));
        }
        let achieved = stage.achieved_rate().unwrap();
        assert!(achieved > 0.0);
    }
    let missed = result.stages[1].total.metrics.missed_arrivals;
    assert_eq!(
        result.stages[1].achieved_rate(),
        Some((200 - missed) as f64 / 0.5),
        "constant spacing: exactly the target, less what was missed"
    );
    let total: u64 = result
        .stages
        .iter()
        .map(|s| s.total.metrics.requests + s.total.metrics.warmup_requests)
        .sum();
    assert_eq!(total, served.chat_responses);
    // One report: the summary has all three stages and calls the run mixed.
    let summary = RunSummary::new(PlanInfo::of(&plan), result, Host::default());
    let verdict = verdict::judge(&summary);
    let text = loadtest::report::summary::summary_json(&summary, &verdict);
    let summary_json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(summary.plan.loop_mode(), "mixed");
    assert_eq!(summary_json["stages"][0]["load"]["kind"], "closed");
    assert_eq!(summary_json["stages"][1]["load"]["kind"], "open");
    assert_eq!(summary_json["stages"][2]["load"]["poisson"], true);
    assert_eq!(summary_json["stages"][1]["open_loop"]["target_rate"], 400.0);
    let stage1 = &summary_json["stages"][1]["total"]["metrics"];
    assert!(stage1["latency_corrected_ms"]["p99"].is_number());
    assert!(stage1["sched_lag_ms"]["p50"].is_number());
    let rows = Columns::of(&summary.plan)
        .rows(&summary.stages[1], summary.plan.max_inflight)
        .join("\n");
    assert!(rows.contains("open loop: target 400.0/s"), "{rows}");
    assert!(rows.contains("corrected"), "{rows}");
}

/// A pacer that sleeps at least 10 ms between wake-ups sends the arrivals
/// due meanwhile together when it wakes: each is sent, none early, and the
/// wait shows as scheduler lag (a sleep never ends before its instant, so
/// the arrivals due in a tick's first half wait at least half a tick).
#[test]
fn a_longer_pacer_tick_sends_arrivals_together_and_shows_the_wait_as_lag() {
    let mock = start_mock(|_| {});
    let plan = plan(
        r#"{"stages":"@1000:600ms","warmup":"0s","pacer_tick":"10ms","defaults":{"stream":false}}"#,
        &mock,
    );
    let result = run(&plan);
    let served = mock.stop().expect("the mock shut down cleanly");
    let m = &result.stages[0].total.metrics;
    assert_eq!(m.arrivals, 600);
    assert_eq!(m.errors_total(), 0, "{:?}", m.error_counts());
    assert_eq!(m.requests + m.missed_arrivals, m.arrivals);
    assert_eq!(m.requests, served.chat_responses);
    let p50 = m.sched_lag.percentile_ms(50.0).unwrap();
    let max = m.sched_lag.max_ms().unwrap();
    assert!(p50 >= 2.5, "lag p50 {p50} ms with a 10 ms tick");
    assert!(max >= 7.5, "lag max {max} ms with a 10 ms tick");
    let summary = RunSummary::new(PlanInfo::of(&plan), result, Host::default());
    assert_eq!(summary.plan.pacer_tick_us, 10_000);
    let header = loadtest::report::console::run_header(&summary.plan);
    assert!(
        header.contains("(open loop, pacer tick 10000us)"),
        "{header}"
    );
}

#[test]
fn poisson_arrivals_with_a_seed_are_reproducible() {
    let arrivals = |seed: u64| {
        let mock = start_mock(|_| {});
        let plan = plan(
            &format!(r#"{{"stages":"@~600:400ms","seed":{seed}}}"#),
            &mock,
        );
        let result = run(&plan);
        mock.stop().expect("the mock shut down cleanly");
        result.stages[0].total.metrics.arrivals
    };
    let (a, b) = (arrivals(11), arrivals(11));
    assert_eq!(a, b, "the same seed must give the same arrivals");
    // Different seeds give different schedules; of three, some count
    // differs (each is ~240 ± 15).
    let others = [arrivals(12), arrivals(13), arrivals(14)];
    assert!(others.iter().any(|&n| n != a), "{a} {others:?}");
}

#[test]
fn max_inflight_overflow_is_counted_not_hidden() {
    let mock = start_mock(|c| c.latency = Delay::Fixed(Duration::from_millis(200)));
    let plan = plan(
        r#"{"stages":"@200:500ms","max_inflight":4,"defaults":{"stream":false}}"#,
        &mock,
    );
    let result = run(&plan);
    mock.stop().expect("the mock shut down cleanly");
    let stage = &result.stages[0];
    let m = &stage.total.metrics;
    assert_eq!(m.arrivals, 100);
    assert!(m.dropped_arrivals > 50, "dropped {}", m.dropped_arrivals);
    assert_eq!(m.requests + m.dropped_arrivals, m.arrivals);
    assert!(m.inflight_peak <= 4, "peak {}", m.inflight_peak);
    assert_eq!(m.errors_total(), 0, "dropped arrivals are not errors");
    let flag = verdict::open_loop_flag(stage).expect("the stage is flagged");
    assert!(flag.contains("dropped"), "{flag}");
    let summary = RunSummary::new(PlanInfo::of(&plan), result, Host::default());
    let knee = verdict::knee(&summary).unwrap();
    assert_eq!(knee.highest_ok, None);
    assert!(knee.first_broken.unwrap().reason.contains("dropped"));
}

#[test]
fn an_arrival_starts_a_whole_conversation() {
    let mock = start_mock(|_| {});
    let plan = plan(
        r#"{"stages":"@100:500ms","scenarios":[{"name":"chat","turns":3,"think_time":"20ms",
            "content":{"script":["a","b","c"]}}]}"#,
        &mock,
    );
    let result = run(&plan);
    mock.stop().expect("the mock shut down cleanly");
    let m = &result.stages[0].total.metrics;
    assert_eq!(m.arrivals, 50);
    assert_eq!(m.conversations_started, 50);
    // Conversations that start near the end are cut by it; every other
    // one finishes (on a busy machine more of them are cut).
    assert_eq!(
        m.conversations_completed + m.conversations_cut,
        m.conversations_started,
        "completed {} cut {}",
        m.conversations_completed,
        m.conversations_cut
    );
    assert!(
        m.conversations_completed >= 25,
        "{}",
        m.conversations_completed
    );
    assert_eq!(
        m.requests,
        m.turn_rows().iter().map(|(_, r)| r.requests).sum::<u64>()
    );
    assert_eq!(m.turn_rows().len(), 3);
    assert_eq!(m.errors_total(), 0);
}

#[test]
fn a_server_stall_shows_in_the_corrected_percentiles() {
    // The mock freezes once for 1 s, 0.5 s into a 2.5 s open-loop stage.
    let mock = start_mock(|c| c.stall = Some((Duration::from_millis(500), Duration::from_secs(1))));
    let plan = plan(
        r#"{"stages":"@200:2500ms","defaults":{"stream":true}}"#,
        &mock,
    );
    let result = run(&plan);
    mock.stop().expect("the mock shut down cleanly");
    let m = &result.stages[0].total.metrics;
    assert_eq!(m.errors_total(), 0, "{:?}", m.error_counts());
    let corrected = m.latency_corrected.percentile_ms(99.0).unwrap();
    assert!(
        corrected >= 800.0,
        "corrected p99 {corrected} ms misses the stall"
    );
    let ttft = m.ttft_corrected.percentile_ms(99.0).unwrap();
    assert!(
        ttft >= 800.0,
        "corrected TTFT p99 {ttft} ms misses the stall"
    );
    // Arrivals kept coming during the stall: the rate was held.
    assert_eq!(m.arrivals, 500);
    assert_eq!(m.requests, 500);
}

#[test]
fn arrivals_that_must_connect_never_wait_for_the_server() {
    // Every answer takes 400 ms, so no connection comes back to the pool
    // for the first 400 ms: each of the ~320 arrivals due by then must open
    // its own, ten times the pacer's connect budget for one pass
    // (`limits::PACER_CONNECTS_PER_PASS`). The budget may hold an arrival
    // back only while this shard reads answers it has already received,
    // never until the server answers: had it waited for the server, the
    // scheduler lag would carry the 400 ms.
    let mock = start_mock(|c| c.latency = Delay::Fixed(Duration::from_millis(400)));
    let plan = plan(
        r#"{"stages":"@800:1s","warmup":"0s","defaults":{"stream":false}}"#,
        &mock,
    );
    let result = run(&plan);
    mock.stop().expect("the mock shut down cleanly");
    let m = &result.stages[0].total.metrics;
    assert_eq!(m.errors_total(), 0, "{:?}", m.error_counts());
    assert_eq!(m.arrivals, 800);
    assert_eq!(m.requests, 800);
    assert!(
        m.connects >= 300,
        "{} connects: the arrivals did not need their own connections",
        m.connects
    );
    let lag = m.sched_lag.percentile_ms(99.0).unwrap();
    assert!(
        lag < 100.0,
        "scheduler lag p99 {lag} ms: arrivals waited for the server's answers"
    );
}

/// An adapter that blocks the shard's thread for a second once: a stall of
/// the generator itself, the case where a closed-loop or naive open-loop
/// tool would send late and report latency from the late send.
static STALL_ONCE: common::Hooked = common::Hooked {
    before_write: || {},
    before_body: stall_once,
};

static STALLED: AtomicU64 = AtomicU64::new(0);

fn stall_once() {
    common::block_on_nth_call(&STALLED, 1, Duration::from_secs(1));
}

#[test]
fn a_generator_stall_is_not_hidden_coordinated_omission() {
    let result = run_through(
        &STALL_ONCE,
        r#"{"stages":"@200:3s","warmup":"300ms","defaults":{"stream":false}}"#,
    );
    let m = &result.stages[0].total.metrics;
    assert!(STALLED.load(Ordering::Relaxed) > 0);
    assert_eq!(m.error_count(ErrorClass::Panic), 0);
    // The arrivals due while the shard was blocked went out a second late.
    // Measured from their late send they look fast; from their intended
    // time they show the second they waited.
    let corrected = m.latency_corrected.percentile_ms(99.0).unwrap();
    let uncorrected = m.latency.percentile_ms(99.0).unwrap();
    let lag = m.sched_lag.percentile_ms(99.0).unwrap();
    // The stall starts with the first response (in the 300 ms warm-up), so
    // measured arrivals wait up to ~700 ms.
    assert!(corrected >= 500.0, "corrected p99 {corrected} ms");
    assert!(lag >= 500.0, "scheduler lag p99 {lag} ms");
    assert!(
        uncorrected < corrected / 2.0,
        "uncorrected p99 {uncorrected} ms should miss the stall (corrected {corrected} ms)"
    );
    // Late arrivals were sent, not dropped or skipped.
    assert_eq!(m.arrivals, 540);
    assert_eq!(m.requests + m.dropped_arrivals, m.arrivals);
}

/// An adapter that blocks the shard's thread for a second on the 600th
/// response: the shard lost the CPU, and a second of arrivals is due when
/// it gets it back.
static STALL_LATER: common::Hooked = common::Hooked {
    before_write: || {},
    before_body: stall_at_600th,
};

static RESPONSES: AtomicU64 = AtomicU64::new(0);

fn stall_at_600th() {
    common::block_on_nth_call(&RESPONSES, 600, Duration::from_secs(1));
}

#[test]
fn a_catch_up_after_a_generator_stall_keeps_reading_answers() {
    let result = run_through(
        &STALL_LATER,
        r#"{"stages":"@1000:2s","warmup":"200ms","defaults":{"stream":false}}"#,
    );
    let m = &result.stages[0].total.metrics;
    assert!(RESPONSES.load(Ordering::Relaxed) >= 600);
    assert_eq!(m.errors_total(), 0, "{:?}", m.error_counts());
    // About a thousand arrivals were due when the shard came back. Sent in
    // one go, they would all be in flight at once (measured: 1,001), each
    // on a new connection, and their answers would be read (and timed)
    // only after the last was sent. The pacer yields every preemption
    // slice instead, so answers are read between slices and connections go
    // back to the pool (measured: 130-250 in flight at the peak in a debug
    // build; the bound leaves room for a slow machine, where the mock
    // answers more slowly).
    let lag = m.sched_lag.percentile_ms(99.0).unwrap();
    assert!(lag >= 500.0, "scheduler lag p99 {lag} ms misses the stall");
    assert!(
        m.inflight_peak < 700,
        "{} conversations in flight at once: the catch-up did not let answers in",
        m.inflight_peak
    );
    // Late arrivals were all sent (the 200 ms warm-up excluded).
    assert_eq!(m.arrivals, 1800);
    assert_eq!(m.requests, 1800);
}

/// An adapter that blocks the shard's thread for 1.5 s on the 200th
/// response of a 1 s stage: when the shard gets its CPU back, the stage
/// is over.
static STALL_PAST_END: common::Hooked = common::Hooked {
    before_write: || {},
    before_body: stall_past_end,
};

static PAST_END: AtomicU64 = AtomicU64::new(0);

fn stall_past_end() {
    common::block_on_nth_call(&PAST_END, 200, Duration::from_millis(1500));
}

#[test]
fn arrivals_due_before_the_end_but_not_sent_by_then_are_missed_not_sent_late() {
    let mock = start_mock(|_| {});
    let mut plan = plan(
        r#"{"stages":"@1000:1s","warmup":"0s","defaults":{"stream":false}}"#,
        &mock,
    );
    plan.scenarios[0].protocol = &STALL_PAST_END;
    let result = run(&plan);
    let served = mock.stop().expect("the mock shut down cleanly");
    let m = &result.stages[0].total.metrics;
    assert!(PAST_END.load(Ordering::Relaxed) >= 200);
    assert_eq!(m.errors_total(), 0, "{:?}", m.error_counts());
    // Every arrival due is accounted for once: sent, dropped or missed.
    assert_eq!(m.arrivals, 1000);
    assert_eq!(
        m.requests + m.dropped_arrivals + m.missed_arrivals,
        m.arrivals
    );
    assert_eq!(m.arrivals_sent, m.requests);
    // About 800 were due during the stall; none went out after the end.
    assert!(m.missed_arrivals >= 600, "missed {}", m.missed_arrivals);
    assert_eq!(served.chat_responses, m.requests);
    // The achieved rate counts what was sent, and the verdict says so.
    let summary = RunSummary::new(PlanInfo::of(&plan), result, Host::default());
    let open = summary.stages[0].open_loop.unwrap();
    assert!(open.achieved_pct < 40.0, "{}", open.achieved_pct);
    let v = verdict::judge(&summary);
    assert!(!v.generator.valid);
    assert!(
        v.generator
            .invalid_reasons
            .iter()
            .any(|r| r.contains("arrivals missed")),
        "{:?}",
        v.generator.invalid_reasons
    );
}

/// An adapter whose first request body takes 400 ms to write: one shard's
/// start-up (which writes its single-turn requests once) is slow.
static SLOW_START: common::Hooked = common::Hooked {
    before_write: slow_first_write,
    before_body: || {},
};

static WRITTEN: AtomicU64 = AtomicU64::new(0);

fn slow_first_write() {
    common::block_on_nth_call(&WRITTEN, 1, Duration::from_millis(400));
}

#[test]
fn the_first_stage_waits_for_every_shard_to_be_ready() {
    let result = run_through(
        &SLOW_START,
        r#"{"stages":"@100:1s","warmup":"0s","defaults":{"stream":false}}"#,
    );
    assert!(WRITTEN.load(Ordering::Relaxed) > 0);
    let m = &result.stages[0].total.metrics;
    assert_eq!(m.errors_total(), 0, "{:?}", m.error_counts());
    // Had the stage clock started before the slow shard was ready, its
    // first arrivals would have gone out ~400 ms late.
    let late = m.sched_lag.max_ms().unwrap();
    assert!(late < 200.0, "an arrival went out {late} ms late");
    assert_eq!(m.arrivals, 100);
    assert_eq!(m.requests, 100);
}
