//! Tests of planning: targets, CPU lists, headers, profiles and their
//! errors.

use super::*;
use crate::protocol::openai::OpenAiChat;
use crate::protocol::Auth;

#[test]
fn targets() {
    let parse = |url: &str| parse_target(url, &OpenAiChat, &[]);
    let t = parse("http://127.0.0.1:8080").unwrap();
    assert_eq!(t.addr, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(t.path, "/v1/chat/completions");
    assert_eq!(t.host, "127.0.0.1:8080");
    assert!(!t.tls && t.dns.is_none() && t.note.is_none());
    let t = parse("http://127.0.0.1/gw/v1/chat?x=1").unwrap();
    assert_eq!(t.addr.port(), 80);
    assert_eq!(t.path, "/gw/v1/chat?x=1");
    let t = parse("http://[::1]:9000/").unwrap();
    assert_eq!(t.addr, "[::1]:9000".parse().unwrap());
    assert!(parse("ftp://x").unwrap_err().contains("http://"));
    assert!(parse("http://:80").unwrap_err().contains("host"));
    assert!(parse("http://h:99999").unwrap_err().contains("port"));
    assert!(parse("http://no-such-host.invalid")
        .unwrap_err()
        .contains("resolve"));
}

#[test]
fn https_targets() {
    let parse = |url: &str| parse_target(url, &OpenAiChat, &[]);
    let t = parse("https://127.0.0.1").unwrap();
    assert!(t.tls);
    assert_eq!(t.addr.port(), 443);
    assert_eq!(t.server_name, "127.0.0.1");
    // IPv6 literals: brackets in Host, none in the certificate's name.
    let t = parse("https://[::1]:8443/v1/messages").unwrap();
    assert_eq!(t.addr, "[::1]:8443".parse().unwrap());
    assert_eq!(
        (t.host.as_str(), t.server_name.as_str()),
        ("[::1]:8443", "::1")
    );
    // A fragment is never sent.
    let t = parse("https://127.0.0.1/v1/chat/completions#top").unwrap();
    assert_eq!(t.path, "/v1/chat/completions");
    assert_eq!(t, parse("https://127.0.0.1/v1/chat/completions").unwrap());
    // http and https of one address are different targets.
    assert_ne!(
        parse("http://127.0.0.1:443").unwrap(),
        parse("https://127.0.0.1").unwrap()
    );
}

#[test]
fn sdk_base_urls_get_the_protocol_path() {
    let t = parse_target("https://127.0.0.1/v1", &OpenAiChat, &[]).unwrap();
    assert_eq!(t.path, "/v1/chat/completions");
    assert!(t.note.unwrap().contains("/v1/chat/completions"));
    let t = parse_target(
        "http://127.0.0.1/openai/v1/?api-version=2",
        &OpenAiChat,
        &[],
    )
    .unwrap();
    assert_eq!(t.path, "/openai/v1/chat/completions?api-version=2");
    let anthropic = crate::protocol::anthropic::AnthropicMessages;
    let t = parse_target("http://127.0.0.1/v1", &anthropic, &[]).unwrap();
    assert_eq!(t.path, "/v1/messages");
    // A full path is left alone.
    let t = parse_target("http://127.0.0.1/v1/chat/completions", &OpenAiChat, &[]).unwrap();
    assert!(t.note.is_none());
}

#[test]
fn resolve_sends_a_name_to_a_given_address() {
    let resolve: Vec<Resolve> = vec!["api.example.com:443:127.0.0.2".parse().unwrap()];
    let t = parse_target("https://api.example.com/v1", &OpenAiChat, &resolve).unwrap();
    assert_eq!(t.addr, "127.0.0.2:443".parse().unwrap());
    assert_eq!(t.server_name, "api.example.com");
    assert_eq!(t.host, "api.example.com");
    assert!(t.dns.is_none());
    // Another port is not covered (and the name does not resolve).
    assert!(parse_target("https://api.example.com:8443", &OpenAiChat, &resolve).is_err());
    let v6: Resolve = "h:80:[::1]".parse().unwrap();
    assert_eq!(v6.addr, "::1".parse::<std::net::IpAddr>().unwrap());
    for bad in [
        "h",
        "h:80",
        "h:x:127.0.0.1",
        ":80:127.0.0.1",
        "h:80:not-an-ip",
    ] {
        assert!(bad.parse::<Resolve>().is_err(), "{bad}");
    }
}

#[test]
fn cpu_lists() {
    let allowed = [0, 1, 2, 3, 6];
    assert_eq!(parse_cpus("0,2-3", &allowed).unwrap(), vec![0, 2, 3]);
    assert!(parse_cpus("5", &allowed)
        .unwrap_err()
        .contains("not available"));
    assert!(parse_cpus("3-1", &allowed)
        .unwrap_err()
        .contains("backwards"));
    assert!(parse_cpus("x", &allowed).unwrap_err().contains("not a CPU"));
    assert!(parse_cpus("1,1", &allowed).unwrap_err().contains("twice"));
    assert_eq!(format_cpus(&allowed), "0-3,6");
}

#[test]
fn headers() {
    assert!(check_header("Authorization", "Bearer x").is_ok());
    assert!(check_header("Bad Name", "x").is_err());
    assert!(check_header("X-A", "a\r\nInjected: 1").is_err());
    // RFC 9110: tab is the only control character a value may hold.
    assert!(check_header("X-A", "a\tb").is_ok());
    let err = check_header("X-A", "a\u{1b}[31m").unwrap_err();
    assert!(
        err.contains("control characters") && err.contains("\\u{1b}"),
        "{err}"
    );
    assert!(check_header("X-A", "a\u{7f}").is_err());
    assert!(check_header("content-length", "1").is_err());
}

fn profile(text: &str) -> Profile {
    config::parse(text).unwrap()
}

#[test]
fn builds_and_overrides() {
    let p = profile(
        r#"{"defaults":{"target":"http://127.0.0.1:1","headers":{"Authorization":"Bearer A"},"stream":true},
            "stages":[{"concurrency":3,"duration":"5s"}],"warmup":"1s"}"#,
    );
    let over = Overrides {
        headers: vec![("authorization".into(), "Bearer B".into())],
        model: Some("p/m".into()),
        ..Default::default()
    };
    let plan = build(&p, &over, vec![0]).unwrap();
    assert_eq!(plan.users_max(), 3);
    assert_eq!(plan.scenarios.len(), 1);
    let s = &plan.scenarios[0];
    assert_eq!(s.name, "default");
    assert_eq!(s.model, "p/m");
    assert!(s.stream);
    assert_eq!(
        s.headers,
        vec![("authorization".to_string(), "Bearer B".to_string())]
    );
    let head = String::from_utf8(plan.request_head_prefix(0)).unwrap();
    assert!(head.starts_with("POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:1\r\n"));
    assert!(head.contains("authorization: Bearer B\r\n"));
    assert!(!head.contains("Bearer A"));
    assert_eq!(plan.cache_mode, CacheMode::Bust);
    assert_eq!(plan.correlation_header.as_deref(), Some("x-request-id"));

    let over = Overrides {
        stages: Some("2:3s".into()),
        ..Default::default()
    };
    let plan = build(&p, &over, vec![0]).unwrap();
    assert_eq!(plan.stages.len(), 1);
    assert_eq!(plan.users_max(), 2);
}

