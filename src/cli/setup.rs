//! Planning in one place: the profile, the overrides, the host's facts
//! and the placement flags become the `Plan` that `validate` prints and
//! `run` runs, by the same code, so the two cannot disagree.

use super::{usage, Failure, OverrideArgs, PlacementArgs};
use crate::host::Facts;
use crate::plan::{self, Overrides, Plan};
use crate::stage;
use crate::verdict::half_port_range;
use std::path::Path;
use std::time::Duration;

/// A plan, and where the in-process mock runs (when there is one).
#[derive(Debug)]
pub struct Setup {
    /// What will run.
    pub plan: Plan,
    /// The in-process mock's CPUs.
    pub mock_cpus: Vec<usize>,
}

/// Resolves the plan of `profile_path` with these flags on this host.
/// `mock_target` is the in-process mock's URL once it listens (`validate`
/// passes a stand-in).
pub fn plan(
    profile_path: &Path,
    overrides: &OverrideArgs,
    placement: &PlacementArgs,
    facts: &Facts,
    mock: Option<MockTarget>,
) -> Result<Setup, Failure> {
    let mut profile = load_profile(profile_path)?;
    let (generator_cpus, mock_cpus) = cpus(placement, &facts.allowed_cpus)?;
    let mut overrides = self::overrides(overrides)?;
    if overrides.max_inflight.is_none() && profile.max_inflight.is_none() {
        overrides.max_inflight = Some(default_max_inflight(facts.fd_limit, placement.mock));
    }
    if let Some(mock) = mock {
        overrides.tls_roots.extend(mock.ca_der.clone());
        mock_as_target(&mut profile, &mut overrides, &mock.url)?;
    }
    let plan = plan::build(&profile, &overrides, generator_cpus)
        .map_err(|e| usage(format!("{}: {e}", profile_path.display())))?;
    Ok(Setup { plan, mock_cpus })
}

/// Points the run at the in-process mock: every scenario without
/// services, or the services whose URL is `mock` (`--service direct=mock`,
/// so a gateway in front of the mock is compared with the mock itself).
fn mock_as_target(
    profile: &mut crate::config::Profile,
    overrides: &mut Overrides,
    url: &str,
) -> Result<(), Failure> {
    let services: Vec<&mut crate::config::Service> = if overrides.services.is_empty() {
        profile.services.iter_mut().flatten().collect()
    } else {
        overrides.services.iter_mut().collect()
    };
    if services.is_empty() {
        overrides.target = Some(url.to_string());
        return Ok(());
    }
    let mut named = false;
    for service in services {
        if service.target.as_deref() == Some("mock") {
            service.target = Some(url.to_string());
            named = true;
        }
    }
    if named {
        Ok(())
    } else {
        Err(usage(
            "--mock: with services, name the mock as a service's URL (e.g. --service direct=mock)",
        ))
    }
}

/// The in-process mock as a target: its URL, and the CA its certificate
/// was made with (`--mock-tls`), trusted by this run only.
#[derive(Debug, Clone)]
pub struct MockTarget {
    /// `http://` or `https://127.0.0.1:PORT`.
    pub url: String,
    /// The CA, DER.
    pub ca_der: Option<Vec<u8>>,
}

/// A duration flag, or a usage error naming it.
pub fn duration_flag(flag: &str, text: &str) -> Result<Duration, Failure> {
    stage::parse_duration(text).map_err(|e| usage(format!("--{flag}: {e}")))
}

fn load_profile(path: &Path) -> Result<crate::config::Profile, Failure> {
    let text =
        std::fs::read_to_string(path).map_err(|e| usage(format!("{}: {e}", path.display())))?;
    crate::config::parse(&text).map_err(|e| usage(format!("{}: {e}", path.display())))
}

