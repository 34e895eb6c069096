//! `[alerts]` in baton.toml: the rules the alert engine ([`crate::alerts`])
//! evaluates, and where it sends what fires.
//!
//! ```toml
//! [alerts]
//! webhook = "https://hooks.example.com/baton"   # or webhook_env = "BATON_ALERT_WEBHOOK"
//! evaluate_every = "10s"
//! webhook_timeout = "5s"
//!
//! [[alerts.rules]]
//! name = "provider-down"
//! kind = "provider_down"          # provider = "anthropic-sonnet"; every provider without it
//!
//! [[alerts.rules]]
//! name = "support-sla"
//! kind = "sla_attainment"         # share of requests finished within the route's sla_p95
//! route = "support"               # every route with an sla_p95 without it
//! target = 0.95                   # fires below this
//! window = "5m"
//! min_requests = 10               # fewer in the window decide nothing
//!
//! [[alerts.rules]]
//! name = "support-burn"
//! kind = "burn_rate"              # failed share / (1 - slo)
//! route = "support"               # every route without it
//! slo = 0.99
//! threshold = 14.4                # fires above this
//! window = "1h"
//! ```
//!
//! Parsed strictly like the rest of the file: a field that does not belong
//! to a rule's kind is an error at its line, not silently ignored, since a
//! `target` on a burn-rate rule means its author expected it to matter.
//! Webhook URLs often carry a token (in the path, the query or the user
//! part), so the URL is held as a [`Secret`] and shown, in errors, logs and
//! serialised config, as its scheme, host and port only. The file may name
//! an environment variable instead (`webhook_env`), as it does for API keys.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::{Checker, ConfigDuration, ProviderId, Route};
use crate::secret::Secret;
use crate::swarm::RouteName;

/// The evaluation tick when the file does not say.
const DEFAULT_EVALUATE_EVERY: Duration = Duration::from_secs(10);
/// One webhook POST attempt at most this long, unless the file says.
const DEFAULT_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_SLA_WINDOW: Duration = Duration::from_secs(5 * 60);
/// An hour at 14.4× spends 2% of a 30-day budget: the classic fast-burn page.
const DEFAULT_BURN_WINDOW: Duration = Duration::from_secs(3600);
const DEFAULT_BURN_THRESHOLD: f64 = 14.4;
const DEFAULT_MIN_REQUESTS: u32 = 10;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAlerts {
    webhook: Option<Spanned<String>>,
    webhook_env: Option<Spanned<String>>,
    evaluate_every: Option<Spanned<ConfigDuration>>,
    webhook_timeout: Option<Spanned<ConfigDuration>>,
    #[serde(default)]
    rules: Vec<Spanned<RawRule>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: Spanned<String>,
    kind: Spanned<String>,
    provider: Option<Spanned<String>>,
    route: Option<Spanned<String>>,
    target: Option<Spanned<f64>>,
    slo: Option<Spanned<f64>>,
    threshold: Option<Spanned<f64>>,
    window: Option<Spanned<ConfigDuration>>,
    min_requests: Option<Spanned<u32>>,
}

/// A webhook URL: the whole URL only for the request, the origin for people.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookUrl {
    url: Secret,
    origin: String,
}

impl WebhookUrl {
    /// Accepts an absolute `http://` or `https://` URL with a host. The
    /// error never repeats the URL: it may hold a token.
    pub fn parse(text: &str) -> Result<WebhookUrl, String> {
        let url = reqwest::Url::parse(text.trim())
            .map_err(|error| format!("expected an http:// or https:// URL ({error})"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "expected an http:// or https:// URL, found the scheme `{}`",
                url.scheme()
            ));
        }
        let Some(host) = url.host_str() else {
            return Err("expected an http:// or https:// URL with a host".into());
        };
        let origin = match url.port() {
            Some(port) => format!("{}://{host}:{port}", url.scheme()),
            None => format!("{}://{host}", url.scheme()),
        };
        Ok(WebhookUrl {
            url: Secret::new(url.as_str()),
            origin,
        })
    }

    /// The whole URL, for the request and nothing else.
    pub fn expose(&self) -> &str {
        self.url.expose()
    }

    /// Scheme, host and port: what logs and messages show.
    pub fn origin(&self) -> &str {
        &self.origin
    }
}

impl fmt::Debug for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WebhookUrl({}/[redacted])", self.origin)
    }
}

impl Serialize for WebhookUrl {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&format_args!("{}/[redacted]", self.origin))
    }
}

