//! The closed-loop source of work: a stage's users split over scenarios
//! by weight, dealt to the shards in turn, each running conversations of
//! its scenario back to back until the stage ends.

use super::conversation::{conversation, User};
use super::lifecycle::StageRun;
use super::shard::Shard;
use crate::limits;
use crate::plan::Plan;
use crate::rng::Rng;
use crate::rt;
use std::rc::Rc;
use std::time::Instant;

/// The users of a stage that run on shard `index`, as (user number,
/// scenario lane): the stage's users are split over the profile's
/// scenarios by weight, listed scenario by scenario, and dealt to the
/// shards in turn. With services, every user number is run once per
/// service, on the same shard with the same seed, so each service gets the
/// same users; the service each group starts with rotates with the user
/// number and the round, so none is always spawned first.
pub fn users_of_shard(
    plan: &Plan,
    users: u64,
    index: usize,
    count: usize,
    round: usize,
) -> Vec<(u64, usize)> {
    let services = plan.service_count();
    let mut mine = Vec::new();
    let mut user = 0u64;
    for (base, n) in plan.split_users(users).into_iter().enumerate() {
        for _ in 0..n {
            if user % count as u64 == index as u64 {
                for j in 0..services {
                    let service = (user as usize + round + j) % services;
                    mine.push((user, plan.lane(base, service)));
                }
            }
            user += 1;
        }
    }
    mine
}

/// A user's seed: the same user of the same stage makes the same choices
/// in every run with this seed, whatever the timing.
pub(super) fn user_seed(seed: u64, stage: usize, user: u64) -> u64 {
    let mut rng = Rng::new(seed ^ (stage as u64).wrapping_mul(0xA24B_AED4_963E_E407));
    rng.next_u64() ^ user.wrapping_mul(0x9FB2_1C65_1E98_DF25)
}

/// This shard's share of `total`: an even split, the remainder going to the
/// lowest-numbered shards.
pub fn share_of(total: u64, index: usize, count: usize) -> u64 {
    assert!(index < count, "shard index {index} out of range {count}");
    let count = count as u64;
    let index = index as u64;
    total / count + u64::from(index < total % count)
}

/// A closed-loop virtual user: conversations of one scenario back to back
/// until the stage ends. Holds one connection for its life and hands it
/// back to the shard's idle pool for its target at the end.
pub(super) async fn closed_user(shard: Rc<Shard>, run: Rc<StageRun>, scenario: usize, seed: u64) {
    let plan = shard.plan.clone();
    let sc = &plan.scenarios[scenario];
    let mut user = User::new(seed, plan.run_nonce, sc.service, !sc.single_turn());
    // The clock is read twice per request (send, and each read), because
    // on this VM `clock_gettime` showed up at 4 % of the engine's CPU when
    // it was read four times. The previous response's completion instant
    // serves as "now" for the loop check and the next send; what runs in
    // between is this loop's bookkeeping, well under a microsecond.
    let mut now = Instant::now();
    // A user thinks after every answer: between turns (inside
    // `conversation`), and before starting its next conversation, so
    // single-turn scenarios are paced like people too. Its very first
    // request waits a random part of one think time, so a stage's users
    // arrive spread out as people would, not all in the first millisecond.
    let mut first = true;
    while now < run.end.get() {
        let mut think = user.think_time(sc.think_time);
        if first && !think.is_zero() {
            let part = user.rng.below(1_000_001) as f64 / 1_000_000.0;
            think = think.mul_f64(part);
        }
        first = false;
        if !think.is_zero() {
            let left = run.end.get().saturating_duration_since(Instant::now());
            rt::sleep(think.min(left)).await;
            now = Instant::now();
            if now >= run.end.get() {
                break;
            }
        }
        let outcome = conversation(&shard, &run, scenario, &mut user, now, None).await;
        now = outcome.now;
        if outcome.connect_failed {
            let left = run.end.get().saturating_duration_since(Instant::now());
            rt::sleep(limits::CONNECT_RETRY_BACKOFF.min(left)).await;
            now = Instant::now();
        }
    }
    if let Some(conn) = user.conn.take() {
        shard.idle[sc.target].borrow_mut().push(conn);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_service_gets_the_same_users_on_the_same_shards() {
        let profile = crate::config::parse(
            r#"{"scenarios":[{"name":"a","weight":3},{"name":"b","weight":1}],"stages":"9:1s"}"#,
        )
        .unwrap();
        let overrides = crate::plan::Overrides {
            services: ["x=http://127.0.0.1:9", "y=http://127.0.0.1:10"]
                .iter()
                .map(|s| crate::plan::parse_service(s).unwrap())
                .collect(),
            ..Default::default()
        };
        let plan = crate::plan::build(&profile, &overrides, vec![0]).unwrap();
        for round in 0..2 {
            let mut starts = [0u32; 2];
            for shard in 0..2 {
                let users = users_of_shard(&plan, 9, shard, 2, round);
                for service in 0..2 {
                    // (user number, scenario of the blend) on this service.
                    let mine: Vec<(u64, usize)> = users
                        .iter()
                        .filter(|(_, lane)| plan.scenarios[*lane].service == service)
                        .map(|&(user, lane)| (user, plan.scenarios[lane].base))
                        .collect();
                    let other: Vec<(u64, usize)> = users
                        .iter()
                        .filter(|(_, lane)| plan.scenarios[*lane].service != service)
                        .map(|&(user, lane)| (user, plan.scenarios[lane].base))
                        .collect();
                    assert_eq!(mine, other, "shard {shard}");
                }
                // The first of each user's pair alternates between services.
                for pair in users.chunks(2) {
                    starts[plan.scenarios[pair[0].1].service] += 1;
                }
            }
            assert!(
                starts[0].abs_diff(starts[1]) <= 1,
                "round {round}: {starts:?}"
            );
            let all: usize = (0..2)
                .map(|s| users_of_shard(&plan, 9, s, 2, round).len())
                .sum();
            assert_eq!(all, 18, "9 users on each of 2 services");
        }
    }

    #[test]
    fn shares_add_up() {
        for total in [0u64, 1, 2, 7, 100, 1001] {
            for count in 1..=5 {
                let sum: u64 = (0..count).map(|i| share_of(total, i, count)).sum();
                assert_eq!(sum, total);
                let max = (0..count).map(|i| share_of(total, i, count)).max().unwrap();
                let min = (0..count).map(|i| share_of(total, i, count)).min().unwrap();
                assert!(max - min <= 1);
            }
        }
    }
}
