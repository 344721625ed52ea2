//! `loadtest mock`: the built-in upstream as a server of its own.

use super::setup::duration_flag;
use super::{usage, Failure, MockArgs};
use crate::mock::{self, MockConfig};
use crate::plan;
use crate::verdict::Exit;

/// `loadtest mock`: serves until a shard ends (which is a failure).
pub fn serve(args: MockArgs) -> Result<Exit, Failure> {
    let allowed = crate::host::allowed_cpus();
    let cpus = match &args.cpus {
        Some(text) => {
            plan::parse_cpus(text, &allowed).map_err(|e| usage(format!("--cpus: {e}")))?
        }
        None => allowed.last().map(|&c| vec![c]).unwrap_or_default(),
    };
    let listen = resolve_listen(&args.listen)?;
    let config = MockConfig {
        latency: duration_flag("latency", &args.latency)?,
        ttft: duration_flag("ttft", &args.ttft)?,
        itl: duration_flag("itl", &args.itl)?,
        tokens: args.tokens,
        cpus: cpus.clone(),
        stall: match (&args.stall_at, &args.stall_for) {
            (Some(at), Some(length)) => Some((
                duration_flag("stall-at", at)?,
                duration_flag("stall-for", length)?,
            )),
            _ => None,
        },
    };
    crate::host::raise_fd_limit();
    let server = mock::start(listen, config).map_err(|e| usage(format!("mock: {e}")))?;
    say!(
        "mock upstream listening on http://{} (CPUs {}); POST /v1/chat/completions, POST /v1/responses, POST /v1/messages, GET /health",
        server.addr(),
        plan::format_cpus(&cpus)
    );
    // `wait` returns only when a shard has ended, which is a failure.
    Err(Failure {
        exit: Exit::Invalid,
        message: server.wait(),
    })
}

fn resolve_listen(text: &str) -> Result<std::net::SocketAddr, Failure> {
    use std::net::ToSocketAddrs;
    text.to_socket_addrs()
        .map_err(|e| usage(format!("--listen `{text}`: {e}")))?
        .next()
        .ok_or_else(|| usage(format!("--listen `{text}`: no address")))
}