/// `[alerts]`, validated.
#[derive(Debug, Clone, Serialize)]
pub struct AlertSettings {
    /// Where fired and resolved alerts are POSTed; log only without one.
    pub webhook: Option<WebhookUrl>,
    /// How often the windowed rules (SLA, burn rate) are evaluated.
    pub evaluate_every: Duration,
    /// The limit of one webhook POST attempt.
    pub webhook_timeout: Duration,
    pub rules: Vec<AlertRule>,
}

impl Default for AlertSettings {
    fn default() -> Self {
        AlertSettings {
            webhook: None,
            evaluate_every: DEFAULT_EVALUATE_EVERY,
            webhook_timeout: DEFAULT_WEBHOOK_TIMEOUT,
            rules: Vec::new(),
        }
    }
}

/// One `[[alerts.rules]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertRule {
    /// Unique among the rules; letters, digits, `-`, `_`, `.`.
    pub name: String,
    pub condition: Condition,
}

/// What makes a rule's subject bad.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Condition {
    /// A provider's health is Down. Subjects: the provider, or every one.
    ProviderDown { provider: Option<ProviderId> },
    /// Fewer than `target` of the route's requests finished in the window
    /// completed within its `sla_p95`. Subjects: the route, or every route
    /// with an `sla_p95`.
    SlaAttainment {
        route: Option<RouteName>,
        target: f64,
        window: Duration,
        min_requests: u32,
    },
    /// The route's failed share over the window, divided by the error
    /// budget `1 - slo`, is above `threshold`. Subjects: the route, or
    /// every route.
    BurnRate {
        route: Option<RouteName>,
        slo: f64,
        threshold: f64,
        window: Duration,
        min_requests: u32,
    },
}

impl Condition {
    /// The `kind` in baton.toml and in webhook bodies.
    pub fn kind(&self) -> &'static str {
        match self {
            Condition::ProviderDown { .. } => "provider_down",
            Condition::SlaAttainment { .. } => "sla_attainment",
            Condition::BurnRate { .. } => "burn_rate",
        }
    }

    /// The sliding window, for the windowed kinds.
    pub fn window(&self) -> Option<Duration> {
        match self {
            Condition::ProviderDown { .. } => None,
            Condition::SlaAttainment { window, .. } | Condition::BurnRate { window, .. } => {
                Some(*window)
            }
        }
    }
}

const KINDS: [&str; 3] = ["provider_down", "sla_attainment", "burn_rate"];

