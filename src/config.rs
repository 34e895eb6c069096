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

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::diagnostic::{Diagnostic, Diagnostics, position};
use crate::swarm::{Capability, RouteName};

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
    #[error("cannot read config {path}: {source}")]
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    default_route: Spanned<String>,
    #[serde(default)]
    providers: BTreeMap<String, RawProvider>,
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
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    chain: Spanned<Vec<Spanned<String>>>,
    description: Option<String>,
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
    /// The failure domain: providers sharing one fail together.
    pub domain: String,
    pub capabilities: Vec<Capability>,
    pub description: Option<String>,
}

/// An ordered fallback chain.
#[derive(Debug, Clone, Serialize)]
pub struct Route {
    pub name: RouteName,
    pub chain: Vec<ProviderId>,
    pub description: Option<String>,
}

/// A validated config.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// The file it came from ([`EMBEDDED_PATH`] for the built-in default).
    pub path: PathBuf,
    pub default_route: RouteName,
    pub providers: BTreeMap<ProviderId, Provider>,
    pub routes: BTreeMap<RouteName, Route>,
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

    pub fn route_names(&self) -> Vec<&str> {
        self.routes.keys().map(|r| r.0.as_str()).collect()
    }
}

fn validate(raw: RawConfig, text: &str, path: &Path) -> Result<Config, ConfigError> {
    let mut diagnostics = Diagnostics::new();
    let at = |span: std::ops::Range<usize>, field: &str, message: String| {
        let (line, column) = position(text, span.start);
        Diagnostic::error(path, message)
            .at(line, column)
            .field(field)
    };

    let mut providers = BTreeMap::new();
    for (name, provider) in raw.providers {
        let mut capabilities = Vec::new();
        for capability in &provider.capabilities {
            match Capability::parse(capability.get_ref()) {
                Some(c) => capabilities.push(c),
                None => diagnostics.push(at(
                    capability.span(),
                    "capabilities",
                    format!(
                        "provider `{name}`: expected one of {}, found `{}`",
                        Capability::ALL.map(|c| c.as_str()).join(", "),
                        capability.get_ref()
                    ),
                )),
            }
        }
        if let Some(env) = &provider.api_key_env
            && !is_env_var_name(env.get_ref())
        {
            // Catches a key pasted where its variable's name belongs, without
            // echoing the value back: it may be a secret.
            diagnostics.push(at(
                env.span(),
                "api_key_env",
                format!("provider `{name}`: expected the name of an environment variable (letters, digits, `_`), not a key"),
            ));
        }
        if let Some(url) = &provider.base_url
            && !(url.get_ref().starts_with("http://") || url.get_ref().starts_with("https://"))
        {
            diagnostics.push(at(
                url.span(),
                "base_url",
                format!(
                    "provider `{name}`: expected an http:// or https:// URL, found `{}`",
                    url.get_ref()
                ),
            ));
        }
        let needs_model = matches!(
            provider.kind,
            ProviderKind::Openai | ProviderKind::Anthropic
        );
        if needs_model && provider.model.is_none() {
            diagnostics.push(
                Diagnostic::error(
                    path,
                    format!("provider `{name}`: a remote provider needs `model`"),
                )
                .field("model"),
            );
        }
        let id = ProviderId(name.clone());
        providers.insert(
            id.clone(),
            Provider {
                id,
                kind: provider.kind,
                model: provider.model,
                base_url: provider.base_url.map(Spanned::into_inner),
                api_key_env: provider.api_key_env.map(Spanned::into_inner),
                domain: provider.domain.unwrap_or(name),
                capabilities,
                description: provider.description,
            },
        );
    }

    let mut routes = BTreeMap::new();
    for (name, route) in raw.routes {
        let chain_span = route.chain.span();
        let mut chain = Vec::new();
        for entry in route.chain.into_inner() {
            let id = ProviderId(entry.get_ref().clone());
            if !providers.contains_key(&id) {
                diagnostics.push(at(
                    entry.span(),
                    "chain",
                    format!(
                        "route `{}`: no provider `{}` in [providers] (defined: {})",
                        name.get_ref(),
                        entry.get_ref(),
                        list_or_none(providers.keys().map(|p| p.0.as_str()))
                    ),
                ));
            }
            chain.push(id);
        }
        if chain.is_empty() {
            diagnostics.push(at(
                chain_span,
                "chain",
                format!(
                    "route `{}`: expected at least one provider in the chain",
                    name.get_ref()
                ),
            ));
        }
        let route_name = RouteName(name.into_inner());
        routes.insert(
            route_name.clone(),
            Route {
                name: route_name,
                chain,
                description: route.description,
            },
        );
    }

    let default_route = RouteName(raw.default_route.get_ref().clone());
    if !routes.contains_key(&default_route) {
        diagnostics.push(at(
            raw.default_route.span(),
            "default_route",
            format!(
                "no route `{}` in [routes] (defined: {})",
                default_route,
                list_or_none(routes.keys().map(|r| r.0.as_str()))
            ),
        ));
    }

    if diagnostics.has_errors() {
        return Err(ConfigError::Invalid(diagnostics));
    }
    Ok(Config {
        path: path.to_owned(),
        default_route,
        providers,
        routes,
    })
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
    fn a_pasted_key_is_rejected_without_echoing_it() {
        let text = "default_route = \"a\"\n[providers.p]\nkind = \"openai\"\nmodel = \"m\"\napi_key_env = \"sk-secret-value\"\n[routes.a]\nchain = [\"p\"]\n";
        let errors = errors(text);
        assert!(errors[0].contains("api_key_env"));
        assert!(!errors[0].contains("sk-secret-value"));
    }
}
