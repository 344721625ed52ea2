//! What a virtual user sends: request bytes for each turn of a
//! conversation, built from a scenario's content, cache mode and
//! correlation settings.
//!
//! Single-turn scenarios send one of a fixed set of first messages, so
//! those requests are serialized once per shard at start-up as templates
//! with slots where the conversation UUID goes; a request is then one copy
//! and two 36-byte patches (or no copy at all when nothing varies). Turns
//! of multi-turn conversations depend on the replies so far and are
//! serialized per turn into the user's own buffers.

use crate::content;
use crate::limits;
use crate::plan::{CacheMode, Content, Plan, Scenario};
use crate::protocol::{Message, Role, TurnRequest};
use crate::rng::Rng;

pub use crate::content::{RequestId, UUID_LEN};

/// Stands in for the conversation UUID while a template is serialized;
/// 36 characters that JSON never escapes and no prompt plausibly holds.
const SLOT: &[u8; UUID_LEN] = b"~~loadtest-conversation-uuid-slot~~~";

/// A prepared single-turn request.
#[derive(Debug)]
pub struct Template {
    /// The whole request, with `SLOT` where the UUID goes.
    pub bytes: Vec<u8>,
    /// Offsets of the UUID slots.
    pub uuid_at: Vec<usize>,
    /// Bytes of prompt text (system and user), for token estimates.
    pub prompt_bytes: u64,
}

/// A scenario as one shard sends it.
#[derive(Debug)]
pub struct ScenarioState {
    /// Request line and fixed headers.
    pub head_prefix: Vec<u8>,
    /// Single-turn templates, indexed like the content's choices; empty
    /// for multi-turn scenarios or when the pool is too large.
    pub templates: Vec<Template>,
    /// Generated texts of a `sized` scenario.
    pub sized: Vec<String>,
}

impl ScenarioState {
    /// Prepares scenario `index` of `plan` for one shard; `rng` varies the
    /// generated text between shards.
    pub fn new(plan: &Plan, index: usize, rng: &mut Rng) -> Self {
        let scenario = &plan.scenarios[index];
        let sized = match scenario.content {
            Content::Sized(tokens) => (0..limits::SIZED_VARIANTS)
                .map(|_| content::sized_text(rng, tokens))
                .collect(),
            _ => Vec::new(),
        };
        let mut state = ScenarioState {
            head_prefix: plan.request_head_prefix(index),
            templates: Vec::new(),
            sized,
        };
        if scenario.single_turn() {
            state.templates = state.prepare_templates(plan, scenario);
        }
        state
    }

    fn prepare_templates(&self, plan: &Plan, scenario: &Scenario) -> Vec<Template> {
        let choices: Vec<&str> = match &scenario.content {
            Content::Pool(list) => list.iter().map(String::as_str).collect(),
            Content::Scripted(list) => vec![list[0].as_str()],
            Content::Sized(_) => self.sized.iter().map(String::as_str).collect(),
        };
        if choices.len() > limits::TEMPLATES_MAX {
            return Vec::new();
        }
        let expected =
            usize::from(uuid_in_prompt(plan)) + usize::from(plan.correlation_header.is_some());
        let mut templates = Vec::with_capacity(choices.len());
        let mut body = Vec::new();
        for text in choices {
            let first = first_message(plan, SLOT, text);
            let messages = [Message {
                role: Role::User,
                content: first,
            }];
            let mut bytes = Vec::new();
            build_request(
                plan,
                scenario,
                &self.head_prefix,
                Turn {
                    uuid: SLOT,
                    number: 1,
                    messages: &messages,
                    previous_response_id: None,
                },
                &mut body,
                &mut bytes,
            );
            let uuid_at: Vec<usize> = memchr::memmem::find_iter(&bytes, SLOT).collect();
            if uuid_at.len() != expected {
                // The prompt itself contains the slot text: serialize per
                // request instead.
                return Vec::new();
            }
            templates.push(Template {
                prompt_bytes: prompt_bytes(scenario, &messages),
                bytes,
                uuid_at,
            });
        }
        templates
    }