pub(super) fn validate(
    raw: Option<Spanned<RawAlerts>>,
    providers: &BTreeMap<ProviderId, super::Provider>,
    routes: &BTreeMap<RouteName, Route>,
    check: &mut Checker<'_>,
) -> AlertSettings {
    let Some(raw) = raw else {
        return AlertSettings::default();
    };
    let raw = raw.into_inner();
    let mut settings = AlertSettings::default();

    match (&raw.webhook, &raw.webhook_env) {
        (Some(url), Some(_)) => check.error(
            url.span(),
            "webhook",
            "[alerts]: expected one of `webhook` and `webhook_env`, found both",
        ),
        (Some(url), None) => match WebhookUrl::parse(url.get_ref()) {
            Ok(url) => settings.webhook = Some(url),
            Err(message) => check.error(url.span(), "webhook", format!("[alerts]: {message}")),
        },
        (None, Some(env)) => {
            if !super::is_env_var_name(env.get_ref()) {
                check.error(
                    env.span(),
                    "webhook_env",
                    "[alerts]: expected the name of an environment variable (letters, digits, `_`), not a URL",
                );
            } else {
                match crate::secret::Secret::from_env(env.get_ref()) {
                    None => check.warning(
                        env.span(),
                        "webhook_env",
                        format!(
                            "[alerts]: environment variable {} is not set; alerts go to the log only",
                            env.get_ref()
                        ),
                    ),
                    Some(value) => match WebhookUrl::parse(value.expose()) {
                        Ok(url) => settings.webhook = Some(url),
                        Err(message) => check.error(
                            env.span(),
                            "webhook_env",
                            format!("[alerts]: the value of {}: {message}", env.get_ref()),
                        ),
                    },
                }
            }
        }
        (None, None) => {}
    }
    check.positive(&raw.evaluate_every, "evaluate_every", "[alerts]");
    check.positive(&raw.webhook_timeout, "webhook_timeout", "[alerts]");
    if let Some(every) = &raw.evaluate_every {
        settings.evaluate_every = every.get_ref().0;
    }
    if let Some(timeout) = &raw.webhook_timeout {
        settings.webhook_timeout = timeout.get_ref().0;
    }

    let mut names: Vec<String> = Vec::new();
    for rule in &raw.rules {
        let span = rule.span();
        let rule = rule.get_ref();
        let name = rule.name.get_ref().clone();
        let owner = format!("alert rule `{name}`");
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            check.error(
                rule.name.span(),
                "name",
                format!("{owner}: expected a name of letters, digits, `-`, `_` and `.`"),
            );
        } else if names.contains(&name) {
            check.error(
                rule.name.span(),
                "name",
                format!("{owner}: another rule has this name; names must be unique"),
            );
        }
        names.push(name.clone());

        let kind = rule.kind.get_ref().as_str();
        if !KINDS.contains(&kind) {
            check.error(
                rule.kind.span(),
                "kind",
                format!(
                    "{owner}: expected one of {}, found `{kind}`",
                    KINDS.join(", ")
                ),
            );
            continue;
        }
        // Fields that belong to other kinds: an error, so that a setting
        // its author relies on is never silently without effect.
        let allowed: &[&str] = match kind {
            "provider_down" => &["provider"],
            "sla_attainment" => &["route", "target", "window", "min_requests"],
            _ => &["route", "slo", "threshold", "window", "min_requests"],
        };
        let present = [
            ("provider", rule.provider.as_ref().map(Spanned::span)),
            ("route", rule.route.as_ref().map(Spanned::span)),
            ("target", rule.target.as_ref().map(Spanned::span)),
            ("slo", rule.slo.as_ref().map(Spanned::span)),
            ("threshold", rule.threshold.as_ref().map(Spanned::span)),
            ("window", rule.window.as_ref().map(Spanned::span)),
            (
                "min_requests",
                rule.min_requests.as_ref().map(Spanned::span),
            ),
        ];
        for (field, field_span) in present {
            if let Some(field_span) = field_span
                && !allowed.contains(&field)
            {
                check.error(
                    field_span,
                    field,
                    format!("{owner}: a `{kind}` rule does not take `{field}`"),
                );
            }
        }

        check.positive(&rule.window, "window", &owner);
        let min_requests = match &rule.min_requests {
            Some(min) if *min.get_ref() == 0 => {
                check.error(
                    min.span(),
                    "min_requests",
                    format!("{owner}: expected at least 1"),
                );
                DEFAULT_MIN_REQUESTS
            }
            Some(min) => *min.get_ref(),
            None => DEFAULT_MIN_REQUESTS,
        };
        let route = rule.route.as_ref().and_then(|route| {
            let name = RouteName(route.get_ref().clone());
            if routes.contains_key(&name) {
                Some(name)
            } else {
                check.error(
                    route.span(),
                    "route",
                    format!(
                        "{owner}: no route `{name}` in [routes] (defined: {})",
                        super::list_or_none(routes.keys().map(|r| r.0.as_str()))
                    ),
                );
                None
            }
        });

        let condition = match kind {
            "provider_down" => {
                let provider = rule.provider.as_ref().and_then(|provider| {
                    let id = ProviderId(provider.get_ref().clone());
                    if providers.contains_key(&id) {
                        Some(id)
                    } else {
                        check.error(
                            provider.span(),
                            "provider",
                            format!(
                                "{owner}: no provider `{id}` in [providers] (defined: {})",
                                super::list_or_none(providers.keys().map(|p| p.0.as_str()))
                            ),
                        );
                        None
                    }
                });
                if rule.provider.is_some() && provider.is_none() {
                    continue;
                }
                Condition::ProviderDown { provider }
            }
            "sla_attainment" => {
                if rule.route.is_some() && route.is_none() {
                    continue;
                }
                match &route {
                    Some(name) if routes.get(name).is_some_and(|r| r.sla_p95.is_none()) => {
                        let at = rule.route.as_ref().map_or(span.clone(), Spanned::span);
                        check.error(
                            at,
                            "route",
                            format!(
                                "{owner}: route `{name}` has no `sla_p95` latency target to attain"
                            ),
                        );
                    }
                    None if routes.values().all(|r| r.sla_p95.is_none()) => check.error(
                        rule.kind.span(),
                        "route",
                        format!("{owner}: no route has an `sla_p95` latency target to attain"),
                    ),
                    _ => {}
                }
                let Some(target) = fraction(
                    check,
                    &owner,
                    "target",
                    rule.target.as_ref(),
                    &span,
                    |t| t > 0.0 && t <= 1.0,
                    "a fraction in (0, 1] such as 0.95",
                ) else {
                    continue;
                };
                Condition::SlaAttainment {
                    route,
                    target,
                    window: rule
                        .window
                        .as_ref()
                        .map_or(DEFAULT_SLA_WINDOW, |w| w.get_ref().0),
                    min_requests,
                }
            }
            _ => {
                if rule.route.is_some() && route.is_none() {
                    continue;
                }
                let Some(slo) = fraction(
                    check,
                    &owner,
                    "slo",
                    rule.slo.as_ref(),
                    &span,
                    |s| s > 0.0 && s < 1.0,
                    "a fraction in (0, 1) such as 0.99 (1 leaves no error budget to burn)",
                ) else {
                    continue;
                };
                let threshold = match &rule.threshold {
                    Some(t) if !(t.get_ref().is_finite() && *t.get_ref() > 0.0) => {
                        check.error(
                            t.span(),
                            "threshold",
                            format!(
                                "{owner}: expected a burn rate above zero such as 14.4, found {}",
                                t.get_ref()
                            ),
                        );
                        continue;
                    }
                    Some(t) => *t.get_ref(),
                    None => DEFAULT_BURN_THRESHOLD,
                };
                Condition::BurnRate {
                    route,
                    slo,
                    threshold,
                    window: rule
                        .window
                        .as_ref()
                        .map_or(DEFAULT_BURN_WINDOW, |w| w.get_ref().0),
                    min_requests,
                }
            }
        };
        settings.rules.push(AlertRule { name, condition });
    }
    settings
}

