//! Request serialization: the fixed head of a scenario's requests, built
//! once, and a whole request from that head, the correlation header and
//! a body, built per request into reused buffers.

use super::push_decimal;

/// The fixed start of every request to `path` on `host`: request line and
/// headers, up to (not including) the per-request correlation header and
/// Content-Length. `defaults` are the protocol's own headers, sent unless
/// `headers` (the scenario's) name them too.
pub fn head_prefix(
    path: &str,
    host: &str,
    keep_alive: bool,
    defaults: &[(&str, &str)],
    headers: &[(String, String)],
) -> Vec<u8> {
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nUser-Agent: loadtest/{}\r\n",
        env!("CARGO_PKG_VERSION")
    );
    if !keep_alive {
        head.push_str("Connection: close\r\n");
    }
    for (name, value) in defaults {
        if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)) {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.into_bytes()
}

/// Writes a whole request into `out`: the head prefix, the correlation
/// header when there is one, Content-Length and the body.
pub fn write(
    out: &mut Vec<u8>,
    head_prefix: &[u8],
    correlation: Option<(&str, &[u8])>,
    body: &[u8],
) {
    out.clear();
    out.extend_from_slice(head_prefix);
    if let Some((name, value)) = correlation {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Content-Length: ");
    push_decimal(out, body.len() as u64);
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(body);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_head_correlation_length_and_body() {
        let defaults = [("anthropic-version", "2023-06-01"), ("x-a", "1")];
        let headers = vec![("X-A".to_string(), "2".to_string())];
        let head = head_prefix("/v1/messages", "h:8", false, &defaults, &headers);
        let text = String::from_utf8(head.clone()).unwrap();
        assert!(
            text.starts_with("POST /v1/messages HTTP/1.1\r\nHost: h:8\r\n"),
            "{text}"
        );
        assert!(text.contains("Connection: close\r\n"));
        assert!(text.contains("anthropic-version: 2023-06-01\r\n"));
        // The scenario's header replaces the protocol's of the same name.
        assert!(
            !text.contains("x-a: 1") && text.contains("X-A: 2\r\n"),
            "{text}"
        );
        let mut out = Vec::new();
        write(&mut out, &head, Some(("x-request-id", b"abc")), b"{}");
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(
            text.ends_with("x-request-id: abc\r\nContent-Length: 2\r\n\r\n{}"),
            "{text}"
        );
        write(&mut out, &head, None, b"");
        assert!(out.ends_with(b"X-A: 2\r\nContent-Length: 0\r\n\r\n"));
    }
}