fn parse_headers(raw: &[String]) -> Result<Vec<(String, String)>, Failure> {
    raw.iter()
        .map(|h| {
            let (name, value) = h.split_once(':').ok_or_else(|| {
                let shown = crate::secrets::mask(h);
                usage(format!("--header `{shown}`: expected \"Name: value\""))
            })?;
            Ok((name.trim().to_string(), value.trim().to_string()))
        })
        .collect()
}

fn overrides(args: &OverrideArgs) -> Result<Overrides, Failure> {
    if args.vk.as_deref().is_some_and(|k| k.trim().is_empty()) {
        return Err(usage("--vk: empty key"));
    }
    Ok(Overrides {
        target: args.target.clone(),
        stages: args.stages.clone(),
        model: args.model.clone(),
        warmup: args.warmup.clone(),
        seed: args.seed,
        vk: args.vk.clone(),
        headers: parse_headers(&args.headers)?,
        insecure: args.insecure,
        cacert: args.cacert.clone(),
        no_tls_resume: args.no_tls_resume,
        resolve: args
            .resolve
            .iter()
            .map(|r| r.parse().map_err(|e| usage(format!("--resolve {e}"))))
            .collect::<Result<_, _>>()?,
        tls_roots: Vec::new(),
        max_inflight: args.max_inflight,
        pacer_tick: args.pacer_tick.clone(),
        no_retry: args.no_retry,
        services: args
            .services
            .iter()
            .map(|text| plan::parse_service(text).map_err(usage))
            .collect::<Result<_, _>>()?,
        baseline: args.baseline.clone(),
        rounds: args.rounds,
        target_from: None,
    })
}

/// Chooses generator and mock CPUs.
pub fn cpus(args: &PlacementArgs, allowed: &[usize]) -> Result<(Vec<usize>, Vec<usize>), Failure> {
    if allowed.is_empty() {
        return Err(usage("cannot determine the available CPUs"));
    }
    let generator = if let Some(text) = &args.cpus {
        plan::parse_cpus(text, allowed).map_err(|e| usage(format!("--cpus: {e}")))?
    } else if let Some(n) = args.shards {
        if n == 0 || n > allowed.len() {
            return Err(usage(format!(
                "--shards: must be between 1 and {} (available CPUs: {})",
                allowed.len(),
                plan::format_cpus(allowed)
            )));
        }
        allowed[..n].to_vec()
    } else if args.mock {
        allowed[..(allowed.len() / 2).max(1)].to_vec()
    } else {
        allowed.to_vec()
    };
    let mock = if let Some(text) = &args.mock_cpus {
        plan::parse_cpus(text, allowed).map_err(|e| usage(format!("--mock-cpus: {e}")))?
    } else {
        let rest: Vec<usize> = allowed
            .iter()
            .copied()
            .filter(|c| !generator.contains(c))
            .collect();
        if rest.is_empty() {
            vec![allowed[allowed.len() - 1]]
        } else {
            rest
        }
    };
    Ok((generator, mock))
}

/// The default bound on open-loop conversations in flight: what the
/// file-descriptor limit leaves after a reserve (each conversation holds a
/// connection; an in-process mock holds the other end too).
fn default_max_inflight(fd_limit: u64, local_mock: bool) -> u64 {
    const RESERVE: u64 = 256;
    if fd_limit == 0 {
        return crate::limits::MAX_INFLIGHT_DEFAULT;
    }
    let per = if local_mock { 2 } else { 1 };
    (fd_limit.saturating_sub(RESERVE) / per).clamp(16, crate::limits::USERS_MAX)
}

