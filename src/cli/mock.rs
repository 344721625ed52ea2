//! `loadtest mock`: the built-in upstream as a server of its own.

use super::setup::duration_flag;
use super::{usage, Failure, MockArgs};
use crate::mock::{self, Delay, FaultRates, MockConfig};
use crate::plan;
use crate::transport::cert::ServerTls;
use crate::verdict::Exit;

/// `loadtest mock`: serves until a shard ends (which is a failure).
pub fn serve(args: MockArgs) -> Result<Exit, Failure> {
    let reactor = super::choose_io(args.io)?;
    let allowed = crate::host::allowed_cpus();
    let cpus = match &args.cpus {
        Some(text) => {
            plan::parse_cpus(text, &allowed).map_err(|e| usage(format!("--cpus: {e}")))?
        }
        None => allowed.last().map(|&c| vec![c]).unwrap_or_default(),
    };
    let listen = resolve_listen(&args.listen)?;
    let tls = server_tls(&args)?;
    let config = MockConfig {
        tls: tls.as_ref().map(|t| t.config.clone()),
        log: request_log("log-requests", args.log_requests.as_deref())?,
        latency: delay_flag("latency", &args.latency)?,
        ttft: delay_flag("ttft", &args.ttft)?,
        itl: delay_flag("itl", &args.itl)?,
        faults: faults_flag("faults", args.faults.as_deref())?,
        seed: args.seed,
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
        "mock upstream listening on {}://{} (CPUs {}, {} reactor); POST /v1/chat/completions, /v1/responses, /v1/messages, /v1/messages/count_tokens; GET /v1/models, /health{}",
        if tls.is_some() { "https" } else { "http" },
        server.addr(),
        plan::format_cpus(&cpus),
        reactor.name(),
        match &args.faults {
            Some(faults) => format!("; faults {faults} (seed {})", args.seed),
            None => String::new(),
        }
    );
    // `wait` returns only when a shard has ended, which is a failure.
    Err(Failure {
        exit: Exit::Invalid,
        message: server.wait(),
    })
}

/// The TLS configuration `--tls-cert`/`--tls-key` or `--tls-self-signed`
/// ask for; the latter's CA is written where it says, for clients'
/// `--cacert`.
fn server_tls(args: &MockArgs) -> Result<Option<ServerTls>, Failure> {
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        return ServerTls::from_pem_files(cert, key)
            .map(Some)
            .map_err(usage);
    }
    let Some(ca_path) = &args.tls_self_signed else {
        return Ok(None);
    };
    let tls = ServerTls::self_signed().map_err(usage)?;
    let pem = tls.ca_pem.as_deref().unwrap_or_default();
    std::fs::write(ca_path, pem)
        .map_err(|e| usage(format!("--tls-self-signed {}: {e}", ca_path.display())))?;
    eprintln!(
        "loadtest: mock CA written to {} (clients: --cacert {0})",
        ca_path.display()
    );
    Ok(Some(tls))
}

/// The request log a flag asks for, opened for appending.
pub fn request_log(
    flag: &str,
    path: Option<&std::path::Path>,
) -> Result<Option<mock::RequestLog>, Failure> {
    path.map(|p| {
        mock::RequestLog::open(p).map_err(|e| usage(format!("--{flag} {}: {e}", p.display())))
    })
    .transpose()
}

/// A delay flag: fixed, a range or a log-normal (`mock::Delay`).
pub fn delay_flag(flag: &str, text: &str) -> Result<Delay, Failure> {
    Delay::parse(text).map_err(|e| usage(format!("--{flag}: {e}")))
}

/// A fault-rate flag (`mock::FaultRates`); none when absent.
pub fn faults_flag(flag: &str, text: Option<&str>) -> Result<FaultRates, Failure> {
    text.map_or(Ok(FaultRates::default()), |t| {
        FaultRates::parse(t).map_err(|e| usage(format!("--{flag}: {e}")))
    })
}

fn resolve_listen(text: &str) -> Result<std::net::SocketAddr, Failure> {
    use std::net::ToSocketAddrs;
    text.to_socket_addrs()
        .map_err(|e| usage(format!("--listen `{text}`: {e}")))?
        .next()
        .ok_or_else(|| usage(format!("--listen `{text}`: no address")))
}
