//! Services: the gateways (and the direct path to the upstream) that a
//! comparison runs every scenario against, in the same stages and the
//! same wall-clock window. They come from the profile's `services` or from
//! `--service NAME=URL[,model=M][,key_env=VAR][,header=K:V]…`; the command
//! line's list replaces the profile's.
//!
//! A service changes only where a scenario's requests go and how they are
//! addressed (URL, model, headers, key); everything else about the
//! scenario stays, so each service gets the same traffic.

use super::target::check_header;
use super::{hint, Overrides};
use crate::config;
use crate::limits;

/// A service as the plan runs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    /// Name in reports.
    pub name: String,
    /// Its URL, secrets masked (only ever shown).
    pub url: String,
    /// The model it is sent, when it names its own.
    pub model: Option<String>,
    /// The environment variable its key was read from.
    pub key_env: Option<String>,
}

/// A service checked but not yet resolved: where it was written (for
/// errors), and the overrides its scenarios are resolved with.
pub(super) struct Spec {
    /// What the plan keeps.
    pub service: Service,
    /// The command line's overrides with this service's URL, model,
    /// headers and key layered on.
    pub overrides: Overrides,
}

/// Keys `--service` takes after `NAME=URL`.
const KEYS: &[&str] = &["model", "key_env", "header"];

/// Parses one `--service NAME=URL[,model=M][,key_env=VAR][,header=K:V]…`.
/// Values cannot hold a comma (a header value with one goes in the
/// profile's `services`).
pub fn parse_flag(text: &str) -> Result<config::Service, String> {
    let mut parts = text.split(',');
    let first = parts.next().unwrap_or_default();
    let (name, url) = first.split_once('=').ok_or_else(|| {
        format!("--service `{text}`: expected NAME=URL[,model=M][,key_env=VAR][,header=K:V]")
    })?;
    let mut service = config::Service {
        name: Some(name.trim().to_string()),
        target: Some(url.trim().to_string()),
        ..config::Service::default()
    };
    for part in parts {
        let (key, value) = part
            .split_once('=')
            .ok_or_else(|| format!("--service {name}: `{part}` is not KEY=VALUE"))?;
        let value = value.trim().to_string();
        match key.trim() {
            "model" => service.model = Some(value),
            "key_env" => service.key_env = Some(value),
            "header" => {
                let (k, v) = value
                    .split_once(':')
                    .ok_or_else(|| format!("--service {name}: header `{value}` is not K:V"))?;
                service
                    .headers
                    .get_or_insert_with(Default::default)
                    .insert(k.trim().to_string(), v.trim().to_string());
            }
            other => {
                return Err(format!(
                    "--service {name}: unknown key `{other}`{} (known: {})",
                    hint(other, KEYS),
                    KEYS.join(", ")
                ))
            }
        }
    }
    Ok(service)
}

