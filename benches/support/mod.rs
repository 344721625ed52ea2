//! What the loopback benchmarks share: the request bytes `loadtest run`
//! sends for a profile's first prompt, and the bare loops' flags.

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

/// The flags of a bare keep-alive loop (`bare_loop`, `bare_uring`).
#[allow(
    dead_code,
    reason = "open_loop_ref shares this module, not these flags"
)]
pub struct LoopArgs {
    /// The profile the request is built from.
    pub config: String,
    /// The upstream's URL.
    pub target: String,
    /// Connections.
    pub conns: usize,
    /// How long to run.
    pub seconds: u64,
    /// The CPU to pin to.
    pub cpu: usize,
    /// `--flags` (only where `flags` is allowed).
    pub flags: Option<String>,
}

#[allow(
    dead_code,
    reason = "open_loop_ref shares this module, not these flags"
)]
impl LoopArgs {
    /// Parses the command line; `--flags VALUE` only if `flags` is true.
    pub fn parse(flags: bool) -> LoopArgs {
        let mut args = LoopArgs {
            config: "benches/perf-128-nonstream.json".into(),
            target: "http://127.0.0.1:18080".into(),
            conns: 64,
            seconds: 10,
            cpu: 0,
            flags: None,
        };
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
            match flag.as_str() {
                "--config" => args.config = value(),
                "--target" => args.target = value(),
                "--conns" => args.conns = value().parse().expect("--conns number"),
                "--seconds" => args.seconds = value().parse().expect("--seconds number"),
                "--cpu" => args.cpu = value().parse().expect("--cpu number"),
                "--flags" if flags => args.flags = Some(value()),
                "--bench" => {} // added by `cargo bench`
                other => panic!("unknown flag {other}"),
            }
        }
        args
    }
}

/// How many bytes the response in `buf` has in all (head plus its
/// Content-Length body), once its head is in; `None` before that.
pub fn response_length(buf: &[u8]) -> Option<usize> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(buf).expect("response head") {
        httparse::Status::Complete(head) => {
            let length: usize = response
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
                .expect("content-length");
            Some(head + length)
        }
        httparse::Status::Partial => None,
    }
}

/// The one JSON line a bare loop prints (`benches/loopback.py` reads it):
/// `fields` are extra `"key":value` pairs, each followed by a comma.
#[allow(dead_code, reason = "open_loop_ref prints its own line")]
pub fn print_result(
    tool: &str,
    fields: &str,
    hist: &hdrhistogram::Histogram<u64>,
    wall: f64,
    cpu: f64,
) {
    println!(
        "{{\"tool\":\"{tool}\",{fields}\"requests\":{},\"seconds\":{wall:.3},\"rps\":{:.1},\"p50_ms\":{:.3},\"p99_ms\":{:.3},\"cpu_s\":{cpu:.3}}}",
        hist.len(),
        hist.len() as f64 / wall,
        hist.value_at_quantile(0.5) as f64 / 1000.0,
        hist.value_at_quantile(0.99) as f64 / 1000.0,
    );
}
