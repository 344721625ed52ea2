//! Where requests go: the target URL, resolved once on the calling
//! thread (never on a shard), and the header syntax every header must
//! have.

use crate::protocol::Protocol;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

/// Where requests go.
#[derive(Debug, Clone)]
pub struct Target {
    /// The URL as given, query values masked (`secrets::url`): it is only
    /// ever shown.
    pub url: String,
    /// The first resolved address (or the one `--resolve` gave).
    pub addr: SocketAddr,
    /// Every address the host resolved to, in the resolver's order;
    /// connections go to them in turn.
    pub addrs: Vec<SocketAddr>,
    /// The `Host` header value.
    pub host: String,
    /// Request path (with query).
    pub path: String,
    /// `https://`: TLS, verified against `server_name`.
    pub tls: bool,
    /// The host as a certificate names it (an IPv6 literal without
    /// brackets).
    pub server_name: String,
    /// How long resolving the host took (`None`: an IP literal or
    /// `--resolve`, nothing was looked up).
    pub dns: Option<Duration>,
    /// What was changed from the URL as given, for one line on the
    /// console (`None`: nothing).
    pub note: Option<String>,
}

/// Two scenarios naming the same URL share one target, however long each
/// lookup took.
impl PartialEq for Target {
    fn eq(&self, other: &Target) -> bool {
        (&self.url, self.addr, &self.host, &self.path, self.tls)
            == (&other.url, other.addr, &other.host, &other.path, other.tls)
    }
}

impl Eq for Target {}

/// `--resolve HOST:PORT:ADDR`: send to ADDR what is for HOST:PORT (the
/// certificate is still checked against HOST), as curl's flag does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolve {
    /// Host name, as the URL has it (IPv6 without brackets).
    pub host: String,
    /// Port.
    pub port: u16,
    /// Where to connect instead.
    pub addr: IpAddr,
}

impl std::str::FromStr for Resolve {
    type Err = String;
    fn from_str(text: &str) -> Result<Resolve, String> {
        let bad =
            || format!("`{text}`: expected HOST:PORT:ADDR (e.g. api.example.com:443:127.0.0.1)");
        let (host, rest) = text.split_once(':').ok_or_else(bad)?;
        let (port, addr) = rest.split_once(':').ok_or_else(bad)?;
        let port = port.parse::<u16>().map_err(|_| bad())?;
        let addr = addr.trim_start_matches('[').trim_end_matches(']');
        let addr = addr
            .parse::<IpAddr>()
            .map_err(|_| format!("`{text}`: `{addr}` is not an IP address"))?;
        if host.is_empty() {
            return Err(bad());
        }
        Ok(Resolve {
            host: host.to_ascii_lowercase(),
            port,
            addr,
        })
    }
}

/// Checks a header name (an RFC 9110 token) and value (RFC 9110 field
/// content: no control characters but tab).
pub fn check_header(name: &str, value: &str) -> Result<(), String> {
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() || !name.chars().all(token) {
        return Err("header name must be a token (letters, digits, -)".into());
    }
    if let Some(c) = value.chars().find(|&c| c.is_control() && c != '\t') {
        return Err(format!(
            "header value must not contain control characters (found {})",
            c.escape_default()
        ));
    }
    for reserved in ["host", "content-length", "transfer-encoding", "connection"] {
        if name.eq_ignore_ascii_case(reserved) {
            return Err(format!("`{name}` is set by the engine"));
        }
    }
    Ok(())
}

/// Parses `http[s]://host[:port][/path]` and resolves the host once
/// (unless `resolve` names it).
pub fn parse_target(
    url: &str,
    protocol: &dyn Protocol,
    resolve: &[Resolve],
) -> Result<Target, String> {
    // A fragment is never sent: browsers and curl drop it too.
    let whole = url.split_once('#').map_or(url, |(before, _)| before);
    let (rest, tls) = if let Some(rest) = whole.strip_prefix("http://") {
        (rest, false)
    } else if let Some(rest) = whole.strip_prefix("https://") {
        (rest, true)
    } else {
        return Err("must start with http:// or https://".into());
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if authority.is_empty() {
        return Err("missing host".into());
    }
    if authority.contains('@') {
        return Err("credentials in the URL are not supported; use --header".into());
    }
    let (host, port) = split_host_port(authority, if tls { 443 } else { 80 })?;
    let (path, note) = request_path(path, protocol);
    if path.contains([' ', '\r', '\n']) {
        return Err("path must not contain spaces or line breaks".into());
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if tls {
        crate::transport::trust::server_name(bare)?;
    }
    let (addrs, dns) = addresses(bare, port, resolve)?;
    Ok(Target {
        url: crate::secrets::url(whole),
        addr: addrs[0],
        addrs,
        host: authority.to_string(),
        path,
        tls,
        server_name: bare.to_string(),
        dns,
        note,
    })
}

/// The request path for the path part of a URL: the protocol's own when
/// none is given, and the protocol's path appended to an SDK-style base
/// URL (`…/v1`), which would otherwise answer every request with a 404.
fn request_path(path: &str, protocol: &dyn Protocol) -> (String, Option<String>) {
    let (bare, query) = match path.split_once('?') {
        Some((bare, query)) => (bare, Some(query)),
        None => (path, None),
    };
    let default = protocol.default_path();
    let joined = |base: &str| match query {
        Some(q) => format!("{base}?{q}"),
        None => base.to_string(),
    };
    if bare.is_empty() || bare == "/" {
        return (joined(default), None);
    }
    let base = bare.trim_end_matches('/');
    match default.strip_prefix("/v1") {
        Some(tail) if base.ends_with("/v1") => {
            let full = format!("{base}{tail}");
            let note = format!("`{bare}` is a base URL (as SDKs take it); requests go to `{full}`");
            (joined(&full), Some(note))
        }
        _ => (path.to_string(), None),
    }
}

/// The addresses to connect to (at least one), and how long resolving
/// them took.
fn addresses(
    host: &str,
    port: u16,
    resolve: &[Resolve],
) -> Result<(Vec<SocketAddr>, Option<Duration>), String> {
    if let Some(r) = resolve
        .iter()
        .find(|r| r.port == port && r.host.eq_ignore_ascii_case(host))
    {
        return Ok((vec![SocketAddr::new(r.addr, port)], None));
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok((vec![SocketAddr::new(ip, port)], None));
    }
    let started = Instant::now();
    let mut addrs: Vec<SocketAddr> = Vec::new();
    let resolved = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve `{host}`: {e}"))?;
    for addr in resolved {
        // getaddrinfo lists an address once per socket type.
        if !addrs.contains(&addr) {
            addrs.push(addr);
        }
    }
    if addrs.is_empty() {
        return Err(format!("`{host}` resolved to no address"));
    }
    Ok((addrs, Some(started.elapsed())))
}

fn split_host_port(authority: &str, default_port: u16) -> Result<(&str, u16), String> {
    let (host, port) = if authority.starts_with('[') {
        match authority.find("]:") {
            Some(i) => (&authority[..=i], Some(&authority[i + 2..])),
            None => (authority, None),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port = match port {
        Some(p) => p.parse::<u16>().map_err(|_| format!("bad port `{p}`"))?,
        None => default_port,
    };
    if host.is_empty() {
        return Err("missing host".into());
    }
    Ok((host, port))
}
