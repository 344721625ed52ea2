//! What the loopback benchmarks share: the request bytes `loadtest run`
//! sends for a profile's first prompt.

use loadtest::engine::workload;
use loadtest::plan;
use loadtest::protocol::{Message, Role};

/// The bytes the engine sends for the first prompt of `config`'s first
/// scenario against `target` (the bench profile uses cache_mode natural
/// and no correlation header, so nothing varies per request).
pub fn request_bytes(config: &str, target: &str) -> Vec<u8> {
    let text = std::fs::read_to_string(config).expect("read profile");
    let profile = loadtest::config::parse(&text).expect("profile");
    let overrides = plan::Overrides {
        target: Some(target.to_string()),
        stages: Some("1:1s".into()),
        warmup: Some("0s".into()),
        ..Default::default()
    };
    let plan = plan::build(&profile, &overrides, vec![0]).expect("plan");
    let scenario = &plan.scenarios[0];
    let plan::Content::Pool(prompts) = &scenario.content else {
        panic!("the bench profile uses a prompt pool");
    };
    let messages = [Message {
        role: Role::User,
        content: prompts[0].clone(),
    }];
    let uuid = [b'0'; workload::UUID_LEN];
    let (mut body, mut request) = (Vec::new(), Vec::new());
    workload::build_request(
        &plan,
        scenario,
        &plan.request_head_prefix(0),
        workload::Turn {
            uuid: &uuid,
            number: 1,
            messages: &messages,
            previous_response_id: None,
        },
        &mut body,
        &mut request,
    );
    request
}
