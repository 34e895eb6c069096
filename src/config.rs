//! `baton.toml`: providers and routes (the routing policy's skeleton).
//!
//! The format is ours, so it is parsed strictly: unknown keys are errors,
//! and the raw TOML shape ([`RawConfig`]) is validated into [`Config`], where
//! every route names providers that exist and the default route is real.
//! Every error carries the file, line and column. Provider secrets are never
//! in the file: `api_key_env` names the environment variable that holds one.
//!
//! Where the config is found: `--config FILE`, else `BATON_CONFIG`, else
//! `./baton.toml`, else the default config embedded in the binary (the
//! shipped `baton.toml`), so that an installed `baton` validates and runs
//! swarms anywhere.

pub mod alerts;
pub mod duration;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::diagnostic::{Diagnostic, Diagnostics, position};
use crate::swarm::{Capability, RouteName};
pub use alerts::{AlertRule, AlertSettings, Condition, WebhookUrl};
pub use duration::ConfigDuration;

/// The shipped default config, embedded so an installed binary has it.
pub const DEFAULT_CONFIG: &str = include_str!("../baton.toml");

/// Where the embedded default config reports its errors from.
pub const EMBEDDED_PATH: &str = "<embedded>/baton.toml";

/// The name of a provider in baton.toml.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct ProviderId(pub String);

impl fmt::Display for ProviderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a config could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid config:\n{0}")]
    Invalid(Diagnostics),
}

/// Which wire protocol or local mechanism serves a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// OpenAI Chat Completions and every compatible server.
    Openai,
    /// Anthropic Messages.
    Anthropic,
    /// The retrieval surrogate over the swarm's knowledge base; needs no model.
    Extractive,
    /// A supervised local model server.
    Local,
}

/// How a provider's health is probed when no traffic tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ProbeKind {
    /// `GET /models`: cheap, proves the API answers and the key works.
    #[default]
    Models,
    /// A one-token chat completion: proves the model itself answers.
    Chat,
    /// No active probes; passive outcomes only.
    None,
}

/// Which failures make the chain move on to the next provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    Connect,
    Reset,
    FirstTokenTimeout,
    Timeout,
    RateLimited,
    ServerError,
    Malformed,
    CutStream,
    ContentFilter,
    ContextLength,
    Contract,
}

impl Trigger {
    pub const ALL: [Trigger; 11] = [
        Trigger::Connect,
        Trigger::Reset,
        Trigger::FirstTokenTimeout,
        Trigger::Timeout,
        Trigger::RateLimited,
        Trigger::ServerError,
        Trigger::Malformed,
        Trigger::CutStream,
        Trigger::ContentFilter,
        Trigger::ContextLength,
        Trigger::Contract,
    ];

    /// The name in baton.toml; the same as [`crate::provider::ProviderError::label`].
    pub fn label(self) -> &'static str {
        match self {
            Trigger::Connect => "connect",
            Trigger::Reset => "reset",
            Trigger::FirstTokenTimeout => "first_token_timeout",
            Trigger::Timeout => "timeout",
            Trigger::RateLimited => "429",
            Trigger::ServerError => "5xx",
            Trigger::Malformed => "malformed",
            Trigger::CutStream => "cut_stream",
            Trigger::ContentFilter => "content_filter",
            Trigger::ContextLength => "context_length",
            Trigger::Contract => "contract",
        }
    }

    pub fn parse(label: &str) -> Option<Trigger> {
        Self::ALL.into_iter().find(|t| t.label() == label)
    }
}

/// The route's last resorts after every remote provider failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FinalFallback {
    /// The stale-if-error response cache.
    Cache,
    /// The supervised local model server, when one is configured.
    Local,
    /// The extractive answer from the swarm's knowledge base.
    Extractive,
}