    /// Picks the user text for `turn` (0-based).
    pub fn turn_text<'a>(&'a self, scenario: &'a Scenario, turn: u64, rng: &mut Rng) -> &'a str {
        match &scenario.content {
            Content::Pool(list) => &list[rng.below(list.len() as u64) as usize],
            Content::Scripted(list) => &list[(turn % list.len() as u64) as usize],
            Content::Sized(_) => &self.sized[rng.below(self.sized.len() as u64) as usize],
        }
    }

    /// Picks a template for a single-turn request, the same way
    /// `turn_text` picks text.
    pub fn pick_template(&self, scenario: &Scenario, rng: &mut Rng) -> Option<usize> {
        if self.templates.is_empty() {
            return None;
        }
        Some(match scenario.content {
            Content::Scripted(_) => 0,
            _ => rng.below(self.templates.len() as u64) as usize,
        })
    }
}

/// Whether the conversation UUID is written into the first message.
fn uuid_in_prompt(plan: &Plan) -> bool {
    match plan.cache_mode {
        CacheMode::Bust => true,
        CacheMode::SharedPrefix => plan.uuid_in_prompt,
        CacheMode::Natural => false,
    }
}

/// The first user message of a conversation: the cache mode's prefix,
/// then the scenario's text.
pub fn first_message(plan: &Plan, uuid: &[u8; UUID_LEN], text: &str) -> String {
    let uuid = std::str::from_utf8(uuid).unwrap_or("");
    let mut out = String::with_capacity(text.len() + UUID_LEN + 4);
    if let Some(prefix) = &plan.shared_prefix {
        out.push_str(prefix);
    }
    if uuid_in_prompt(plan) {
        out.push('[');
        out.push_str(uuid);
        out.push_str("] ");
    }
    out.push_str(text);
    out
}

/// Bytes of prompt text a request carries (system plus messages).
pub fn prompt_bytes(scenario: &Scenario, messages: &[Message]) -> u64 {
    let system = scenario.system.as_ref().map_or(0, String::len);
    (system + messages.iter().map(|m| m.content.len()).sum::<usize>()) as u64
}

/// What one turn sends: the conversation's messages, and in the stateful
/// Responses mode the previous response's id.
#[derive(Debug, Clone, Copy)]
pub struct Turn<'a> {
    /// The conversation's UUID.
    pub uuid: &'a [u8; UUID_LEN],
    /// The turn's number in its conversation, from 1.
    pub number: u64,
    /// The messages to send (the whole history, or only the new message
    /// when the server keeps the history).
    pub messages: &'a [Message],
    /// The previous response's id, in the stateful mode.
    pub previous_response_id: Option<&'a str>,
}

/// Serializes a whole request into `out`: head, correlation header,
/// Content-Length, body (built in `body` first to learn its length).
pub fn build_request(
    plan: &Plan,
    scenario: &Scenario,
    head_prefix: &[u8],
    turn: Turn<'_>,
    body: &mut Vec<u8>,
    out: &mut Vec<u8>,
) {
    let id = RequestId::new(turn.uuid, turn.number);
    let turn = TurnRequest {
        model: &scenario.model,
        system: scenario.system.as_deref(),
        messages: turn.messages,
        max_tokens: scenario.max_tokens,
        stream: scenario.stream,
        previous_response_id: turn.previous_response_id,
    };
    body.clear();
    scenario.protocol.write_body(&turn, body);
    let correlation = plan
        .correlation_header
        .as_deref()
        .map(|name| (name, id.as_bytes()));
    crate::http::request::write(out, head_prefix, correlation, body);
}

/// A fresh random (version 4) UUID, hyphenated, lower case.
pub fn new_uuid(rng: &mut Rng) -> [u8; UUID_LEN] {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&rng.next_u64().to_le_bytes());
    bytes[8..].copy_from_slice(&rng.next_u64().to_le_bytes());
    let uuid = uuid::Builder::from_random_bytes(bytes).into_uuid();
    let mut out = [0u8; UUID_LEN];
    uuid.hyphenated().encode_lower(&mut out);
    out
}