#[test]
fn scenarios_inherit_and_override() {
    let p = profile(
        r#"{"defaults":{"target":"http://127.0.0.1:1","model":"m","headers":{"X-A":"1","Authorization":"Bearer REPLACE_WITH_VK"},
              "max_tokens":32,"system":"sys"},
            "stages":"4:2s","think_time":"250ms",
            "scenarios":[
              {"name":"simple","weight":55},
              {"name":"medium","weight":30,"turns":4,"stream":true,"think_time":{"min":"1s","max":"2s"},
               "content":{"mode":"scripted","script":["a","b"]}},
              {"name":"claude","weight":15,"protocol":"anthropic","target":"http://127.0.0.1:2/gw/messages",
               "headers":{"X-A":"2"},"turns":{"min":2,"max":3},"content":{"mode":"sized","approx_input_tokens":100}}]}"#,
    );
    let over = Overrides {
        vk: Some("sk-123".into()),
        headers: vec![("X-Route".into(), "r".into())],
        ..Default::default()
    };
    let plan = build(&p, &over, vec![0]).unwrap();
    let [simple, medium, claude] = &plan.scenarios[..] else {
        panic!("three scenarios")
    };
    assert_eq!(simple.model, "m");
    assert_eq!(simple.max_tokens, 32);
    assert_eq!(
        simple.think_time,
        (Duration::from_millis(250), Duration::from_millis(250))
    );
    assert_eq!(simple.content.mode(), "pool");
    assert!(simple.single_turn());
    assert_eq!(medium.turns, (4, 4));
    assert_eq!(
        medium.think_time,
        (Duration::from_secs(1), Duration::from_secs(2))
    );
    assert_eq!(
        medium.content,
        Content::Scripted(vec!["a".into(), "b".into()])
    );
    assert_eq!(claude.turns, (2, 3));
    assert_eq!(claude.content, Content::Sized(100));
    assert_eq!(claude.protocol.name(), "anthropic");
    assert_eq!(claude.auth, Auth::XApiKey);
    assert_eq!(plan.targets.len(), 2);
    assert_eq!(plan.targets[claude.target].path, "/gw/messages");
    // Defaults, then the scenario, then --vk, then --header.
    assert_eq!(
        simple.headers,
        vec![
            ("X-A".to_string(), "1".to_string()),
            ("Authorization".to_string(), "Bearer sk-123".to_string()),
            ("X-Route".to_string(), "r".to_string()),
        ]
    );
    assert!(claude
        .headers
        .contains(&("X-A".to_string(), "2".to_string())));
    assert!(claude
        .headers
        .contains(&("x-api-key".to_string(), "sk-123".to_string())));
    let head = String::from_utf8(plan.request_head_prefix(2)).unwrap();
    assert!(head.contains("anthropic-version: 2023-06-01\r\n"), "{head}");
    // Weights split users by largest remainder.
    assert_eq!(plan.split_users(100), vec![55, 30, 15]);
    assert_eq!(plan.split_users(4), vec![2, 1, 1]);
    assert_eq!(plan.split_users(1), vec![1, 0, 0]);
}