/// When a second, hedged request is sent to the next provider.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Hedge {
    /// After a fixed delay.
    After(Duration),
    /// After the primary's observed latency percentile (0–100).
    Percentile(f64),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    default_route: Spanned<String>,
    #[serde(default)]
    defaults: RawRouteSettings,
    #[serde(default)]
    breaker: BreakerSettings,
    #[serde(default)]
    budget: BudgetSettings,
    #[serde(default)]
    cache: CacheSettings,
    #[serde(default)]
    health: HealthSettings,
    #[serde(default)]
    store: crate::store::StoreSettings,
    alerts: Option<Spanned<alerts::RawAlerts>>,
    #[serde(default)]
    report: crate::telemetry::ReportSettings,
    #[serde(default)]
    providers: BTreeMap<Spanned<String>, RawProvider>,
    #[serde(default)]
    routes: BTreeMap<Spanned<String>, RawRoute>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvider {
    kind: ProviderKind,
    model: Option<String>,
    base_url: Option<Spanned<String>>,
    api_key_env: Option<Spanned<String>>,
    domain: Option<String>,
    #[serde(default)]
    capabilities: Vec<Spanned<String>>,
    description: Option<String>,
    cost_per_1k_input: Option<Spanned<f64>>,
    cost_per_1k_output: Option<Spanned<f64>>,
    max_concurrency: Option<Spanned<u32>>,
    max_queue: Option<u32>,
    rpm: Option<u32>,
    tpm: Option<u32>,
    connect_timeout: Option<Spanned<ConfigDuration>>,
    #[serde(default)]
    probe: RawProbe,
    /// `kind = "local"`: the server's command line, with `{port}` and
    /// `{model_path}` filled in.
    command: Option<Spanned<Vec<String>>>,
    model_path: Option<Spanned<String>>,
    ready_timeout: Option<Spanned<ConfigDuration>>,
    max_restarts: Option<u32>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawProbe {
    interval: Option<ConfigDuration>,
    #[serde(default)]
    kind: ProbeKind,
}

/// Route settings, written once under `[defaults]` and overridable per route.
macro_rules! route_settings {
    ($(#[$meta:meta])* struct $name:ident { $($extra:tt)* }) => {
        $(#[$meta])*
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        struct $name {
            $($extra)*
            first_token_timeout: Option<Spanned<ConfigDuration>>,
            attempt_timeout: Option<Spanned<ConfigDuration>>,
            total_timeout: Option<Spanned<ConfigDuration>>,
            sla_p95: Option<ConfigDuration>,
            retries: Option<u32>,
            backoff_base: Option<Spanned<ConfigDuration>>,
            backoff_max: Option<Spanned<ConfigDuration>>,
            max_retry_after: Option<ConfigDuration>,
            fallback_on: Option<Vec<Spanned<String>>>,
            fallback_statuses: Option<Vec<Spanned<u16>>>,
            hedge: Option<Spanned<String>>,
            spill_over: Option<bool>,
            allowed_domains: Option<Vec<String>>,
            final_fallbacks: Option<Vec<FinalFallback>>,
            on_interrupt: Option<crate::store::journal::OnInterrupt>,
            max_tokens: Option<Spanned<u32>>,
        }
    };
}

route_settings!(
    #[derive(Default)]
    struct RawRouteSettings {}
);
route_settings!(
    struct RawRoute {
        chain: Spanned<Vec<Spanned<String>>>,
        description: Option<String>,
    }
);

/// Circuit-breaker settings (see `routing::breaker` for the defaults' reasons).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerSettings {
    pub consecutive_failures: u32,
    pub failure_rate: f64,
    pub min_requests: u32,
    pub window: ConfigDuration,
    pub base_ejection: ConfigDuration,
    pub max_ejection: ConfigDuration,
    pub half_open_trials: u32,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            failure_rate: 0.5,
            min_requests: 10,
            window: ConfigDuration(Duration::from_secs(30)),
            base_ejection: ConfigDuration(Duration::from_secs(30)),
            max_ejection: ConfigDuration(Duration::from_secs(300)),
            half_open_trials: 1,
        }
    }
}

/// How provider health is judged and how swarms move between providers.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthSettings {
    /// A provider whose recent p95 latency is above this is Degraded.
    pub degraded_latency: ConfigDuration,
    /// A provider failing at least this share of its recent calls is
    /// Degraded (its breaker may still be closed).
    pub degraded_error_rate: f64,
    /// An active probe that takes longer than this has failed.
    pub probe_timeout: ConfigDuration,
    /// How long a recovered provider must stay up before workers fail back
    /// to it, and the least time between two switches of one worker.
    pub hold_down: ConfigDuration,
}

impl Default for HealthSettings {
    fn default() -> Self {
        Self {
            degraded_latency: ConfigDuration(Duration::from_secs(10)),
            degraded_error_rate: 0.25,
            probe_timeout: ConfigDuration(Duration::from_secs(5)),
            hold_down: ConfigDuration(Duration::from_secs(60)),
        }
    }
}

/// Retry-budget settings: extra attempts ≤ ratio × requests + min_per_second × seconds.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BudgetSettings {
    pub ratio: f64,
    pub min_per_second: u32,
    pub ttl: ConfigDuration,
}

impl Default for BudgetSettings {
    fn default() -> Self {
        Self {
            ratio: 0.2,
            min_per_second: 10,
            ttl: ConfigDuration(Duration::from_secs(10)),
        }
    }
}

/// The stale-if-error response cache.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheSettings {
    pub ttl: ConfigDuration,
    pub max_entries: usize,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            ttl: ConfigDuration(Duration::from_secs(24 * 3600)),
            max_entries: 10_000,
        }
    }
}

/// Price of a provider's tokens, in the currency of the user's choice.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Cost {
    pub per_1k_input: f64,
    pub per_1k_output: f64,
}

/// Active health probing of a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Probe {
    pub interval: Duration,
    pub kind: ProbeKind,
}

/// One provider: an endpoint, a model and what it can do.
#[derive(Debug, Clone, Serialize)]
pub struct Provider {
    pub id: ProviderId,
    pub kind: ProviderKind,
    pub model: Option<String>,
    pub base_url: Option<String>,
    /// The environment variable holding the API key (never the key itself).
    pub api_key_env: Option<String>,
    /// False when `api_key_env` names a variable that is not set, or a
    /// local provider's model file is missing: the provider is skipped.
    pub key_available: bool,
    /// The failure domain: providers sharing one fail together.
    pub domain: String,
    pub capabilities: Vec<Capability>,
    pub description: Option<String>,
    pub cost: Cost,
    /// Requests in flight at most; `None` is unlimited.
    pub max_concurrency: Option<u32>,
    /// Requests that may wait for a slot when `max_concurrency` are in
    /// flight; more are refused at once (and fail over). Default: as many
    /// as `max_concurrency`.
    pub max_queue: Option<u32>,
    /// The upstream's requests-per-minute limit, if known.
    pub rpm: Option<u32>,
    /// The upstream's tokens-per-minute limit, if known.
    pub tpm: Option<u32>,
    pub connect_timeout: Duration,
    pub probe: Probe,
    /// How Baton runs a `kind = "local"` provider's server.
    pub local: Option<LocalServerSpec>,
}

/// A local OpenAI-compatible model server Baton starts, supervises and
/// stops (`kind = "local"`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LocalServerSpec {
    /// Program and arguments; `{port}` and `{model_path}` are filled in.
    pub command: Vec<String>,
    /// The model file, resolved against the config file's directory.
    pub model_path: Option<PathBuf>,
    /// How long a start may take before the server answers `GET /v1/models`.
    pub ready_timeout: Duration,
    /// Restarts after unexpected exits, within [`LocalServerSpec::RESTART_WINDOW`],
    /// before Baton gives up on it.
    pub max_restarts: u32,
}