/// Copies a template into `out` with `uuid` in every slot.
pub fn fill_template(template: &Template, uuid: &[u8; UUID_LEN], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&template.bytes);
    for &at in &template.uuid_at {
        out[at..at + UUID_LEN].copy_from_slice(uuid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use crate::plan::{self, Overrides};

    fn plan(text: &str) -> Plan {
        plan::build(
            &config::parse(text).unwrap(),
            &Overrides::default(),
            vec![0],
        )
        .unwrap()
    }

    #[test]
    fn templates_match_a_fresh_build() {
        for mode in ["bust", "natural", "shared-prefix"] {
            let p = plan(&format!(
                r#"{{"defaults":{{"target":"http://127.0.0.1:9","system":"sys"}},"stages":"1:1s",
                   "cache_mode":"{mode}",
                   "scenarios":[{{"content":{{"prompts":["a \"quoted\" prompt","b"]}}}},
                                {{"protocol":"anthropic","content":{{"mode":"sized","approx_input_tokens":50}}}}]}}"#
            ));
            let mut rng = Rng::new(1);
            for index in 0..2 {
                let state = ScenarioState::new(&p, index, &mut rng);
                let scenario = &p.scenarios[index];
                assert_eq!(
                    state.templates.len(),
                    if index == 0 {
                        2
                    } else {
                        limits::SIZED_VARIANTS
                    }
                );
                let uuid = new_uuid(&mut rng);
                let text = match &scenario.content {
                    Content::Pool(list) => list[0].clone(),
                    _ => state.sized[0].clone(),
                };
                let messages = [Message {
                    role: Role::User,
                    content: first_message(&p, &uuid, &text),
                }];
                let (mut body, mut fresh, mut filled) = (Vec::new(), Vec::new(), Vec::new());
                build_request(
                    &p,
                    scenario,
                    &state.head_prefix,
                    Turn {
                        uuid: &uuid,
                        number: 1,
                        messages: &messages,
                        previous_response_id: None,
                    },
                    &mut body,
                    &mut fresh,
                );
                fill_template(&state.templates[0], &uuid, &mut filled);
                assert_eq!(fresh, filled, "{mode}");
                let text = String::from_utf8(filled).unwrap();
                let uuid = std::str::from_utf8(&uuid).unwrap();
                assert!(text.contains(&format!("x-request-id: {uuid}-t1\r\n")));
                assert_eq!(
                    text.contains(&format!("[{uuid}] ")),
                    mode != "natural",
                    "{mode}"
                );
            }
        }
    }

    #[test]
    fn request_ids_are_the_conversation_and_the_turn() {
        let uuid = *b"0b5e2c1a-0000-4000-8000-000000000001";
        let id = |n| String::from_utf8(RequestId::new(&uuid, n).as_bytes().to_vec()).unwrap();
        assert_eq!(id(1), "0b5e2c1a-0000-4000-8000-000000000001-t1");
        assert_eq!(id(12), "0b5e2c1a-0000-4000-8000-000000000001-t12");
        assert!(id(u64::MAX).ends_with("-t18446744073709551615"));
        let conv = "0b5e2c1a-0000-4000-8000-000000000001";
        assert_eq!(RequestId::conversation(&id(3)), Some(conv));
        assert_eq!(RequestId::conversation(&format!("{conv}-t")), None);
        assert_eq!(RequestId::conversation("gateway-row-17-t3"), None);
    }

    #[test]
    fn uuids_are_v4_and_distinct() {
        let mut rng = Rng::new(9);
        let a = new_uuid(&mut rng);
        let b = new_uuid(&mut rng);
        assert_ne!(a, b);
        let text = std::str::from_utf8(&a).unwrap();
        let parsed = uuid::Uuid::parse_str(text).unwrap();
        assert_eq!(parsed.get_version_num(), 4);
    }
}