/// What to tell the user about a plan before it runs: closed-loop stages
/// whose users hold more connections to one target address than half the
/// local port range (connects past that point get slow, see
/// `verdict::cautions`), scenarios a stage gives no users, a key
/// placeholder still in a header.
pub fn warnings(plan: &Plan, facts: &Facts) -> Vec<String> {
    let mut out = Vec::new();
    if plan
        .scenarios
        .iter()
        .any(|s| s.headers.iter().any(|(_, v)| v.contains("REPLACE_WITH_VK")))
    {
        out.push(
            "warning: a header still holds the REPLACE_WITH_VK placeholder; pass --vk KEY".into(),
        );
    }
    match (plan.insecure, plan.targets.iter().any(|t| t.tls)) {
        (true, true) => out.push(
            "warning: --insecure: TLS certificates are not verified; anyone on the path could answer"
                .into(),
        ),
        (true, false) => out.push("note: --insecure has no effect on http:// targets".into()),
        _ => {}
    }
    if let Some(trust) = plan
        .trust
        .as_ref()
        .filter(|t| !plan.insecure && t.roots == 0)
    {
        out.push(format!(
            "warning: no trusted root certificates ({} in the system store were unusable); pass --cacert FILE",
            trust.system_errors
        ));
    }
    for target in &plan.targets {
        if let Some(note) = &target.note {
            out.push(format!("note: {}: {note}", target.url));
        }
    }
    if let Some(range) = facts.local_port_range {
        for warning in port_range_warnings(plan, range) {
            out.push(format!("warning: {warning}"));
        }
    }
    for (stage, scenario) in zero_user_scenarios(plan) {
        out.push(format!(
            "note: stage {stage} gives scenario {scenario} no users (too few users for its weight)"
        ));
    }
    out
}

fn port_range_warnings(plan: &Plan, (low, high): (u32, u32)) -> Vec<String> {
    let half = half_port_range((low, high));
    let mut out = Vec::new();
    for stage in plan.round_stages() {
        let stage::Load::Closed { users } = stage.load else {
            continue;
        };
        let split = plan.split_users(users);
        let mut per_address: Vec<(std::net::SocketAddr, u64)> = Vec::new();
        for scenario in &plan.scenarios {
            let n = split[scenario.base];
            let addr = plan.targets[scenario.target].addr;
            match per_address.iter_mut().find(|(a, _)| *a == addr) {
                Some((_, total)) => *total += n,
                None => per_address.push((addr, n)),
            }
        }
        for (addr, n) in per_address.into_iter().filter(|&(_, n)| n > half) {
            out.push(format!(
                "stage {} holds {n} connections to {addr}, more than half the local port range {low}-{high}; past that Linux connects get slow and show as the target's connect time (widen net.ipv4.ip_local_port_range, see tuning/README.md)",
                stage.label()
            ));
        }
    }
    out
}

/// (stage label, scenario name) pairs where a scenario with weight gets no
/// users because the stage has too few for the blend.
fn zero_user_scenarios(plan: &Plan) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for stage in plan.round_stages() {
        let stage::Load::Closed { users } = stage.load else {
            continue;
        };
        let blend = plan.scenarios.iter().step_by(plan.service_count());
        for (scenario, n) in blend.zip(plan.split_users(users)) {
            if n == 0 && scenario.weight > 0.0 {
                out.push((stage.label(), scenario.name.clone()));
            }
        }
    }
    out
}

/// Checks, before any shard starts, that every target answers a TCP
/// connect and that the file-descriptor limit can hold the largest stage.
pub fn preflight(plan: &Plan, fd_limit: u64, local_mock: bool) -> Result<(), Failure> {
    for target in &plan.targets {
        reach(plan, target)?;
    }
    // Each user holds one socket; an in-process mock holds the other end.
    let per_user = if local_mock { 2 } else { 1 };
    let needed = plan.users_max() * per_user + 64;
    if fd_limit > 0 && needed > fd_limit {
        return Err(usage(format!(
            "the largest stage needs about {needed} open files but the limit is {fd_limit}; raise `ulimit -n`, or lower the users or --max-inflight"
        )));
    }
    Ok(())
}