impl LocalServerSpec {
    pub const RESTART_WINDOW: Duration = Duration::from_secs(600);

    /// llama.cpp's server, when `command` is not given.
    pub fn default_command() -> Vec<String> {
        [
            "llama-server",
            "-m",
            "{model_path}",
            "--host",
            "127.0.0.1",
            "--port",
            "{port}",
        ]
        .map(str::to_owned)
        .to_vec()
    }
}

impl Provider {
    pub fn has(&self, capability: Capability) -> bool {
        self.capabilities.contains(&capability)
    }
}

/// Time limits of a route's requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Deadlines {
    /// Until the first token of one attempt.
    pub first_token: Duration,
    /// One attempt, start to end.
    pub attempt: Duration,
    /// The whole request: every attempt and back-off together.
    pub total: Duration,
}

/// An ordered fallback chain and how to walk it.
#[derive(Debug, Clone, Serialize)]
pub struct Route {
    pub name: RouteName,
    /// Providers in priority order (`route:NAME` entries already spliced in).
    pub chain: Vec<ProviderId>,
    pub description: Option<String>,
    pub deadlines: Deadlines,
    /// The latency target: a provider whose p95 exceeds it is spilled over.
    pub sla_p95: Option<Duration>,
    /// Retries on the same provider, after the first attempt.
    pub retries: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// The longest Retry-After that is waited out on the same provider.
    pub max_retry_after: Duration,
    pub fallback_on: Vec<Trigger>,
    /// HTTP statuses that fail over besides the triggers (e.g. 400, 404).
    pub fallback_statuses: Vec<u16>,
    pub hedge: Option<Hedge>,
    pub spill_over: bool,
    /// Failure domains requests of this route may reach; `None` is all.
    pub allowed_domains: Option<Vec<String>>,
    pub final_fallbacks: Vec<FinalFallback>,
    /// What start-up does with a request of this route a crash interrupted.
    pub on_interrupt: crate::store::journal::OnInterrupt,
    /// The most output tokens a request of this route may ask for; a
    /// request asking more (or not saying) is capped to it.
    pub max_tokens: Option<u32>,
}

/// A validated config.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// The file it came from ([`EMBEDDED_PATH`] for the built-in default).
    pub path: PathBuf,
    pub default_route: RouteName,
    pub providers: BTreeMap<ProviderId, Provider>,
    pub routes: BTreeMap<RouteName, Route>,
    pub breaker: BreakerSettings,
    pub budget: BudgetSettings,
    pub cache: CacheSettings,
    pub health: HealthSettings,
    /// `[store]`: durability and retention of the state store.
    pub store: crate::store::StoreSettings,
    /// `[alerts]`: the rules the alert engine evaluates and its webhook.
    pub alerts: AlertSettings,
    /// `[report]`: the availability objective `baton report` measures against.
    pub report: crate::telemetry::ReportSettings,
    /// What is worth knowing but not fatal (a provider skipped for want of a key).
    #[serde(skip)]
    pub warnings: Diagnostics,
}

impl Config {
    /// Finds the config as DESIGN.md says: the flag, `BATON_CONFIG`,
    /// `./baton.toml`, then the embedded default.
    pub fn discover(flag: Option<&Path>) -> Result<Config, ConfigError> {
        if let Some(path) = flag {
            return Self::load(path);
        }
        if let Some(path) = std::env::var_os("BATON_CONFIG").filter(|p| !p.is_empty()) {
            return Self::load(Path::new(&path));
        }
        let local = Path::new("baton.toml");
        if local.is_file() {
            return Self::load(local);
        }
        tracing::debug!("no baton.toml found; using the embedded default config");
        Self::parse(DEFAULT_CONFIG, Path::new(EMBEDDED_PATH))
    }

    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates config text; `path` is used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|error| {
            let mut diagnostic = Diagnostic::error(path, error.message().trim().to_owned());
            if let Some(span) = error.span() {
                let (line, column) = position(text, span.start);
                diagnostic = diagnostic.at(line, column);
            }
            let mut all = Diagnostics::new();
            all.push(diagnostic);
            ConfigError::Invalid(all)
        })?;
        validate(raw, text, path)
    }

    pub fn route(&self, name: &str) -> Option<&Route> {
        self.routes.get(&RouteName(name.to_owned()))
    }

    pub fn provider(&self, id: &ProviderId) -> Option<&Provider> {
        self.providers.get(id)
    }

    pub fn route_names(&self) -> Vec<&str> {
        self.routes.keys().map(|r| r.0.as_str()).collect()
    }
}

/// Retries per provider beyond this only burn the budget.
pub const MAX_RETRIES: u32 = 10;

/// Validation with every error located by its TOML span.
struct Checker<'a> {
    text: &'a str,
    path: &'a Path,
    diagnostics: Diagnostics,
}

impl Checker<'_> {
    fn error(&mut self, span: std::ops::Range<usize>, field: &str, message: impl Into<String>) {
        let (line, column) = position(self.text, span.start);
        let diagnostic = Diagnostic::error(self.path, message)
            .at(line, column)
            .field(field);
        // Included routes are walked once per including route; say each
        // finding once.
        if !self.diagnostics.iter().any(|d| *d == diagnostic) {
            self.diagnostics.push(diagnostic);
        }
    }

    fn warning(&mut self, span: std::ops::Range<usize>, field: &str, message: impl Into<String>) {
        let (line, column) = position(self.text, span.start);
        self.diagnostics.push(
            Diagnostic::warning(self.path, message)
                .at(line, column)
                .field(field),
        );
    }

    fn positive(&mut self, value: &Option<Spanned<ConfigDuration>>, field: &str, owner: &str) {
        if let Some(v) = value
            && v.get_ref().0.is_zero()
        {
            self.error(
                v.span(),
                field,
                format!("{owner}: expected a duration above zero"),
            );
        }
    }
}

