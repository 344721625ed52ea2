//! Where requests go: the target URL, resolved once on the calling
//! thread (never on a shard), and the header syntax every header must
//! have.

use crate::protocol::Protocol;
use std::net::{SocketAddr, ToSocketAddrs};

/// Where requests go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The URL as given, query values masked (`secrets::url`): it is only
    /// ever shown.
    pub url: String,
    /// The resolved address.
    pub addr: SocketAddr,
    /// The `Host` header value.
    pub host: String,
    /// Request path (with query).
    pub path: String,
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

/// Parses `http://host[:port][/path]` and resolves the host once.
pub fn parse_target(url: &str, protocol: &dyn Protocol) -> Result<Target, String> {
    let rest = if let Some(rest) = url.strip_prefix("http://") {
        rest
    } else if url.starts_with("https://") {
        return Err(
            "https targets need TLS, which this build does not support yet; use http://".into(),
        );
    } else {
        return Err("must start with http://".into());
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if authority.is_empty() {
        return Err("missing host".into());
    }
    if authority.contains('@') {
        return Err("credentials in the URL are not supported; use --header".into());
    }
    let (host, port) = split_host_port(authority)?;
    let path = if path.is_empty() || path == "/" {
        protocol.default_path().to_string()
    } else {
        path.to_string()
    };
    if path.contains([' ', '\r', '\n']) {
        return Err("path must not contain spaces or line breaks".into());
    }
    let addr = (host.trim_start_matches('[').trim_end_matches(']'), port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve `{host}`: {e}"))?
        .next()
        .ok_or_else(|| format!("`{host}` resolved to no address"))?;
    Ok(Target {
        url: crate::secrets::url(url),
        addr,
        host: authority.to_string(),
        path,
    })
}

fn split_host_port(authority: &str) -> Result<(&str, u16), String> {
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
        None => 80,
    };
    if host.is_empty() {
        return Err("missing host".into());
    }
    Ok((host, port))
}