/// The run's services (none: no comparison), each checked, with the
/// overrides its scenarios are resolved with. `env` reads an environment
/// variable (a parameter so tests need not touch the process's).
pub(super) fn specs(
    profile: &config::Profile,
    overrides: &Overrides,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<Spec>, String> {
    let (list, from_flags): (&[config::Service], bool) = if !overrides.services.is_empty() {
        (&overrides.services, true)
    } else {
        (profile.services.as_deref().unwrap_or_default(), false)
    };
    if list.is_empty() {
        if profile.services.is_some() {
            return Err("services: empty (leave it out to run without a comparison)".into());
        }
        return Ok(Vec::new());
    }
    if overrides.target.is_some() {
        return Err("--target: not with services, which each name their own target".into());
    }
    if list.len() > limits::SERVICES_MAX {
        return Err(format!("services: more than {}", limits::SERVICES_MAX));
    }
    let mut specs: Vec<Spec> = Vec::with_capacity(list.len());
    for (i, raw) in list.iter().enumerate() {
        let at = match (&raw.name, from_flags) {
            (Some(name), true) => format!("--service {name}"),
            _ => format!("services[{i}]"),
        };
        let spec = spec(&at, raw, overrides, env)?;
        if specs.iter().any(|s| s.service.name == spec.service.name) {
            return Err(format!(
                "{at}: the name `{}` is used twice",
                spec.service.name
            ));
        }
        specs.push(spec);
    }
    Ok(specs)
}

/// One service checked: its name, URL, headers and key.
fn spec(
    at: &str,
    raw: &config::Service,
    overrides: &Overrides,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Spec, String> {
    let name = raw.name.clone().unwrap_or_default();
    if name.is_empty()
        || name.len() > limits::SCENARIO_NAME_MAX
        || name
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || c == ',')
    {
        return Err(format!(
            "{at}.name: must be 1 to {} characters without spaces, commas or control characters",
            limits::SCENARIO_NAME_MAX
        ));
    }
    let url = match raw.target.as_deref().map(str::trim) {
        Some(url) if !url.is_empty() => url.to_string(),
        _ => return Err(format!("{at}.target: missing")),
    };
    let mut overrides = overrides.clone();
    for (k, v) in raw.headers.iter().flatten() {
        check_header(k, v).map_err(|e| format!("{at}.headers.{k}: {e}"))?;
        overrides
            .headers
            .retain(|(n, _)| !n.eq_ignore_ascii_case(k));
        overrides.headers.push((k.clone(), v.clone()));
    }
    if let Some(var) = &raw.key_env {
        let key = env(var).filter(|k| !k.trim().is_empty()).ok_or_else(|| {
            format!("{at}.key_env: the environment variable `{var}` is not set (or empty)")
        })?;
        overrides.vk = Some(key.trim().to_string());
    }
    if let Some(model) = raw.model.as_ref().filter(|m| !m.is_empty()) {
        overrides.model = Some(model.clone());
    }
    overrides.target = Some(url.clone());
    overrides.target_from = Some(format!("{at}.target"));
    Ok(Spec {
        service: Service {
            name,
            url: crate::secrets::url(&url),
            model: raw.model.clone().filter(|m| !m.is_empty()),
            key_env: raw.key_env.clone(),
        },
        overrides,
    })
}

/// The baseline's index among `services`: the one `--baseline` (or the
/// profile's `baseline`) names, or `None` for the fastest in each round.
pub(super) fn baseline(
    profile: &config::Profile,
    overrides: &Overrides,
    services: &[Service],
) -> Result<Option<usize>, String> {
    match (&overrides.baseline, &profile.baseline) {
        (Some(name), _) => named(Some(name), "--baseline", services),
        (None, name) => named(name.as_deref(), "baseline", services),
    }
}

fn named(name: Option<&str>, at: &str, services: &[Service]) -> Result<Option<usize>, String> {
    let Some(name) = name else {
        return Ok(None);
    };
    if services.is_empty() {
        return Err(format!(
            "{at}: there are no services to compare (add --service NAME=URL)"
        ));
    }
    let names: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
    names
        .iter()
        .position(|n| *n == name)
        .map(Some)
        .ok_or_else(|| {
            format!(
                "{at}: no service is named `{name}`{} (services: {})",
                hint(name, &names),
                names.join(", ")
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flag_takes_its_keys_and_names_what_is_wrong() {
        let s = parse_flag("gw=http://127.0.0.1:9/v1,model=openai/m,key_env=GW_KEY,header=x-a: b")
            .unwrap();
        assert_eq!(s.name.as_deref(), Some("gw"));
        assert_eq!(s.target.as_deref(), Some("http://127.0.0.1:9/v1"));
        assert_eq!(s.model.as_deref(), Some("openai/m"));
        assert_eq!(s.key_env.as_deref(), Some("GW_KEY"));
        assert_eq!(s.headers.unwrap()["x-a"], "b");
        let e = parse_flag("http://127.0.0.1:9").unwrap_err();
        assert!(e.contains("expected NAME=URL"), "{e}");
        let e = parse_flag("gw=http://x,modle=m").unwrap_err();
        assert!(
            e.contains("unknown key `modle`") && e.contains("did you mean"),
            "{e}"
        );
        let e = parse_flag("gw=http://x,model").unwrap_err();
        assert!(e.contains("`model` is not KEY=VALUE"), "{e}");
        let e = parse_flag("gw=http://x,header=nocolon").unwrap_err();
        assert!(e.contains("not K:V"), "{e}");
    }

    #[test]
    fn a_key_comes_from_its_variable_and_an_unset_one_is_refused() {
        let overrides = Overrides {
            services: vec![parse_flag("gw=http://127.0.0.1:9,key_env=GW_KEY").unwrap()],
            ..Overrides::default()
        };
        let profile = config::Profile::default();
        let set = |v: &str| (v == "GW_KEY").then(|| "sk-secret".to_string());
        let specs = specs(&profile, &overrides, &set).unwrap();
        assert_eq!(specs[0].overrides.vk.as_deref(), Some("sk-secret"));
        assert_eq!(
            specs[0].overrides.target.as_deref(),
            Some("http://127.0.0.1:9")
        );
        let unset = |_: &str| None;
        let e = specs_err(&profile, &overrides, &unset);
        assert!(
            e.contains("--service gw.key_env") && e.contains("`GW_KEY` is not set"),
            "{e}"
        );
        assert!(!e.contains("sk-secret"));
    }

    fn specs_err(
        profile: &config::Profile,
        overrides: &Overrides,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> String {
        match specs(profile, overrides, env) {
            Ok(_) => panic!("accepted"),
            Err(e) => e,
        }
    }

    #[test]
    fn names_are_checked_and_the_baseline_must_be_one() {
        let two = |a: &str, b: &str| Overrides {
            services: vec![
                parse_flag(&format!("{a}=http://127.0.0.1:9")).unwrap(),
                parse_flag(&format!("{b}=http://127.0.0.1:10")).unwrap(),
            ],
            ..Overrides::default()
        };
        let profile = config::Profile::default();
        let none = |_: &str| None;
        let e = specs_err(&profile, &two("gw", "gw"), &none);
        assert!(e.contains("`gw` is used twice"), "{e}");
        let e = specs_err(&profile, &two("gw", ""), &none);
        assert!(e.contains(".name: must be"), "{e}");
        let mut with_target = two("a", "b");
        with_target.target = Some("http://127.0.0.1:1".into());
        assert!(specs_err(&profile, &with_target, &none).starts_with("--target"));
        let specs = specs(&profile, &two("direct", "gw"), &none).unwrap();
        let services: Vec<Service> = specs.into_iter().map(|s| s.service).collect();
        assert_eq!(named(Some("gw"), "--baseline", &services), Ok(Some(1)));
        assert_eq!(named(None, "--baseline", &services), Ok(None));
        let e = named(Some("drect"), "--baseline", &services).unwrap_err();
        assert!(
            e.contains("no service is named `drect`") && e.contains("direct"),
            "{e}"
        );
        let e = named(Some("x"), "--baseline", &[]).unwrap_err();
        assert!(e.contains("no services"), "{e}");
    }
}