fn validate(raw: RawConfig, text: &str, path: &Path) -> Result<Config, ConfigError> {
    let mut check = Checker {
        text,
        path,
        diagnostics: Diagnostics::new(),
    };
    // A local provider's model path is relative to the config file (the
    // embedded default has none).
    let base_dir = path.parent().unwrap_or(Path::new("."));
    let providers = validate_providers(raw.providers, base_dir, &mut check);
    let routes = validate_routes(&raw.routes, &raw.defaults, &providers, &mut check);
    let alerts = alerts::validate(raw.alerts, &providers, &routes, &mut check);

    let default_route = RouteName(raw.default_route.get_ref().clone());
    if !routes.contains_key(&default_route) {
        check.error(
            raw.default_route.span(),
            "default_route",
            format!(
                "no route `{}` in [routes] (defined: {})",
                default_route,
                list_or_none(routes.keys().map(|r| r.0.as_str()))
            ),
        );
    }
    if raw.breaker.failure_rate <= 0.0 || raw.breaker.failure_rate > 1.0 {
        check.diagnostics.push(
            Diagnostic::error(
                path,
                "[breaker] failure_rate: expected a fraction in (0, 1]",
            )
            .field("failure_rate"),
        );
    }
    if raw.breaker.max_ejection < raw.breaker.base_ejection {
        check.diagnostics.push(
            Diagnostic::error(
                path,
                "[breaker] max_ejection: expected at least base_ejection",
            )
            .field("max_ejection"),
        );
    }
    if !(0.0..=1.0).contains(&raw.health.degraded_error_rate) {
        check.diagnostics.push(
            Diagnostic::error(
                path,
                "[health] degraded_error_rate: expected a fraction in [0, 1]",
            )
            .field("degraded_error_rate"),
        );
    }
    if !(raw.report.slo > 0.0 && raw.report.slo < 1.0) {
        check.diagnostics.push(
            Diagnostic::error(
                path,
                format!(
                    "[report] slo: expected the share of requests that must be answered, above 0 and below 1 (such as 0.99), found {}",
                    raw.report.slo
                ),
            )
            .field("slo"),
        );
    }
    if raw.budget.ratio < 0.0 {
        check
            .diagnostics
            .push(Diagnostic::error(path, "[budget] ratio: expected zero or more").field("ratio"));
    }

    if check.diagnostics.has_errors() {
        check.diagnostics.sort();
        return Err(ConfigError::Invalid(check.diagnostics));
    }
    Ok(Config {
        path: path.to_owned(),
        default_route,
        providers,
        routes,
        breaker: raw.breaker,
        budget: raw.budget,
        cache: raw.cache,
        health: raw.health,
        store: raw.store,
        alerts,
        report: raw.report,
        warnings: check.diagnostics,
    })
}

fn validate_providers(
    raw: BTreeMap<Spanned<String>, RawProvider>,
    base_dir: &Path,
    check: &mut Checker<'_>,
) -> BTreeMap<ProviderId, Provider> {
    let mut providers = BTreeMap::new();
    for (spanned_name, provider) in raw {
        let name_span = spanned_name.span();
        let name = spanned_name.into_inner();
        let mut capabilities = Vec::new();
        for capability in &provider.capabilities {
            match Capability::parse(capability.get_ref()) {
                Some(c) => capabilities.push(c),
                None => check.error(
                    capability.span(),
                    "capabilities",
                    format!(
                        "provider `{name}`: expected one of {}, found `{}`",
                        Capability::ALL.map(|c| c.as_str()).join(", "),
                        capability.get_ref()
                    ),
                ),
            }
        }
        let mut key_available = true;
        if let Some(env) = &provider.api_key_env {
            if !is_env_var_name(env.get_ref()) {
                // Catches a key pasted where its variable's name belongs,
                // without echoing the value back: it may be a secret.
                check.error(
                    env.span(),
                    "api_key_env",
                    format!("provider `{name}`: expected the name of an environment variable (letters, digits, `_`), not a key"),
                );
            } else if crate::secret::Secret::from_env(env.get_ref()).is_none() {
                key_available = false;
                check.warning(
                    env.span(),
                    "api_key_env",
                    format!(
                        "provider `{name}`: environment variable {} is not set; the provider is skipped",
                        env.get_ref()
                    ),
                );
            }
        }
        if let Some(url) = &provider.base_url
            && !(url.get_ref().starts_with("http://") || url.get_ref().starts_with("https://"))
        {
            check.error(
                url.span(),
                "base_url",
                format!(
                    "provider `{name}`: expected an http:// or https:// URL, found `{}`",
                    url.get_ref()
                ),
            );
        }
        let remote = matches!(
            provider.kind,
            ProviderKind::Openai | ProviderKind::Anthropic
        );
        if remote && provider.model.is_none() {
            check.error(
                name_span.clone(),
                "model",
                format!("provider `{name}`: a remote provider needs `model`"),
            );
        }
        if remote && provider.base_url.is_none() {
            check.error(
                name_span.clone(),
                "base_url",
                format!("provider `{name}`: a remote provider needs `base_url`"),
            );
        }
        for (cost, field) in [
            (&provider.cost_per_1k_input, "cost_per_1k_input"),
            (&provider.cost_per_1k_output, "cost_per_1k_output"),
        ] {
            if let Some(cost) = cost
                && (*cost.get_ref() < 0.0 || !cost.get_ref().is_finite())
            {
                check.error(
                    cost.span(),
                    field,
                    format!("provider `{name}`: expected a cost of zero or more"),
                );
            }
        }
        if let Some(max) = &provider.max_concurrency
            && *max.get_ref() == 0
        {
            check.error(
                max.span(),
                "max_concurrency",
                format!("provider `{name}`: expected at least 1"),
            );
        }
        check.positive(
            &provider.connect_timeout,
            "connect_timeout",
            &format!("provider `{name}`"),
        );
        let local = local_server(&name, &provider, base_dir, &mut key_available, check);
        let id = ProviderId(name.clone());
        providers.insert(
            id.clone(),
            Provider {
                id,
                kind: provider.kind,
                model: provider.model,
                base_url: provider.base_url.map(Spanned::into_inner),
                api_key_env: provider.api_key_env.map(Spanned::into_inner),
                key_available,
                domain: provider.domain.unwrap_or(name),
                capabilities,
                description: provider.description,
                cost: Cost {
                    per_1k_input: provider.cost_per_1k_input.map_or(0.0, Spanned::into_inner),
                    per_1k_output: provider.cost_per_1k_output.map_or(0.0, Spanned::into_inner),
                },
                max_concurrency: provider.max_concurrency.map(Spanned::into_inner),
                max_queue: provider.max_queue,
                rpm: provider.rpm,
                tpm: provider.tpm,
                connect_timeout: provider
                    .connect_timeout
                    .map_or(Duration::from_secs(2), |d| d.into_inner().0),
                probe: Probe {
                    interval: provider
                        .probe
                        .interval
                        .map_or(Duration::from_secs(15), |d| d.0),
                    kind: provider.probe.kind,
                },
                local,
            },
        );
    }
    providers
}