/// A required fraction: an error at the field when out of range, at the
/// rule when missing.
fn fraction(
    check: &mut Checker<'_>,
    owner: &str,
    field: &str,
    value: Option<&Spanned<f64>>,
    rule_span: &std::ops::Range<usize>,
    valid: impl Fn(f64) -> bool,
    expected: &str,
) -> Option<f64> {
    match value {
        None => {
            check.error(
                rule_span.clone(),
                field,
                format!("{owner}: expected `{field}`, {expected}"),
            );
            None
        }
        Some(v) if !valid(*v.get_ref()) => {
            check.error(
                v.span(),
                field,
                format!("{owner}: expected {expected}, found {}", v.get_ref()),
            );
            None
        }
        Some(v) => Some(*v.get_ref()),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{Config, ConfigError};

    const BASE: &str = "default_route = \"support\"\n[providers.kb]\nkind = \"extractive\"\n[routes.support]\nchain = [\"kb\"]\nsla_p95 = \"3s\"\n[routes.batch]\nchain = [\"kb\"]\n";

    fn parse(alerts: &str) -> Result<Config, Vec<String>> {
        match Config::parse(&format!("{BASE}{alerts}"), Path::new("baton.toml")) {
            Ok(config) => Ok(config),
            Err(ConfigError::Invalid(d)) => Err(d.iter().map(ToString::to_string).collect()),
            Err(other) => panic!("{other}"),
        }
    }

    fn errors(alerts: &str) -> Vec<String> {
        parse(alerts).expect_err("expected config errors")
    }

    #[test]
    fn no_alerts_section_means_no_rules_and_no_webhook() {
        let config = parse("").unwrap();
        assert!(config.alerts.rules.is_empty());
        assert!(config.alerts.webhook.is_none());
        assert_eq!(config.alerts.evaluate_every, DEFAULT_EVALUATE_EVERY);
    }

    #[test]
    fn every_kind_parses_with_its_defaults() {
        let config = parse(
            "[alerts]\nwebhook = \"http://127.0.0.1:9000/hooks/baton\"\nevaluate_every = \"2s\"\n\
             [[alerts.rules]]\nname = \"down\"\nkind = \"provider_down\"\n\
             [[alerts.rules]]\nname = \"sla\"\nkind = \"sla_attainment\"\nroute = \"support\"\ntarget = 0.95\n\
             [[alerts.rules]]\nname = \"burn\"\nkind = \"burn_rate\"\nslo = 0.99\nwindow = \"30m\"\nmin_requests = 1\n",
        )
        .unwrap();
        let alerts = &config.alerts;
        assert_eq!(alerts.evaluate_every, Duration::from_secs(2));
        assert_eq!(
            alerts.webhook.as_ref().unwrap().origin(),
            "http://127.0.0.1:9000"
        );
        assert_eq!(
            alerts.rules[0].condition,
            Condition::ProviderDown { provider: None }
        );
        assert_eq!(
            alerts.rules[1].condition,
            Condition::SlaAttainment {
                route: Some(RouteName("support".into())),
                target: 0.95,
                window: DEFAULT_SLA_WINDOW,
                min_requests: DEFAULT_MIN_REQUESTS,
            }
        );
        assert_eq!(
            alerts.rules[2].condition,
            Condition::BurnRate {
                route: None,
                slo: 0.99,
                threshold: DEFAULT_BURN_THRESHOLD,
                window: Duration::from_secs(1800),
                min_requests: 1,
            }
        );
    }

    #[test]
    fn an_unknown_kind_names_its_line_and_field() {
        let found = errors("[alerts]\n[[alerts.rules]]\nname = \"x\"\nkind = \"cpu_hot\"\n");
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with("baton.toml:12:8: error: field `kind`: alert rule `x`: expected one of provider_down, sla_attainment, burn_rate, found `cpu_hot`"),
            "{found:?}"
        );
    }

    #[test]
    fn a_webhook_that_is_not_http_is_refused_without_echoing_it() {
        let found = errors("[alerts]\nwebhook = \"ftp://user:hunter2@example.com/x\"\n");
        assert!(
            found[0].starts_with("baton.toml:10:11: error: field `webhook`: [alerts]: expected an http:// or https:// URL, found the scheme `ftp`"),
            "{found:?}"
        );
        assert!(!found[0].contains("hunter2"), "{found:?}");
        let found = errors("[alerts]\nwebhook = \"hooks.example.com/token-abc\"\n");
        assert!(found[0].contains("field `webhook`"), "{found:?}");
        assert!(!found[0].contains("token-abc"), "{found:?}");
    }

    #[test]
    fn the_webhook_secret_never_shows_in_debug_or_serialised_config() {
        let config = parse(
            "[alerts]\nwebhook = \"https://bot:pa55@hooks.example.com:8443/services/T0/B0/s3cr3t?token=t0k\"\n",
        )
        .unwrap();
        let webhook = config.alerts.webhook.as_ref().unwrap();
        assert_eq!(webhook.origin(), "https://hooks.example.com:8443");
        assert!(webhook.expose().contains("s3cr3t"));
        let shown = format!(
            "{:?} {}",
            config.alerts,
            serde_json::to_string(&config.alerts).unwrap()
        );
        for secret in ["pa55", "s3cr3t", "t0k", "bot:"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
    }

    #[test]
    fn fields_of_another_kind_and_bad_values_are_errors_at_their_lines() {
        let found = errors(
            "[alerts]\n[[alerts.rules]]\nname = \"a\"\nkind = \"provider_down\"\ntarget = 0.9\n\
             [[alerts.rules]]\nname = \"b\"\nkind = \"burn_rate\"\nslo = 1.0\n\
             [[alerts.rules]]\nname = \"c\"\nkind = \"sla_attainment\"\nroute = \"batch\"\ntarget = 0.9\n\
             [[alerts.rules]]\nname = \"c\"\nkind = \"provider_down\"\nprovider = \"nope\"\n",
        );
        let expect = [
            "baton.toml:13:10: error: field `target`: alert rule `a`: a `provider_down` rule does not take `target`",
            "baton.toml:17:7: error: field `slo`: alert rule `b`: expected a fraction in (0, 1)",
            "baton.toml:21:9: error: field `route`: alert rule `c`: route `batch` has no `sla_p95`",
            "baton.toml:24:8: error: field `name`: alert rule `c`: another rule has this name",
            "baton.toml:26:12: error: field `provider`: alert rule `c`: no provider `nope`",
        ];
        assert_eq!(found.len(), expect.len(), "{found:#?}");
        for (found, expected) in found.iter().zip(expect) {
            assert!(found.starts_with(expected), "{found}\nexpected {expected}");
        }
    }

    #[test]
    fn a_missing_target_is_reported_at_the_rule() {
        let found = errors("[alerts]\n[[alerts.rules]]\nname = \"s\"\nkind = \"sla_attainment\"\n");
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with(
                "baton.toml:10:1: error: field `target`: alert rule `s`: expected `target`"
            ),
            "{found:?}"
        );
    }

    #[test]
    fn an_unknown_key_in_a_rule_is_an_error() {
        let found = errors(
            "[alerts]\n[[alerts.rules]]\nname = \"s\"\nkind = \"provider_down\"\nseverity = \"page\"\n",
        );
        assert!(found[0].starts_with("baton.toml:13:1: error:"), "{found:?}");
        assert!(found[0].contains("severity"), "{found:?}");
    }
}
