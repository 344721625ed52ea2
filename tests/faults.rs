//! The mock's hostile side against the generator: a stage with every
//! fault of the catalogue drawn at seeded rates, where each fault must
//! land in its own error class, counted exactly once; and delays drawn
//! from a distribution.

mod common;

use loadtest::config;
use loadtest::engine;
use loadtest::mock::{Delay, Fault, FaultRates};
use loadtest::plan::{self, Overrides};
use loadtest::results::ErrorClass;

use common::{cpus, start_mock};

#[test]
fn every_fault_lands_in_its_own_error_class_with_exact_counts() {
    let rates = "reset=0.08,close_mid_stream=0.08,garbage=0.08,slow_head=0.04,stall=0.04,\
                 status_500=0.08,status_429=0.08,error_event=0.08";
    let mock = start_mock(|c| {
        c.tokens = Some(8);
        c.faults = FaultRates::parse(rates).unwrap();
        c.seed = 7;
    });
    let profile = config::parse(
        r#"{"stages":"8:1500ms","warmup":"0s","timeout":"400ms","defaults":{"stream":true}}"#,
    )
    .unwrap();
    // Without the stale-connection retry, a fault is never drawn twice for
    // one counted request.
    let overrides = Overrides {
        target: Some(format!("http://{}", mock.addr())),
        no_retry: true,
        ..Overrides::default()
    };
    let plan = plan::build(&profile, &overrides, cpus().0).unwrap();
    let result = engine::run(&plan, |_| {}).unwrap();
    let served = mock.stop().unwrap();
    let m = &result.stages[0].total.metrics;
    let class = |c| m.error_count(c);
    let fault = |f| served.fault(f);
    for f in Fault::ALL {
        assert!(fault(f) > 0, "{} never drawn: {served:?}", f.name());
    }
    // A reset on a fresh connection is a reset; on a reused one it looks
    // like a server that closed an idle connection (`eof` without retry).
    assert_eq!(
        class(ErrorClass::ConnReset) + class(ErrorClass::Eof),
        fault(Fault::Reset)
    );
    assert_eq!(
        class(ErrorClass::TruncatedStream),
        fault(Fault::CloseMidStream)
    );
    assert_eq!(class(ErrorClass::BadResponse), fault(Fault::Garbage));
    assert_eq!(
        class(ErrorClass::Timeout),
        fault(Fault::SlowHead) + fault(Fault::Stall)
    );
    assert_eq!(class(ErrorClass::Http5xx), fault(Fault::Status500));
    assert_eq!(class(ErrorClass::Http429), fault(Fault::Status429));
    assert_eq!(
        class(ErrorClass::StreamErrorEvent),
        fault(Fault::ErrorEvent)
    );
    // Nothing else went wrong, and every request is counted once.
    let faults: u64 = Fault::ALL.iter().map(|&f| fault(f)).sum();
    assert_eq!(m.errors_total(), faults, "{:?}", m.error_counts());
    assert_eq!(m.requests, m.ok + m.errors_total());
    assert_eq!(
        m.requests,
        served.chat_responses
            + fault(Fault::Reset)
            + fault(Fault::Garbage)
            + fault(Fault::SlowHead)
            + fault(Fault::Stall)
            + fault(Fault::Status500)
            + fault(Fault::Status429)
    );
}

#[test]
fn drawn_delays_shape_the_latencies() {
    let mock = start_mock(|c| {
        c.tokens = Some(2);
        c.ttft = Delay::parse("p50=20ms,p99=80ms").unwrap();
    });
    let profile =
        config::parse(r#"{"stages":"16:1500ms","warmup":"0s","defaults":{"stream":true}}"#)
            .unwrap();
    let overrides = Overrides {
        target: Some(format!("http://{}", mock.addr())),
        ..Overrides::default()
    };
    let plan = plan::build(&profile, &overrides, cpus().0).unwrap();
    let result = engine::run(&plan, |_| {}).unwrap();
    mock.stop().unwrap();
    let m = &result.stages[0].total.metrics;
    assert_eq!(m.errors_total(), 0);
    // Lower bounds only: a busy machine can add to a delay, never take
    // from it. A fixed 20 ms would put the p99 at ~20 ms, not past 50.
    let p50 = m.ttft.percentile_ms(50.0).unwrap();
    let p99 = m.ttft.percentile_ms(99.0).unwrap();
    assert!(p50 >= 18.0, "ttft p50 {p50} ms");
    assert!(p99 >= 50.0, "ttft p99 {p99} ms");
}
