//! Generated prompt text for `sized` content and the shared prefix.
//!
//! Sized text must not flatter the system under test: a repeated phrase
//! compresses to nothing and a fixed text can be cached, so the text is a
//! seeded random walk over a few hundred ordinary words, cut into
//! sentences, ending with a question a model can answer. It is generated
//! once per shard at start-up (`limits::SIZED_VARIANTS` variants per
//! scenario), never per request.
//!
//! Lengths follow the usual rule of thumb of four bytes per token; the
//! server's `usage` stays the source of truth for what was actually sent.

use crate::rng::Rng;

/// Bytes per token assumed when sizing text or estimating counts.
pub const BYTES_PER_TOKEN: u64 = 4;

/// Length of a hyphenated UUID, as conversation UUIDs are written into
/// prompts, headers and the per-turn log.
pub const UUID_LEN: usize = 36;

/// Estimated tokens for `bytes` of text (used only when the server sends
/// no usage, and labelled as an estimate wherever it appears).
pub fn estimate_tokens(bytes: u64) -> u64 {
    bytes.div_ceil(BYTES_PER_TOKEN)
}

/// The vocabulary: common English and systems words of varied length.
const WORDS: &[&str] = &[
    "a",
    "about",
    "access",
    "account",
    "across",
    "action",
    "active",
    "adapter",
    "after",
    "agent",
    "allocate",
    "already",
    "also",
    "always",
    "amount",
    "analysis",
    "and",
    "another",
    "answer",
    "any",
    "api",
    "application",
    "archive",
    "around",
    "ask",
    "audit",
    "available",
    "average",
    "back",
    "backend",
    "balance",
    "bandwidth",
    "base",
    "batch",
    "because",
    "before",
    "behind",
    "benchmark",
    "better",
    "between",
    "billing",
    "block",
    "body",
    "boundary",
    "branch",
    "buffer",
    "build",
    "burst",
    "but",
    "by",
    "cache",
    "call",
    "can",
    "capacity",
    "careful",
    "carry",
    "case",
    "change",
    "channel",
    "check",
    "choose",
    "client",
    "close",
    "cluster",
    "code",
    "cold",
    "collect",
    "common",
    "compare",
    "complete",
    "compute",
    "config",
    "connection",
    "consider",
    "context",
    "control",
    "copy",
    "core",
    "cost",
    "could",
    "count",
    "cover",
    "create",
    "current",
    "customer",
    "daily",
    "data",
    "deadline",
    "decide",
    "default",
    "delay",
    "deliver",
    "demand",
    "deploy",
    "describe",
    "design",
    "detail",
    "device",
    "different",
    "direct",
    "disk",
    "drift",
    "during",
    "each",
    "early",
    "edge",
    "effect",
    "either",
    "empty",
    "enable",
    "encode",
    "end",
    "engine",
    "enough",
    "error",
    "estimate",
    "even",
    "event",
    "every",
    "example",
    "expect",
    "explain",
    "fail",
    "fast",
    "feature",
    "field",
    "file",
    "filter",
    "final",
    "find",
    "first",
    "fix",
    "flow",
    "follow",
    "for",
    "format",
    "forward",
    "from",
    "full",
    "gateway",
    "general",
    "give",
    "global",
    "good",
    "graph",
    "group",
    "grow",
    "guard",
    "handle",
    "hardware",
    "have",
    "header",
    "health",
    "heavy",
    "help",
    "high",
    "history",
    "hold",
    "host",
    "hour",
    "idle",
    "if",
    "image",
    "important",
    "improve",
    "in",
    "index",
    "input",
    "instance",
    "into",
    "issue",
    "it",
    "job",
    "join",
    "just",
    "keep",
    "kernel",
    "key",
    "kind",
    "know",
    "label",
    "large",
    "last",
    "later",
    "latency",
    "layer",
    "lead",
    "learn",
    "less",
    "level",
    "limit",
    "line",
    "link",
    "list",
    "load",
    "local",
    "lock",
    "log",
    "long",
    "loop",
    "low",
    "main",
    "make",
    "manage",
    "many",
    "map",
    "match",
    "maybe",
    "measure",
    "memory",
    "merge",
    "message",
    "method",
    "metric",
    "middle",
    "might",
    "minute",
    "mode",
    "model",
    "monitor",
    "more",
    "most",
    "move",
    "much",
    "must",
    "name",
    "near",
    "need",
    "network",
    "never",
    "new",
    "next",
    "node",
    "normal",
    "not",
    "note",
    "now",
    "number",
    "object",
    "of",
    "often",
    "old",
    "on",
    "once",
    "only",
    "open",
    "operator",
    "option",
    "or",
    "order",
    "other",
    "our",
    "out",
    "output",
    "over",
    "owner",
    "packet",
    "page",
    "parse",
    "part",
    "pass",
    "path",
    "pattern",
    "peak",
    "people",
    "per",
    "period",
    "plan",
    "point",
    "policy",
    "pool",
    "port",
    "possible",
    "prefer",
    "prepare",
    "process",
    "produce",
    "profile",
    "prompt",
    "protocol",
    "provider",
    "proxy",
    "public",
    "pull",
    "push",
    "query",
    "queue",
    "quick",
    "quota",
    "rate",
    "reach",
    "read",
    "ready",
    "real",
    "reason",
    "record",
    "reduce",
    "region",
    "release",
    "remote",
    "replica",
    "report",
    "request",
    "require",
    "reserve",
    "reset",
    "resource",
    "response",
    "result",
    "retry",
    "return",
    "review",
    "right",
    "route",
    "rule",
    "run",
    "safe",
    "same",
    "sample",
    "scale",
    "schedule",
    "second",
    "secure",
    "select",
    "send",
    "server",
    "service",
    "session",
    "set",
    "shape",
    "share",
    "short",
    "should",
    "show",
    "side",
    "signal",
    "simple",
    "since",
    "single",
    "size",
    "slow",
    "small",
    "socket",
    "some",
    "source",
    "spend",
    "split",
    "stable",
    "stage",
    "start",
    "state",
    "status",
    "step",
    "still",
    "storage",
    "stream",
    "strict",
    "strong",
    "such",
    "summary",
    "support",
    "system",
    "table",
    "tail",
    "take",
    "target",
    "task",
    "team",
    "tenant",
    "test",
    "than",
    "that",
    "the",
    "their",
    "then",
    "there",
    "these",
    "they",
    "thing",
    "this",
    "thread",
    "through",
    "time",
    "to",
    "today",
    "token",
    "total",
    "trace",
    "traffic",
    "turn",
    "under",
    "unit",
    "until",
    "update",
    "upstream",
    "usage",
    "use",
    "user",
    "value",
    "version",
    "very",
    "view",
    "wait",
    "want",
    "warm",
    "watch",
    "way",
    "we",
    "week",
    "weight",
    "what",
    "when",
    "where",
    "which",
    "while",
    "will",
    "window",
    "with",
    "within",
    "without",
    "work",
    "worker",
    "would",
    "write",
    "year",
    "yet",
    "you",
    "zone",
];