#[test]
fn seed_tool_switches_take_effect() {
    let p = profile(
        r#"{"defaults":{"target":"http://127.0.0.1:1"},"stages":"1:1s",
            "disable_keepalive":true,"insecure_skip_verify":true,"capture_error_body":true}"#,
    );
    let plan = build(&p, &Overrides::default(), vec![0]).unwrap();
    assert!(!plan.keep_alive && plan.insecure && plan.capture_error_body);
    let head = String::from_utf8(plan.request_head_prefix(0)).unwrap();
    assert!(head.contains("Connection: close\r\n"), "{head}");
    let p = profile(r#"{"defaults":{"target":"http://127.0.0.1:1"},"stages":"1:1s"}"#);
    let plan = build(&p, &Overrides::default(), vec![0]).unwrap();
    assert!(!String::from_utf8(plan.request_head_prefix(0))
        .unwrap()
        .contains("Connection:"));
}

#[test]
fn empty_strings_fall_back_like_the_seed_tool() {
    let p = profile(
        r#"{"defaults":{"target":"http://127.0.0.1:1","model":"m","system":""},"stages":"1:1s",
            "scenarios":[{"name":"a","model":"","target":"","protocol":""}]}"#,
    );
    let plan = build(&p, &Overrides::default(), vec![0]).unwrap();
    let s = &plan.scenarios[0];
    assert_eq!(s.model, "m");
    assert_eq!(s.system, None);
    assert_eq!(s.protocol.name(), "openai-chat");
}

#[test]
fn open_loop_stage_objects() {
    let p = profile(
        r#"{"defaults":{"target":"http://127.0.0.1:1"},"max_inflight":50,
            "stages":[{"concurrency":2,"duration":"1s"},{"rate":"40k","duration":"2s"},
                      {"rate":1500,"arrival":"poisson","duration":"3s"}]}"#,
    );
    let plan = build(&p, &Overrides::default(), vec![0]).unwrap();
    let labels: Vec<String> = plan.stages.iter().map(Stage::label).collect();
    assert_eq!(labels, ["2:1s", "@40000:2s", "@~1500:3s"]);
    assert_eq!(plan.max_inflight, 50);
    assert_eq!(plan.users_max(), 50);
}

#[test]
fn weight_split_adds_up() {
    for total in [0u64, 1, 2, 3, 7, 100, 1001] {
        for weights in [
            &[1.0][..],
            &[1.0, 1.0, 1.0],
            &[55.0, 30.0, 15.0],
            &[0.0, 2.0, 0.5],
        ] {
            let split = split_by_weight(total, weights);
            assert_eq!(split.iter().sum::<u64>(), total, "{total} {weights:?}");
            for (n, w) in split.iter().zip(weights) {
                if *w == 0.0 {
                    assert_eq!(*n, 0);
                }
            }
        }
    }
}