/// The local server settings of a `kind = "local"` provider; the local-only
/// fields are errors on any other kind. A missing model file makes the
/// provider unavailable (a warning), as a missing key does.
fn local_server(
    name: &str,
    provider: &RawProvider,
    base_dir: &Path,
    available: &mut bool,
    check: &mut Checker<'_>,
) -> Option<LocalServerSpec> {
    if provider.kind != ProviderKind::Local {
        let foreign = [
            ("command", provider.command.as_ref().map(Spanned::span)),
            (
                "model_path",
                provider.model_path.as_ref().map(Spanned::span),
            ),
            (
                "ready_timeout",
                provider.ready_timeout.as_ref().map(Spanned::span),
            ),
        ];
        for (field, span) in foreign {
            if let Some(span) = span {
                check.error(
                    span,
                    field,
                    format!("provider `{name}`: only a `kind = \"local\"` provider has `{field}`"),
                );
            }
        }
        return None;
    }
    let command = match &provider.command {
        Some(command) if command.get_ref().is_empty() => {
            check.error(
                command.span(),
                "command",
                format!(
                    "provider `{name}`: expected a program and its arguments, found an empty list"
                ),
            );
            return None;
        }
        Some(command) => command.get_ref().clone(),
        None => LocalServerSpec::default_command(),
    };
    if !command.iter().any(|arg| arg.contains("{port}")) {
        let span = provider.command.as_ref().map(Spanned::span).unwrap_or(0..0);
        check.error(
            span,
            "command",
            format!(
                "provider `{name}`: the command must take the port Baton gives it as `{{port}}`"
            ),
        );
    }
    let model_path = provider.model_path.as_ref().map(|path| {
        let resolved = base_dir.join(path.get_ref());
        if !resolved.is_file() {
            *available = false;
            check.warning(
                path.span(),
                "model_path",
                format!(
                    "provider `{name}`: no model file at {}; the provider is skipped",
                    resolved.display()
                ),
            );
        }
        resolved
    });
    if model_path.is_none() && command.iter().any(|arg| arg.contains("{model_path}")) {
        let span = provider.command.as_ref().map(Spanned::span).unwrap_or(0..0);
        check.error(
            span,
            "model_path",
            format!(
                "provider `{name}`: the command uses `{{model_path}}`, so `model_path` is needed"
            ),
        );
    }
    check.positive(
        &provider.ready_timeout,
        "ready_timeout",
        &format!("provider `{name}`"),
    );
    Some(LocalServerSpec {
        command,
        model_path,
        ready_timeout: provider
            .ready_timeout
            .as_ref()
            .map_or(Duration::from_secs(60), |d| d.get_ref().0),
        max_restarts: provider.max_restarts.unwrap_or(5),
    })
}

/// Splices `route:NAME` entries into a flat provider list, reporting cycles.
fn flatten_chain(
    name: &str,
    raw: &BTreeMap<Spanned<String>, RawRoute>,
    stack: &mut Vec<String>,
    check: &mut Checker<'_>,
    out: &mut Vec<(ProviderId, std::ops::Range<usize>)>,
) {
    let Some(route) = raw
        .iter()
        .find(|(k, _)| k.get_ref() == name)
        .map(|(_, r)| r)
    else {
        return;
    };
    stack.push(name.to_owned());
    for entry in route.chain.get_ref() {
        match entry.get_ref().strip_prefix("route:") {
            Some(inner) => {
                if stack.iter().any(|s| s == inner) {
                    let mut cycle = stack.clone();
                    cycle.push(inner.to_owned());
                    check.error(
                        entry.span(),
                        "chain",
                        format!(
                            "route `{name}`: routes include each other in a cycle: {}",
                            cycle.join(" -> ")
                        ),
                    );
                } else if !raw.keys().any(|k| k.get_ref() == inner) {
                    check.error(
                        entry.span(),
                        "chain",
                        format!("route `{name}`: no route `{inner}` to include"),
                    );
                } else {
                    flatten_chain(inner, raw, stack, check, out);
                }
            }
            None => out.push((ProviderId(entry.get_ref().clone()), entry.span())),
        }
    }
    stack.pop();
}

