//! `run --metrics-listen ADDR`: the live Prometheus exposition
//! (`report::live`) served over plain HTTP by a thread of its own, so a
//! Prometheus server can scrape a run while it goes. The coordinator's
//! progress callback updates the text once a second; a scrape only copies
//! it. Nothing here touches a shard.

use crate::report::live::Live;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The served state: what the run has done, and its exposition.
pub struct LiveServer {
    live: Live,
    text: Arc<Mutex<String>>,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl LiveServer {
    /// Binds `addr` and starts serving `GET /metrics` for a run whose
    /// scenario lanes are these (scenario name, service name).
    pub fn start(addr: &str, lanes: Vec<(String, Option<String>)>) -> Result<LiveServer, String> {
        let listener =
            TcpListener::bind(addr).map_err(|e| format!("--metrics-listen {addr}: {e}"))?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("--metrics-listen {addr}: {e}"))?;
        let live = Live::new(lanes);
        let text = Arc::new(Mutex::new(live.exposition()));
        let served = text.clone();
        std::thread::Builder::new()
            .name("loadtest-metrics".into())
            .spawn(move || {
                for stream in listener.incoming().flatten() {
                    let _ = answer(stream, &served);
                }
            })
            .map_err(|e| format!("--metrics-listen: {e}"))?;
        Ok(LiveServer { live, text, addr })
    }

    /// Changes what the run has done, and republishes the exposition.
    pub fn update(&mut self, change: impl FnOnce(&mut Live)) {
        change(&mut self.live);
        let text = self.live.exposition();
        *self
            .text
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = text;
    }
}

/// Answers one scrape: the exposition for `GET /metrics`, 404 otherwise.
/// A client that says nothing within a second is dropped.
fn answer(mut stream: TcpStream, text: &Mutex<String>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(1)))?;
    let mut head = [0u8; 4096];
    let mut filled = 0;
    while filled < head.len() && !head[..filled].windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut head[filled..])?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    let metrics = head[..filled].starts_with(b"GET /metrics ");
    let (status, body) = if metrics {
        let body = text
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        ("200 OK", body)
    } else {
        ("404 Not Found", "try GET /metrics\n".to_string())
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes())
}