/// Questions that close a sized text, so a real model has something to do.
const QUESTIONS: &[&str] = &[
    "Summarise the notes above in three sentences.",
    "What are the two most important points in the text above?",
    "List the risks the notes above describe.",
    "Rewrite the notes above as a short checklist.",
];

/// About `tokens` tokens (at `BYTES_PER_TOKEN` bytes each) of varied
/// sentences followed by a question.
pub fn sized_text(rng: &mut Rng, tokens: u64) -> String {
    let question = QUESTIONS[rng.below(QUESTIONS.len() as u64) as usize];
    let target = (tokens * BYTES_PER_TOKEN) as usize;
    let body_target = target.saturating_sub(question.len() + 1);
    let mut text = String::with_capacity(target + 16);
    let mut sentence_left = 0u64;
    while text.len() < body_target {
        let word = WORDS[rng.below(WORDS.len() as u64) as usize];
        if sentence_left == 0 {
            if !text.is_empty() {
                text.push_str(". ");
            }
            sentence_left = 6 + rng.below(14);
            let mut chars = word.chars();
            if let Some(first) = chars.next() {
                text.push(first.to_ascii_uppercase());
                text.push_str(chars.as_str());
            }
        } else {
            text.push(' ');
            text.push_str(word);
        }
        sentence_left -= 1;
    }
    if !text.is_empty() {
        text.push_str(". ");
    }
    text.push_str(question);
    text
}

