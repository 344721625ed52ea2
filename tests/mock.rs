//! The mock answers as the real APIs do, checked byte-level over loopback
//! (the official SDKs check it too, in `tests/responses.rs` when CI has
//! them): replies cut at the cap say so, errors on Anthropic routes have
//! Anthropic's shape, and the model list and token count answer.

mod common;

use serde_json::Value;
use std::io::{Read, Write};

use common::start_mock;

/// Sends one request (`Connection: close`) and returns the status and
/// the JSON body.
fn call(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &str,
    body: &str,
) -> (u16, Value) {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: mock\r\nConnection: close\r\nContent-Type: application/json\r\n{headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    let status = head[9..12].parse().unwrap();
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

#[test]
fn a_reply_cut_at_the_cap_says_so_and_one_under_it_does_not() {
    let mock = start_mock(|_| {});
    let addr = mock.addr();
    let chat = r#"{"model":"m","max_tokens":6,"messages":[{"role":"user","content":"hi"}]}"#;
    let (status, cut) = call(addr, "POST", "/v1/chat/completions", "", chat);
    assert_eq!(status, 200);
    assert_eq!(cut["choices"][0]["finish_reason"], "length", "{cut}");
    let (_, done) = call(
        addr,
        "POST",
        "/v1/chat/completions",
        "x-mock-tokens: 3\r\n",
        chat,
    );
    assert_eq!(done["choices"][0]["finish_reason"], "stop", "{done}");
    let (_, cut) = call(
        addr,
        "POST",
        "/v1/messages",
        "anthropic-version: 2023-06-01\r\n",
        chat,
    );
    assert_eq!(cut["stop_reason"], "max_tokens", "{cut}");
    let (_, done) = call(addr, "POST", "/v1/messages", "x-mock-tokens: 3\r\n", chat);
    assert_eq!(done["stop_reason"], "end_turn", "{done}");
    mock.stop().unwrap();
}

#[test]
fn errors_models_and_token_counts_have_each_api_shape() {
    let mock = start_mock(|_| {});
    let addr = mock.addr();
    let body = r#"{"model":"m","max_tokens":6,"messages":[{"role":"user","content":"12345678"}]}"#;
    // Anthropic routes answer errors in Anthropic's shape.
    for (header, status, kind) in [
        ("x-mock-fault: status_429\r\n", 429, "rate_limit_error"),
        ("x-mock-fault: status_500\r\n", 500, "api_error"),
        ("x-mock-status: 400\r\n", 400, "invalid_request_error"),
    ] {
        let (got, error) = call(addr, "POST", "/v1/messages", header, body);
        assert_eq!(got, status);
        assert_eq!(error["type"], "error", "{error}");
        assert_eq!(error["error"]["type"], kind, "{error}");
    }
    let (status, error) = call(addr, "POST", "/v1/messages", "", "not json");
    assert_eq!(status, 400);
    assert_eq!(error["error"]["type"], "invalid_request_error", "{error}");
    // OpenAI's routes in OpenAI's.
    let (status, error) = call(
        addr,
        "POST",
        "/v1/chat/completions",
        "x-mock-fault: status_429\r\n",
        body,
    );
    assert_eq!(status, 429);
    assert!(error["error"]["message"].is_string(), "{error}");
    // The model list, in the shape of whoever asks.
    let (status, models) = call(addr, "GET", "/v1/models", "", "");
    assert_eq!(status, 200);
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["id"], "mock-model");
    let (_, models) = call(
        addr,
        "GET",
        "/v1/models",
        "anthropic-version: 2023-06-01\r\n",
        "",
    );
    assert_eq!(models["data"][0]["type"], "model");
    assert_eq!(models["has_more"], false);
    // Token counting: about a token per four characters.
    let (status, counted) = call(addr, "POST", "/v1/messages/count_tokens", "", body);
    assert_eq!(status, 200);
    assert_eq!(counted["input_tokens"], 2, "{counted}");
    // An unknown fault name is refused, not ignored.
    let (status, _) = call(addr, "POST", "/v1/messages", "x-mock-fault: nope\r\n", body);
    assert_eq!(status, 400);
    mock.stop().unwrap();
}
