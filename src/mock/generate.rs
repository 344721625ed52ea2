//! What a reply says: the generated text and the token counts (capped by
//! the request and counted in the shard's stats).

use super::faults::Fault;
use super::request::{ChatRequest, Knobs};
use super::server::Shared;
use crate::limits;

/// The generated text, built once per shard and sliced per response: a
/// 128-token reply costs one copy instead of 128 small appends.
#[derive(Default)]
pub(super) struct TextCache {
    text: Vec<u8>,
    /// `ends[i]` is where token i's text ends.
    ends: Vec<usize>,
}

impl TextCache {
    /// The text of the first `tokens` tokens (bounded by
    /// `limits::MOCK_OUTPUT_TOKENS_MAX`: about 8 MB at most).
    pub(super) fn first(&mut self, tokens: u64) -> &[u8] {
        while (self.ends.len() as u64) < tokens {
            push_word(&mut self.text, self.ends.len() as u64);
            self.ends.push(self.text.len());
        }
        match tokens {
            0 => &[],
            n => &self.text[..self.ends[n as usize - 1]],
        }
    }
}

/// Words the mock "generates"; token i is a space and word i mod len.
const WORDS: &[&str] = &[
    "the", "gateway", "routes", "each", "request", "to", "a", "model", "and", "streams", "tokens",
    "back", "while", "latency", "stays", "low", "under", "load",
];

/// What a response will contain, shared by both flavors.
pub(super) struct Generation {
    pub(super) id: u64,
    pub(super) tokens: u64,
    /// Tokens actually sent (a stream cut halfway sends half).
    pub(super) sent: u64,
    pub(super) hit_cap: bool,
    pub(super) prompt_tokens: u64,
}

pub(super) fn generation(
    shared: &Shared,
    knobs: &Knobs,
    request: &ChatRequest<'_>,
    fault: Fault,
) -> Generation {
    let cap = request
        .max_completion_tokens
        .or(request.max_tokens)
        .unwrap_or(u64::MAX);
    let wanted = knobs
        .tokens
        .or(shared.config.tokens.map(u64::from))
        .unwrap_or(if cap == u64::MAX { 128 } else { cap });
    let tokens = wanted
        .min(cap)
        .min(u64::from(limits::MOCK_OUTPUT_TOKENS_MAX));
    let sent = if fault == Fault::CloseMidStream {
        tokens / 2
    } else {
        tokens
    };
    let prompt_tokens = request.prompt_chars.div_ceil(4);
    // Each 200 is counted here, so the count so far numbers this one.
    // Counted before writing: a client can finish reading before this
    // task resumes after its last write.
    let id = shared.stats.get().chat_responses;
    shared.count(|s| {
        s.chat_responses += 1;
        s.completion_tokens += sent;
        s.prompt_tokens += prompt_tokens;
    });
    Generation {
        id,
        tokens,
        sent,
        // The request's cap cut the reply (a model that never stops early
        // always reaches it): `length` / `max_tokens`, as the APIs say.
        hit_cap: tokens == cap,
        prompt_tokens,
    }
}

/// Appends token `i`: a space and a word.
pub(super) fn push_word(out: &mut Vec<u8>, i: u64) {
    out.push(b' ');
    out.extend_from_slice(WORDS[(i % WORDS.len() as u64) as usize].as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_cache_slices_by_token() {
        let mut cache = TextCache::default();
        assert_eq!(cache.first(0), b"");
        assert_eq!(cache.first(3), b" the gateway routes");
        assert_eq!(cache.first(1), b" the");
        let long = cache.first(40).to_vec();
        assert!(long.starts_with(b" the gateway routes"));
        assert_eq!(long.iter().filter(|&&b| b == b' ').count(), 40);
    }
}