fn validate_routes(
    raw: &BTreeMap<Spanned<String>, RawRoute>,
    defaults: &RawRouteSettings,
    providers: &BTreeMap<ProviderId, Provider>,
    check: &mut Checker<'_>,
) -> BTreeMap<RouteName, Route> {
    let mut routes = BTreeMap::new();
    for (name_spanned, route) in raw {
        let name = name_spanned.get_ref().clone();
        let owner = format!("route `{name}`");
        let mut entries = Vec::new();
        flatten_chain(&name, raw, &mut Vec::new(), check, &mut entries);
        let mut chain: Vec<ProviderId> = Vec::new();
        for (id, span) in entries {
            if !providers.contains_key(&id) {
                if route.chain.get_ref().iter().any(|e| e.span() == span) {
                    check.error(
                        span,
                        "chain",
                        format!(
                            "{owner}: no provider `{id}` in [providers] (defined: {})",
                            list_or_none(providers.keys().map(|p| p.0.as_str()))
                        ),
                    );
                }
                continue;
            }
            if !chain.contains(&id) {
                chain.push(id);
            }
        }
        if route.chain.get_ref().is_empty() {
            check.error(
                route.chain.span(),
                "chain",
                format!("{owner}: expected at least one provider in the chain"),
            );
        }

        macro_rules! pick {
            ($field:ident) => {
                route.$field.clone().or_else(|| defaults.$field.clone())
            };
        }
        for (value, field) in [
            (pick!(first_token_timeout), "first_token_timeout"),
            (pick!(attempt_timeout), "attempt_timeout"),
            (pick!(total_timeout), "total_timeout"),
            (pick!(backoff_base), "backoff_base"),
            (pick!(backoff_max), "backoff_max"),
        ] {
            check.positive(&value, field, &owner);
        }
        let duration = |v: Option<Spanned<ConfigDuration>>, default: Duration| {
            v.map_or(default, |d| d.into_inner().0)
        };
        let deadlines = Deadlines {
            first_token: duration(pick!(first_token_timeout), Duration::from_secs(10)),
            attempt: duration(pick!(attempt_timeout), Duration::from_secs(60)),
            total: duration(pick!(total_timeout), Duration::from_secs(120)),
        };
        if deadlines.attempt < deadlines.first_token {
            let span = pick!(attempt_timeout).map_or(route.chain.span(), |s| s.span());
            check.error(
                span,
                "attempt_timeout",
                format!(
                    "{owner}: expected an attempt timeout no shorter than the first-token timeout"
                ),
            );
        }
        if let Some(retries) = pick!(retries)
            && retries > MAX_RETRIES
        {
            check.error(
                route.chain.span(),
                "retries",
                format!(
                    "{owner}: expected at most {MAX_RETRIES} retries per provider, found {retries}"
                ),
            );
        }
        if deadlines.total < deadlines.first_token {
            let span = pick!(total_timeout).map_or(route.chain.span(), |s| s.span());
            check.error(
                span,
                "total_timeout",
                format!(
                    "{owner}: expected a total timeout no shorter than the first-token timeout"
                ),
            );
        }
        let backoff_base = duration(pick!(backoff_base), Duration::from_millis(100));
        let backoff_max = duration(pick!(backoff_max), Duration::from_secs(2));
        if backoff_max < backoff_base {
            let span = pick!(backoff_max).map_or(route.chain.span(), |s| s.span());
            check.error(
                span,
                "backoff_max",
                format!("{owner}: expected backoff_max at least backoff_base"),
            );
        }
        let mut fallback_on = Vec::new();
        match pick!(fallback_on) {
            None => fallback_on.extend(Trigger::ALL),
            Some(labels) => {
                for label in labels {
                    match Trigger::parse(label.get_ref()) {
                        Some(t) => fallback_on.push(t),
                        None => check.error(
                            label.span(),
                            "fallback_on",
                            format!(
                                "{owner}: expected one of {}, found `{}`",
                                Trigger::ALL.map(|t| t.label()).join(", "),
                                label.get_ref()
                            ),
                        ),
                    }
                }
            }
        }
        let mut fallback_statuses = Vec::new();
        for status in pick!(fallback_statuses).unwrap_or_default() {
            if !(400..600).contains(status.get_ref()) {
                check.error(
                    status.span(),
                    "fallback_statuses",
                    format!("{owner}: expected an HTTP error status (400–599)"),
                );
            }
            fallback_statuses.push(*status.get_ref());
        }
        let hedge = pick!(hedge).and_then(|h| match parse_hedge(h.get_ref()) {
            Ok(Hedge::After(delay)) if delay.is_zero() => {
                check.error(h.span(), "hedge", format!("{owner}: a hedge after 0 ms doubles every request; expected a delay above zero"));
                None
            }
            Ok(hedge) => Some(hedge),
            Err(message) => {
                check.error(h.span(), "hedge", format!("{owner}: {message}"));
                None
            }
        });
        let allowed_domains = pick!(allowed_domains);
        let max_tokens = pick!(max_tokens).and_then(|cap| {
            if *cap.get_ref() == 0 {
                check.error(
                    cap.span(),
                    "max_tokens",
                    format!("{owner}: expected a positive number of tokens"),
                );
                None
            } else {
                Some(*cap.get_ref())
            }
        });
        let mut final_fallbacks = pick!(final_fallbacks).unwrap_or_else(|| {
            vec![
                FinalFallback::Cache,
                FinalFallback::Local,
                FinalFallback::Extractive,
            ]
        });
        for (i, fallback) in final_fallbacks.iter().enumerate() {
            if final_fallbacks[..i].contains(fallback) {
                check.error(
                    route.chain.span(),
                    "final_fallbacks",
                    format!("{owner}: each final fallback may be listed once"),
                );
                break;
            }
        }
        // An `extractive` provider in a chain is served as the extractive
        // final fallback (it answers from the requesting swarm's knowledge).
        let chain_has_extractive = chain.iter().any(|id| {
            providers
                .get(id)
                .is_some_and(|p| p.kind == ProviderKind::Extractive)
        });
        if chain_has_extractive && !final_fallbacks.contains(&FinalFallback::Extractive) {
            final_fallbacks.push(FinalFallback::Extractive);
        }

        let usable = chain.iter().any(|id| {
            providers.get(id).is_some_and(|p| {
                matches!(p.kind, ProviderKind::Openai | ProviderKind::Anthropic)
                    && p.key_available
                    && allowed_domains
                        .as_ref()
                        .is_none_or(|domains| domains.contains(&p.domain))
            })
        });
        if !usable && final_fallbacks.is_empty() && !chain.is_empty() {
            check.error(
                route.chain.span(),
                "chain",
                format!("{owner}: no usable provider (keys missing or domains not allowed) and no final fallback"),
            );
        }

        routes.insert(
            RouteName(name.clone()),
            Route {
                name: RouteName(name),
                chain,
                description: route.description.clone(),
                deadlines,
                sla_p95: pick!(sla_p95).map(|d| d.0),
                retries: pick!(retries).unwrap_or(1),
                backoff_base,
                backoff_max,
                max_retry_after: pick!(max_retry_after).map_or(Duration::from_secs(2), |d| d.0),
                fallback_on,
                fallback_statuses,
                hedge,
                spill_over: pick!(spill_over).unwrap_or(true),
                allowed_domains,
                final_fallbacks,
                on_interrupt: pick!(on_interrupt).unwrap_or_default(),
                max_tokens,
            },
        );
    }
    routes
}