/// One target answers a TCP connect and, for https, a TLS handshake with
/// the run's trust (a certificate refused is a usage error naming
/// rustls' reason). Says what TLS it negotiated.
fn reach(plan: &Plan, target: &plan::Target) -> Result<(), Failure> {
    let unreachable = |e: std::io::Error| {
        usage(format!(
            "target {} ({}) is unreachable: {e}",
            target.url, target.addr
        ))
    };
    let (Some(trust), true) = (&plan.trust, target.tls) else {
        std::net::TcpStream::connect_timeout(&target.addr, plan.connect_timeout)
            .map_err(unreachable)?;
        return Ok(());
    };
    let name = crate::transport::trust::server_name(&target.server_name).map_err(usage)?;
    match crate::transport::tls::probe(target.addr, trust.config(), name, plan.connect_timeout) {
        Ok(negotiated) => {
            eprintln!("loadtest: {} ({}): {negotiated}", target.url, target.addr);
            Ok(())
        }
        Err(e) => match crate::transport::TlsFailure::of(&e) {
            Some(failure) => Err(usage(format!(
                "target {} ({}): {failure}{}",
                target.url,
                target.addr,
                if failure.is_certificate() {
                    " (trust its CA with --cacert FILE, or skip verification with --insecure)"
                } else {
                    ""
                }
            ))),
            None => Err(unreachable(e)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser as _;

    fn placement(extra: &[&str]) -> PlacementArgs {
        let mut argv = vec!["loadtest", "run", "--config", "x.json"];
        argv.extend_from_slice(extra);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Run(a) => a.placement,
            _ => unreachable!(),
        }
    }

    #[test]
    fn cpu_choice() {
        let allowed = [0, 1];
        let choose = |extra: &[&str], allowed: &[usize]| cpus(&placement(extra), allowed);
        assert_eq!(choose(&["--mock"], &allowed).unwrap(), (vec![0], vec![1]));
        assert_eq!(choose(&[], &allowed).unwrap().0, vec![0, 1]);
        assert_eq!(choose(&["--shards", "1"], &allowed).unwrap().0, vec![0]);
        assert!(choose(&["--shards", "3"], &allowed).is_err());
        assert!(choose(&["--cpus", "0-5"], &allowed).is_err());
        assert_eq!(choose(&["--mock"], &[3]).unwrap(), (vec![3], vec![3]));
        let (g, m) = choose(&["--mock", "--cpus", "1", "--mock-cpus", "0"], &allowed).unwrap();
        assert_eq!((g, m), (vec![1], vec![0]));
    }

    #[test]
    fn closed_stages_past_half_the_port_range_are_warned_about() {
        let profile = crate::config::parse(
            r#"{"defaults":{"target":"http://127.0.0.1:1"},
                "scenarios":[{"name":"a","weight":1},
                             {"name":"b","weight":1,"target":"http://127.0.0.1:2"}],
                "stages":"100:1s,20000:1s,@50000:1s"}"#,
        )
        .unwrap();
        let plan = plan::build(&profile, &Overrides::default(), vec![0]).unwrap();
        // 20,000 users over two addresses: 10,000 each, under 14,116.
        assert!(port_range_warnings(&plan, (32768, 60999)).is_empty());
        // A narrower range: each address is past half of it.
        let warnings = port_range_warnings(&plan, (40000, 50000));
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(
            warnings[0].starts_with("stage 20000:1s holds 10000 connections to 127.0.0.1:1,"),
            "{}",
            warnings[0]
        );
        assert!(warnings[1].contains("127.0.0.1:2"), "{}", warnings[1]);
        // Open-loop stages are not counted: max_inflight is only a bound.
    }

    #[test]
    fn headers_flag() {
        let h = parse_headers(&["X-A: 1".into(), "Authorization:Bearer k".into()]).unwrap();
        assert_eq!(
            h,
            vec![
                ("X-A".into(), "1".into()),
                ("Authorization".into(), "Bearer k".into())
            ]
        );
        assert!(parse_headers(&["nocolon".into()]).is_err());
    }
}