#[test]
fn cache_modes() {
    let base = r#""defaults":{"target":"http://127.0.0.1:1"},"stages":"1:1s""#;
    let plan = build(
        &profile(&format!(
            r#"{{{base},"cache_mode":"shared-prefix","shared_prefix_tokens":64}}"#
        )),
        &Overrides::default(),
        vec![0],
    )
    .unwrap();
    assert_eq!(plan.cache_mode, CacheMode::SharedPrefix);
    let prefix = plan.shared_prefix.unwrap();
    assert!(prefix.len() >= 200, "{}", prefix.len());
    let plan = build(
        &profile(&format!(
            r#"{{{base},"cache_mode":"natural","correlation":{{"header":""}}}}"#
        )),
        &Overrides::default(),
        vec![0],
    )
    .unwrap();
    assert_eq!(plan.cache_mode, CacheMode::Natural);
    assert_eq!(plan.correlation_header, None);
}

#[test]
fn plan_errors_name_the_field() {
    let t = r#""target":"http://127.0.0.1:1""#;
    let cases = [
        (r#"{"stages":"1:1s"}"#.to_string(), "defaults.target"),
        (format!(r#"{{"defaults":{{{t}}}}}"#), "stages"),
        (
            format!(r#"{{"defaults":{{{t},"protocol":"openai-chta"}},"stages":"1:1s"}}"#),
            "defaults.protocol: unknown protocol `openai-chta`, did you mean \"openai-chat\"?",
        ),
        (
            format!(r#"{{"defaults":{{{t}}},"stages":[{{"concurrency":0,"duration":"1s"}}]}}"#),
            "stages[0]",
        ),
        (
            format!(r#"{{"defaults":{{{t}}},"stages":[{{"concurrency":1,"duration":"1x"}}]}}"#),
            "stages[0].duration",
        ),
        (
            format!(r#"{{"defaults":{{{t}}},"stages":[{{"concurency":1,"duration":"1s"}}]}}"#),
            "stages[0].concurency: unknown field, did you mean \"concurrency\"?",
        ),
        (
            format!(r#"{{"defaults":{{{t}}},"stages":"1:5s","warmup":"5s"}}"#),
            "warmup",
        ),
        (
            format!(r#"{{"defaults":{{{t},"max_tokens":0}},"stages":"1:5s"}}"#),
            "defaults.max_tokens",
        ),
        (
            format!(r#"{{"defaults":{{{t},"timeout":"1ms"}},"stages":"1:5s"}}"#),
            "defaults.timeout",
        ),
        (
            format!(r#"{{"defaults":{{{t},"name":"x"}},"stages":"1:5s"}}"#),
            "defaults.name",
        ),
        (
            format!(r#"{{"defaults":{{{t}}},"stages":"1:5s","scenarios":[]}}"#),
            "scenarios: empty",
        ),
        (
            format!(r#"{{"defaults":{{{t}}},"stages":"1:5s","scenarios":[{{"weight":-1}}]}}"#),
            "scenarios[0].weight",
        ),
        (
            format!(r#"{{"defaults":{{{t}}},"stages":"1:5s","scenarios":[{{"weight":0}}]}}"#),
            "scenarios: every weight is 0",
        ),
        (
            format!(
                r#"{{"defaults":{{{t}}},"stages":"1:5s","scenarios":[{{"name":"a"}},{{"name":"a"}}]}}"#
            ),
            "scenarios[1].name",
        ),
        (
            format!(r#"{{"defaults":{{{t}}},"stages":"1:5s","scenarios":[{{"turns":0}}]}}"#),
            "scenarios[0].turns",
        ),
        (
            format!(
                r#"{{"defaults":{{{t}}},"stages":"1:5s","scenarios":[{{"turns":{{"min":3,"max":2}}}}]}}"#
            ),
            "scenarios[0].turns: min is greater than max",
        ),
        (
            format!(
                r#"{{"defaults":{{{t}}},"stages":"1:5s","scenarios":[{{"turns":{{"min":1,"mx":2}}}}]}}"#
            ),
            "scenarios[0].turns.mx: unknown field, did you mean \"max\"?",
        ),
        (
            format!(r#"{{"defaults":{{{t}}},"stages":"1:5s","scenarios":[{{"turns":"3"}}]}}"#),
            "scenarios[0].turns: must be a whole number",
        ),
        (
            format!(
                r#"{{"defaults":{{{t}}},"stages":"1:5s","scenarios":[{{"think_time":"2 weeks"}}]}}"#
            ),
            "scenarios[0].think_time",
        ),
        (
            format!(
                r#"{{"defaults":{{{t}}},"stages":"1:5s","scenarios":[{{}},{{"content":{{"mode":"sizd"}}}}]}}"#
            ),
            "scenarios[1].content.mode: unknown mode `sizd`, did you mean \"sized\"?",
        ),
        (
            format!(
                r#"{{"defaults":{{{t}}},"stages":"1:5s","scenarios":[{{"content":{{"mode":"sized"}}}}]}}"#
            ),
            "scenarios[0].content.approx_input_tokens: missing",
        ),
        (
            format!(
                r#"{{"defaults":{{{t}}},"stages":"1:5s","scenarios":[{{"content":{{"mode":"sized","approx_input_tokens":0}}}}]}}"#
            ),
            "scenarios[0].content.approx_input_tokens: must be",
        ),
        (
            format!(
                r#"{{"defaults":{{{t}}},"stages":"1:5s","scenarios":[{{"content":{{"mode":"scripted"}}}}]}}"#
            ),
            "scenarios[0].content.script: missing",
        ),
        (
            format!(
                r#"{{"defaults":{{{t}}},"stages":"1:5s","scenarios":[{{"content":{{"prompts":[]}}}}]}}"#
            ),
            "scenarios[0].content.prompts: empty",
        ),
        (
            format!(
                r#"{{"defaults":{{{t}}},"stages":"1:5s","scenarios":[{{"content":{{"prompts":["a"],"script":["b"]}}}}]}}"#
            ),
            "scenarios[0].content.script: not used by mode pool",
        ),
        (
            format!(r#"{{"defaults":{{{t}}},"stages":"1:5s","scenarios":[{{"auth":"basic"}}]}}"#),
            "scenarios[0].auth",
        ),
        (
            format!(
                r#"{{"defaults":{{{t}}},"stages":"1:5s","scenarios":[{{"headers":{{"Bad Name":"x"}}}}]}}"#
            ),
            "scenarios[0].headers.Bad Name",
        ),
        (
            format!(r#"{{"defaults":{{{t}}},"stages":"1:5s","cache_mode":"bsut"}}"#),
            "cache_mode: unknown mode `bsut`, did you mean \"bust\"?",
        ),
        (
            format!(
                r#"{{"defaults":{{{t}}},"stages":"1:5s","correlation":{{"uuid_in_prompt":false}}}}"#
            ),
            "correlation.uuid_in_prompt",
        ),
        (
            format!(r#"{{"defaults":{{{t}}},"stages":"1:5s","shared_prefix_tokens":10}}"#),
            "shared_prefix_tokens",
        ),
        (
            format!(r#"{{"defaults":{{{t}}},"stages":"1:5s","thresholds":{{"error_rate":2}}}}"#),
            "thresholds.error_rate",
        ),
        (
            format!(
                r#"{{"defaults":{{{t}}},"stages":"1:5s","scenarios":[{{"target":"https://x"}}]}}"#
            ),
            "scenarios[0].target",
        ),
    ];
    for (text, expected) in cases {
        let err = build(&profile(&text), &Overrides::default(), vec![0]).unwrap_err();
        assert!(
            err.starts_with(expected),
            "{text}\n  got: {err}\n  want: {expected}"
        );
    }
}

#[test]
fn the_pacer_tick_comes_from_the_flag_then_the_profile_and_is_bounded() {
    let p = profile(
        r#"{"defaults":{"target":"http://127.0.0.1:1"},"stages":"@10:1s","pacer_tick":"500us"}"#,
    );
    let plan = build(&p, &Overrides::default(), vec![0]).unwrap();
    assert_eq!(plan.pacer_tick, Duration::from_micros(500));
    let over = Overrides {
        pacer_tick: Some("2ms".into()),
        ..Overrides::default()
    };
    assert_eq!(
        build(&p, &over, vec![0]).unwrap().pacer_tick,
        Duration::from_millis(2)
    );
    let p = profile(r#"{"defaults":{"target":"http://127.0.0.1:1"},"stages":"@10:1s"}"#);
    let plan = build(&p, &Overrides::default(), vec![0]).unwrap();
    assert_eq!(plan.pacer_tick, limits::PACER_TICK);
    for (text, want) in [
        ("5us", "--pacer-tick: 5us is outside 10us..10000us"),
        ("11ms", "--pacer-tick: 11000us is outside 10us..10000us"),
        ("soon", "--pacer-tick: `soon` is not a duration"),
    ] {
        let over = Overrides {
            pacer_tick: Some(text.into()),
            ..Overrides::default()
        };
        let err = build(&p, &over, vec![0]).unwrap_err();
        assert!(err.starts_with(want), "{text}: {err}");
    }
    let p = profile(
        r#"{"defaults":{"target":"http://127.0.0.1:1"},"stages":"@10:1s","pacer_tick":"0"}"#,
    );
    let err = build(&p, &Overrides::default(), vec![0]).unwrap_err();
    assert!(err.starts_with("pacer_tick: 0us is outside"), "{err}");
}