/// `"p95"` (a latency percentile) or a duration such as `"800ms"`.
fn parse_hedge(text: &str) -> Result<Hedge, String> {
    if let Some(p) = text.strip_prefix('p') {
        return p
            .parse::<f64>()
            .ok()
            .filter(|p| *p > 0.0 && *p < 100.0)
            .map(Hedge::Percentile)
            .ok_or_else(|| format!("expected a percentile such as \"p95\" or a duration such as \"800ms\", found \"{text}\""));
    }
    duration::parse_duration(text).map(Hedge::After)
}

fn is_env_var_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `a, b, c`, or `none` for an empty list.
pub(crate) fn list_or_none<'a>(items: impl Iterator<Item = &'a str>) -> String {
    let list: Vec<&str> = items.collect();
    if list.is_empty() {
        "none".into()
    } else {
        list.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<String> {
        match Config::parse(text, Path::new("baton.toml")) {
            Ok(_) => panic!("expected errors"),
            Err(ConfigError::Invalid(d)) => d.iter().map(ToString::to_string).collect(),
            Err(other) => panic!("{other}"),
        }
    }

    #[test]
    fn shipped_config_is_valid_and_defines_claude_code_model_routes() {
        let config = Config::parse(DEFAULT_CONFIG, Path::new(EMBEDDED_PATH)).unwrap();
        for name in ["sonnet", "opus", "haiku"] {
            assert!(config.route(name).is_some(), "route {name}");
        }
        assert!(config.route(&config.default_route.0).is_some());
    }

    #[test]
    fn unknown_provider_in_chain_names_line_and_column() {
        let text = "default_route = \"a\"\n[providers.p]\nkind = \"extractive\"\n[routes.a]\nchain = [\"p\", \"nope\"]\n";
        let errors = errors(text);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with(
                "baton.toml:5:15: error: field `chain`: route `a`: no provider `nope`"
            ),
            "{}",
            errors[0]
        );
    }

    #[test]
    fn unknown_key_is_an_error_with_its_position() {
        let text = "default_route = \"a\"\n[providers.p]\nkind = \"extractive\"\ncolour = 1\n";
        let errors = errors(text);
        assert!(
            errors[0].starts_with("baton.toml:4:1: error:"),
            "{}",
            errors[0]
        );
        assert!(errors[0].contains("colour"), "{}", errors[0]);
    }

    #[test]
    fn missing_default_route_and_bad_capability_are_reported_together() {
        let text = "default_route = \"main\"\n[providers.p]\nkind = \"extractive\"\ncapabilities = [\"telepathy\"]\n[routes.a]\nchain = [\"p\"]\n";
        let errors = errors(text);
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors.iter().any(|e| e.contains("found `telepathy`")));
        assert!(errors.iter().any(|e| e.contains("no route `main`")));
    }

    #[test]
    fn empty_chain_negative_timeout_and_bare_number_are_errors_with_lines() {
        let text =
            "default_route = \"a\"\n[providers.p]\nkind = \"extractive\"\n[routes.a]\nchain = []\n";
        let found = errors(text);
        assert!(
            found[0].starts_with(
                "baton.toml:5:9: error: field `chain`: route `a`: expected at least one provider"
            ),
            "{found:?}"
        );

        let text = "default_route = \"a\"\n[providers.p]\nkind = \"extractive\"\n[routes.a]\nchain = [\"p\"]\ntotal_timeout = \"-5s\"\n";
        let found = errors(text);
        assert!(found[0].starts_with("baton.toml:6:17: error:"), "{found:?}");
        assert!(
            found[0].contains("expected a positive duration, found \"-5s\""),
            "{found:?}"
        );

        let text = "default_route = \"a\"\n[defaults]\nfirst_token_timeout = 5\n";
        let found = errors(text);
        assert!(found[0].starts_with("baton.toml:3:23: error:"), "{found:?}");
        assert!(found[0].contains("found the bare number 5"), "{found:?}");
    }

    #[test]
    fn routes_including_each_other_in_a_cycle_are_an_error() {
        let text = "default_route = \"a\"\n[providers.p]\nkind = \"extractive\"\n[routes.a]\nchain = [\"p\", \"route:b\"]\n[routes.b]\nchain = [\"route:a\"]\n";
        let errors = errors(text);
        assert!(
            errors.iter().any(|e| e.starts_with("baton.toml:5:15: error: field `chain`: route `a`: routes include each other in a cycle: b -> a -> b")),
            "{errors:?}"
        );
    }

    #[test]
    fn included_routes_are_spliced_in_order_without_duplicates() {
        let text = "default_route = \"a\"\n[providers.p]\nkind = \"extractive\"\n[providers.q]\nkind = \"extractive\"\n[routes.a]\nchain = [\"q\", \"route:b\"]\n[routes.b]\nchain = [\"p\", \"q\"]\n";
        let config = Config::parse(text, Path::new("baton.toml")).unwrap();
        let chain: Vec<&str> = config
            .route("a")
            .unwrap()
            .chain
            .iter()
            .map(|p| p.0.as_str())
            .collect();
        assert_eq!(chain, ["q", "p"]);
    }

    #[test]
    fn missing_key_skips_with_a_warning_and_fails_a_route_left_with_nothing() {
        let provider = "[providers.p]\nkind = \"openai\"\nmodel = \"m\"\nbase_url = \"http://127.0.0.1:1/v1\"\napi_key_env = \"BATON_TEST_UNSET_KEY_81723\"\n";
        let warned = format!("default_route = \"a\"\n{provider}[routes.a]\nchain = [\"p\"]\n");
        let config = Config::parse(&warned, Path::new("baton.toml")).unwrap();
        let warning = config.warnings.iter().next().unwrap().to_string();
        assert!(warning.starts_with("baton.toml:6:15: warning: field `api_key_env`: provider `p`: environment variable BATON_TEST_UNSET_KEY_81723 is not set"), "{warning}");
        assert!(
            !config
                .provider(&ProviderId("p".into()))
                .unwrap()
                .key_available
        );

        let stranded = format!(
            "default_route = \"a\"\n{provider}[routes.a]\nchain = [\"p\"]\nfinal_fallbacks = []\n"
        );
        let errors = errors(&stranded);
        assert!(errors.iter().any(|e| e.contains("route `a`: no usable provider (keys missing or domains not allowed) and no final fallback")), "{errors:?}");
    }

    #[test]
    fn route_settings_come_from_defaults_unless_the_route_overrides() {
        let text = "default_route = \"a\"\n[defaults]\nfirst_token_timeout = \"3s\"\nretries = 2\nhedge = \"p95\"\n[providers.p]\nkind = \"extractive\"\n[routes.a]\nchain = [\"p\"]\nretries = 0\nallowed_domains = [\"p\"]\n";
        let config = Config::parse(text, Path::new("baton.toml")).unwrap();
        let route = config.route("a").unwrap();
        assert_eq!(route.deadlines.first_token, Duration::from_secs(3));
        assert_eq!(route.retries, 0);
        assert_eq!(route.hedge, Some(Hedge::Percentile(95.0)));
        assert_eq!(
            route.allowed_domains.as_deref(),
            Some(&["p".to_owned()][..])
        );
        assert_eq!(
            route.final_fallbacks,
            [
                FinalFallback::Cache,
                FinalFallback::Local,
                FinalFallback::Extractive
            ]
        );
    }

    #[test]
    fn a_remote_provider_without_model_is_reported_at_its_table() {
        let text = "default_route = \"a\"\n[providers.gpt]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:1/v1\"\n[routes.a]\nchain = [\"gpt\"]\n";
        let found = errors(text);
        assert!(found[0].starts_with("baton.toml:2:12: error: field `model`: provider `gpt`: a remote provider needs `model`"), "{found:?}");
    }

    #[test]
    fn nonsense_route_settings_are_errors() {
        let base = "default_route = \"a\"\n[providers.p]\nkind = \"extractive\"\n[routes.a]\nchain = [\"p\"]\n";
        for (extra, needle) in [
            (
                "attempt_timeout = \"1s\"\nfirst_token_timeout = \"5s\"\n",
                "attempt timeout no shorter than the first-token timeout",
            ),
            ("retries = 255\n", "at most 10 retries"),
            ("hedge = \"0ms\"\n", "doubles every request"),
            ("final_fallbacks = [\"cache\", \"cache\"]\n", "listed once"),
        ] {
            let found = errors(&format!("{base}{extra}"));
            assert!(
                found.iter().any(|e| e.contains(needle)),
                "{extra}: {found:?}"
            );
        }
    }

    #[test]
    fn an_extractive_provider_in_a_chain_becomes_the_extractive_fallback() {
        let text = "default_route = \"a\"\n[providers.kb]\nkind = \"extractive\"\n[routes.a]\nchain = [\"kb\"]\nfinal_fallbacks = []\n";
        let config = Config::parse(text, Path::new("baton.toml")).unwrap();
        assert_eq!(
            config.route("a").unwrap().final_fallbacks,
            [FinalFallback::Extractive]
        );
    }

    #[test]
    fn a_pasted_key_is_rejected_without_echoing_it() {
        let text = "default_route = \"a\"\n[providers.p]\nkind = \"openai\"\nmodel = \"m\"\nbase_url = \"http://127.0.0.1:1\"\napi_key_env = \"sk-secret-value\"\n[routes.a]\nchain = [\"p\"]\n";
        let errors = errors(text);
        assert!(errors[0].contains("api_key_env"));
        assert!(!errors[0].contains("sk-secret-value"));
    }
}