/// The common preamble of `cache_mode: shared-prefix`: the same text for
/// every conversation of a run with this seed.
pub fn shared_prefix(seed: u64, tokens: u64) -> String {
    let mut rng = Rng::new(seed ^ 0x5348_4152_4544_5046);
    let mut text = sized_text(&mut rng, tokens);
    text.push('\n');
    text
}

/// One request's id, as the correlation header carries it: the
/// conversation's UUID, `-t` and the turn's number from 1
/// (`0b5e2c1a-…-000000000001-t3`), so a server row names both its
/// conversation and its turn, and a prefix match finds the conversation.
#[derive(Debug, Clone, Copy)]
pub struct RequestId {
    bytes: [u8; UUID_LEN + 2 + 20],
    len: usize,
}

impl RequestId {
    /// The id of turn `number` (from 1) of conversation `uuid`.
    pub fn new(uuid: &[u8; UUID_LEN], number: u64) -> RequestId {
        let mut bytes = [0u8; UUID_LEN + 2 + 20];
        bytes[..UUID_LEN].copy_from_slice(uuid);
        bytes[UUID_LEN..UUID_LEN + 2].copy_from_slice(b"-t");
        // Formatted into the array (20 bytes hold any u64): no allocation.
        let mut digits = &mut bytes[UUID_LEN + 2..];
        let room = digits.len();
        let _ = std::io::Write::write_fmt(&mut digits, format_args!("{number}"));
        let len = UUID_LEN + 2 + room - digits.len();
        RequestId { bytes, len }
    }

    /// The conversation UUID of a request id in this format, or `None`
    /// for an id of another shape.
    pub fn conversation(id: &str) -> Option<&str> {
        let (conv, turn) = id.rsplit_once("-t")?;
        let is_uuid = conv.len() == UUID_LEN && uuid::Uuid::try_parse(conv).is_ok();
        (is_uuid && !turn.is_empty() && turn.bytes().all(|b| b.is_ascii_digit())).then_some(conv)
    }

    /// The id's text.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sized_text_has_the_asked_size_and_varies() {
        let mut rng = Rng::new(7);
        for tokens in [1u64, 10, 128, 550, 12_500] {
            let text = sized_text(&mut rng, tokens);
            let bytes = text.len() as u64;
            let want = tokens * BYTES_PER_TOKEN;
            // Within one word (or a question, for tiny sizes) of the target.
            assert!(bytes + 2 >= want.min(40), "{tokens}: {bytes}");
            assert!(bytes <= want.max(70) + 20, "{tokens}: {bytes}");
            assert!(text.is_ascii());
        }
        let a = sized_text(&mut Rng::new(1), 550);
        let b = sized_text(&mut Rng::new(2), 550);
        assert_ne!(a, b);
        assert_eq!(a, sized_text(&mut Rng::new(1), 550));
        // No sentence-long phrase repeats: count distinct 4-word windows.
        let words: Vec<&str> = a.split_whitespace().collect();
        let windows: std::collections::HashSet<_> = words.windows(4).collect();
        assert!(windows.len() + 2 >= words.len() - 3, "text repeats itself");
    }

    #[test]
    fn estimates_round_up() {
        assert_eq!(estimate_tokens(0), 0);
        assert_eq!(estimate_tokens(1), 1);
        assert_eq!(estimate_tokens(8), 2);
        assert_eq!(shared_prefix(3, 50), shared_prefix(3, 50));
    }
}
