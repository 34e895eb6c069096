//! Alerts: the rules of `[alerts]` in baton.toml (see
//! [`crate::config::alerts`]) watched over a running process, each bad
//! spell told once when it starts and once when it ends.
//!
//! # Episodes
//!
//! A rule applies to subjects: providers for `provider_down`, routes for
//! `sla_attainment` and `burn_rate`. Per (rule, subject) the engine keeps
//! one state machine with two states, *clear* and *firing*. Going bad
//! while clear opens an episode and sends one `firing` notification;
//! staying bad sends nothing; going good while firing closes it and sends
//! one `resolved` notification carrying the episode's duration. A rule
//! firing for several subjects runs one episode per subject.
//!
//! Open episodes are written to the store (`meta`, key
//! `alert/<rule>/<subject>`, see [`crate::store::alerts`]) before their
//! notification leaves, so a process restarted during an outage finds the
//! episode open: it does not fire again, and the recovery still resolves.
//! The price of writing first is that a crash between the write and the
//! webhook loses that one notification rather than sending it twice. An
//! episode whose rule was removed or no longer covers its subject (the
//! config changed) is resolved at start-up or reload, so no receiver is
//! left with an alert that can never clear.
//!
//! # Inputs
//!
//! - Provider health, pushed: [`AlertEngine::on_health`] (the actor
//!   system's health changes, through [`AlertHandle::on_change`]). Down is
//!   bad; Degraded and Healthy are not. A process should feed each
//!   provider's state once at start-up so that an episode opened before a
//!   restart is resolved if the provider recovered meanwhile.
//! - The request journal, pulled on every `evaluate_every` tick through
//!   [`window::Window`]: per route, the requests that *finished* within the
//!   rule's window. SLA attainment is the share of them that completed
//!   within the route's `sla_p95` (a failed request did not); the burn rate
//!   is the failed share divided by the error budget `1 - slo`. A window
//!   with fewer than `min_requests` finished requests is no evidence either
//!   way: it neither fires nor resolves, so thin traffic does not flap an
//!   alert. Journal records without a route are not counted.
//!
//! # Delivery
//!
//! Every notification is a log line (`warn` when firing, `info` when
//! resolved) and, with a webhook configured, a JSON POST made by one
//! delivery task in order (a resolve never overtakes its fire), with a
//! bounded timeout and a few jittered retries; the engine only queues it
//! and never waits on the network. Logs and errors name the webhook by its
//! origin only: its path or query may hold a token. The body:
//!
//! ```json
//! {"alert": "support-sla", "kind": "sla_attainment", "status": "resolved",
//!  "subject": "support", "started_at": "2025-03-01T09:30:00.250Z",
//!  "resolved_at": "2025-03-01T09:41:10.000Z", "duration_ms": 669750,
//!  "value": 0.97, "threshold": 0.95, "summary": "..."}
//! ```
//!
//! `value` and `threshold` are null for `provider_down`; `resolved_at` and
//! `duration_ms` appear only on resolves.

pub mod deliver;
pub mod runner;
pub mod window;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::config::{AlertRule, Condition, Config};
use crate::review::Timestamp;
use crate::store::alerts::{AlertEpisodes, EpisodeRecord};
use crate::store::journal::Journal;
use crate::store::{Store, StoreError};
use crate::swarm::RouteName;

pub use runner::{AlertHandle, spawn};
use window::Window;

/// Whether a notification opens or closes an episode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Firing,
    Resolved,
}

/// One message about an episode: what the log line and the webhook say.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    /// The rule's name.
    pub alert: String,
    pub kind: String,
    pub status: Status,
    /// The provider or route.
    pub subject: String,
    pub started_at: SystemTime,
    pub resolved_at: Option<SystemTime>,
    /// The measure (attainment, burn rate) at the change; none for health.
    pub value: Option<f64>,
    pub threshold: Option<f64>,
    /// One sentence for people.
    pub summary: String,
}

/// The webhook's JSON body.
#[derive(Serialize)]
struct Body<'a> {
    alert: &'a str,
    kind: &'a str,
    status: Status,
    subject: &'a str,
    started_at: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    resolved_at: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration_ms: Option<u64>,
    value: Option<f64>,
    threshold: Option<f64>,
    summary: &'a str,
}

impl Notification {
    /// How long the episode lasted, for a resolve.
    pub fn duration(&self) -> Option<Duration> {
        self.resolved_at
            .map(|end| end.duration_since(self.started_at).unwrap_or_default())
    }

    /// The webhook body.
    pub fn body(&self) -> serde_json::Value {
        let body = Body {
            alert: &self.alert,
            kind: &self.kind,
            status: self.status,
            subject: &self.subject,
            started_at: Timestamp(self.started_at),
            resolved_at: self.resolved_at.map(Timestamp),
            duration_ms: self
                .duration()
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            value: self.value.filter(|v| v.is_finite()),
            threshold: self.threshold,
            summary: &self.summary,
        };
        // Plain strings and numbers (non-finite values filtered out above):
        // serialising cannot fail.
        serde_json::to_value(body).expect("an alert body serialises to JSON")
    }

    /// The log line.
    pub fn log(&self) {
        let value = self.value.map(|v| format!("{v:.4}"));
        match self.status {
            Status::Firing => tracing::warn!(
                alert = %self.alert,
                kind = %self.kind,
                subject = %self.subject,
                value = value.as_deref().unwrap_or("-"),
                threshold = ?self.threshold,
                "alert firing: {}",
                self.summary
            ),
            Status::Resolved => tracing::info!(
                alert = %self.alert,
                kind = %self.kind,
                subject = %self.subject,
                value = value.as_deref().unwrap_or("-"),
                threshold = ?self.threshold,
                duration = %human(self.duration().unwrap_or_default()),
                "alert resolved: {}",
                self.summary
            ),
        }
    }
}

fn to_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn from_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// `250ms`, `45s`, `3m12s`, `2h5m`: spans as people write them.
pub fn human(span: Duration) -> String {
    let secs = span.as_secs();
    match secs {
        0 => format!("{}ms", span.as_millis()),
        1..60 => format!("{secs}s"),
        60..3600 if secs % 60 == 0 => format!("{}m", secs / 60),
        60..3600 => format!("{}m{}s", secs / 60, secs % 60),
        _ if secs % 3600 == 0 => format!("{}h", secs / 3600),
        _ => format!("{}h{}m", secs / 3600, secs % 3600 / 60),
    }
}

fn percent(fraction: f64) -> String {
    format!("{:.1}%", fraction * 100.0)
}

/// A state change's notification; a change the store refused is logged and
/// not made (the in-memory state follows the store), so the next reading
/// tries it again.
fn settled(
    rule: &str,
    subject: &str,
    changed: Result<Option<Notification>, StoreError>,
) -> Option<Notification> {
    changed.unwrap_or_else(|error| {
        tracing::warn!(alert = %rule, %subject, %error, "cannot store an alert episode change; it is tried again on the next reading");
        None
    })
}

/// What one evaluation found about one subject.
struct Reading {
    bad: bool,
    value: Option<f64>,
    threshold: Option<f64>,
    summary: String,
}

/// The episode state machines of every rule, and what feeds them.
///
/// Synchronous and clock-free: callers pass the time, so tests drive it
/// through any sequence of instants. [`spawn`] runs one over a process.
#[derive(Debug)]
pub struct AlertEngine {
    rules: Vec<AlertRule>,
    /// Every route of the config and its latency target.
    routes: BTreeMap<RouteName, Option<Duration>>,
    providers: Vec<String>,
    /// Open episodes by (rule, subject); mirrors the store.
    episodes: BTreeMap<(String, String), EpisodeRecord>,
    book: AlertEpisodes,
    journal: Journal,
    window: Window,
}

impl AlertEngine {
    /// An engine for `config`'s rules, with the episodes `store` holds open.
    pub fn new(store: &Store, config: &Config) -> Result<AlertEngine, StoreError> {
        let book = AlertEpisodes::new(store)?;
        let episodes = book
            .all()?
            .into_iter()
            .map(|e| ((e.rule.clone(), e.subject.clone()), e))
            .collect();
        let mut engine = AlertEngine {
            rules: Vec::new(),
            routes: BTreeMap::new(),
            providers: Vec::new(),
            episodes,
            book,
            journal: Journal::new(store)?,
            window: Window::new([], Duration::ZERO, Duration::ZERO),
        };
        engine.configure(config);
        Ok(engine)
    }

    fn configure(&mut self, config: &Config) {
        self.rules = config.alerts.rules.clone();
        self.routes = config
            .routes
            .iter()
            .map(|(name, route)| (name.clone(), route.sla_p95))
            .collect();
        self.providers = config.providers.keys().map(|p| p.0.clone()).collect();
        let keep = self
            .rules
            .iter()
            .filter_map(|r| r.condition.window())
            .max()
            .unwrap_or_default();
        let lookback = config
            .routes
            .values()
            .map(|r| r.deadlines.total)
            .max()
            .unwrap_or_default();
        // Only routes some rule reads are counted.
        let watched: Vec<(RouteName, Option<Duration>)> = self
            .routes
            .iter()
            .filter(|(route, _)| {
                self.rules
                    .iter()
                    .any(|rule| self.subjects(rule).contains(&route.0))
            })
            .map(|(route, target)| (route.clone(), *target))
            .collect();
        self.window = Window::new(watched, keep, lookback);
    }

    /// Takes a new config (a policy change): rules, routes and targets are
    /// replaced, and episodes the new rules no longer cover are resolved.
    pub fn reconfigure(&mut self, config: &Config, now: SystemTime) -> Vec<Notification> {
        self.configure(config);
        self.reconcile(now)
    }

    /// Resolves the open episodes that no rule covers any more (a rule
    /// removed, its kind changed, or its subject gone from the config).
    pub fn reconcile(&mut self, now: SystemTime) -> Vec<Notification> {
        let orphans: Vec<(String, String)> = self
            .episodes
            .iter()
            .filter(|((rule, subject), episode)| {
                !self.rules.iter().any(|r| {
                    r.name == *rule
                        && r.condition.kind() == episode.kind
                        && self.subjects(r).contains(subject)
                })
            })
            .map(|(key, _)| key.clone())
            .collect();
        let mut out = Vec::new();
        for (rule, subject) in orphans {
            let summary = format!(
                "rule `{rule}` no longer covers `{subject}` (the config changed); the episode is closed"
            );
            let closed = self.close(&rule, &subject, None, now, summary);
            out.extend(settled(&rule, &subject, closed));
        }
        out
    }

    /// Whether any rule is evaluated on the tick (SLA or burn rate).
    pub fn has_windowed_rules(&self) -> bool {
        self.rules.iter().any(|r| r.condition.window().is_some())
    }

    /// The open episodes, by rule then subject.
    pub fn open_episodes(&self) -> impl Iterator<Item = &EpisodeRecord> {
        self.episodes.values()
    }

    /// The subjects a rule applies to.
    fn subjects(&self, rule: &AlertRule) -> Vec<String> {
        match &rule.condition {
            Condition::ProviderDown { provider: Some(p) } => vec![p.0.clone()],
            Condition::ProviderDown { provider: None } => self.providers.clone(),
            Condition::SlaAttainment { route, .. } => self
                .routes
                .iter()
                .filter(|(name, target)| {
                    target.is_some() && route.as_ref().is_none_or(|r| r == *name)
                })
                .map(|(name, _)| name.0.clone())
                .collect(),
            Condition::BurnRate { route, .. } => self
                .routes
                .keys()
                .filter(|name| route.as_ref().is_none_or(|r| r == *name))
                .map(|name| name.0.clone())
                .collect(),
        }
    }

    /// A provider's health changed: `down` is bad for every
    /// `provider_down` rule covering it.
    pub fn on_health(&mut self, provider: &str, down: bool, at: SystemTime) -> Vec<Notification> {
        self.health(provider, down, at, None)
    }

    /// [`AlertEngine::on_health`] with the reason the health actor gave.
    pub fn health(
        &mut self,
        provider: &str,
        down: bool,
        at: SystemTime,
        reason: Option<&str>,
    ) -> Vec<Notification> {
        let rules: Vec<AlertRule> = self
            .rules
            .iter()
            .filter(|rule| match &rule.condition {
                Condition::ProviderDown { provider: Some(p) } => p.0 == provider,
                Condition::ProviderDown { provider: None } => true,
                _ => false,
            })
            .cloned()
            .collect();
        let because = reason
            .filter(|r| !r.is_empty())
            .map_or(String::new(), |r| format!(": {r}"));
        let mut out = Vec::new();
        for rule in rules {
            let reading = Reading {
                bad: down,
                value: None,
                threshold: None,
                summary: if down {
                    format!("provider `{provider}` is down{because}")
                } else {
                    format!("provider `{provider}` is up again{because}")
                },
            };
            let changed = self.transition(&rule, provider, reading, at);
            out.extend(settled(&rule.name, provider, changed));
        }
        out
    }

    /// Reads the journal up to `now` and evaluates every SLA and burn-rate
    /// rule against its window. Fails only when the journal cannot be read;
    /// an episode change that cannot be stored is logged and left for the
    /// next evaluation, while the other subjects go on.
    pub fn evaluate(&mut self, now: SystemTime) -> Result<Vec<Notification>, StoreError> {
        if !self.has_windowed_rules() {
            return Ok(Vec::new());
        }
        let now_ms = to_ms(now);
        self.window.refresh(&self.journal, now_ms)?;
        let mut out = Vec::new();
        for rule in self.rules.clone() {
            for subject in self.subjects(&rule) {
                let Some(reading) = self.read(&rule, &subject, now_ms) else {
                    continue;
                };
                let changed = self.transition(&rule, &subject, reading, now);
                out.extend(settled(&rule.name, &subject, changed));
            }
        }
        Ok(out)
    }

    /// What the window says of `route` under `rule`; `None` when the rule
    /// is not windowed or the window holds too few requests to judge.
    fn read(&self, rule: &AlertRule, route: &str, now_ms: u64) -> Option<Reading> {
        match &rule.condition {
            Condition::ProviderDown { .. } => None,
            Condition::SlaAttainment {
                target,
                window,
                min_requests,
                ..
            } => {
                let counts = self.window.counts(route, *window, now_ms)?;
                if counts.finished < u64::from(*min_requests) {
                    return None;
                }
                let latency = self
                    .routes
                    .get(&RouteName(route.to_owned()))
                    .copied()
                    .flatten()?;
                let attainment = counts.within as f64 / counts.finished as f64;
                Some(Reading {
                    bad: attainment < *target,
                    value: Some(attainment),
                    threshold: Some(*target),
                    summary: format!(
                        "route `{route}`: {} of {} requests finished in the last {} completed within {} (target {})",
                        percent(attainment),
                        counts.finished,
                        human(*window),
                        human(latency),
                        percent(*target)
                    ),
                })
            }
            Condition::BurnRate {
                slo,
                threshold,
                window,
                min_requests,
                ..
            } => {
                let counts = self.window.counts(route, *window, now_ms)?;
                if counts.finished < u64::from(*min_requests) {
                    return None;
                }
                let failed = counts.failed as f64 / counts.finished as f64;
                let burn = failed / (1.0 - slo);
                Some(Reading {
                    bad: burn > *threshold,
                    value: Some(burn),
                    threshold: Some(*threshold),
                    summary: format!(
                        "route `{route}`: error budget burning at {burn:.1}× ({} of {} requests failed in the last {}; SLO {}, threshold {threshold}×)",
                        counts.failed,
                        counts.finished,
                        human(*window),
                        percent(*slo)
                    ),
                })
            }
        }
    }

    /// One step of the (rule, subject) state machine.
    fn transition(
        &mut self,
        rule: &AlertRule,
        subject: &str,
        reading: Reading,
        at: SystemTime,
    ) -> Result<Option<Notification>, StoreError> {
        let key = (rule.name.clone(), subject.to_owned());
        let open = self.episodes.contains_key(&key);
        match (reading.bad, open) {
            (true, false) => {
                let record = EpisodeRecord {
                    rule: rule.name.clone(),
                    kind: rule.condition.kind().to_owned(),
                    subject: subject.to_owned(),
                    started_ms: to_ms(at),
                    value: reading.value,
                    threshold: reading.threshold,
                };
                // Written before the notification leaves: see the module docs.
                self.book.open(&record)?;
                self.episodes.insert(key, record);
                Ok(Some(Notification {
                    alert: rule.name.clone(),
                    kind: rule.condition.kind().to_owned(),
                    status: Status::Firing,
                    subject: subject.to_owned(),
                    started_at: from_ms(to_ms(at)),
                    resolved_at: None,
                    value: reading.value,
                    threshold: reading.threshold,
                    summary: reading.summary,
                }))
            }
            (false, true) => {
                let value = reading.value;
                self.close(&rule.name, subject, value, at, reading.summary)
            }
            _ => Ok(None),
        }
    }

    fn close(
        &mut self,
        rule: &str,
        subject: &str,
        value: Option<f64>,
        at: SystemTime,
        summary: String,
    ) -> Result<Option<Notification>, StoreError> {
        let key = (rule.to_owned(), subject.to_owned());
        let Some(episode) = self.episodes.get(&key) else {
            return Ok(None);
        };
        self.book.close(rule, subject)?;
        let started_at = from_ms(episode.started_ms);
        // A clock stepped back must not give a resolve before its fire.
        let resolved_at = from_ms(to_ms(at).max(episode.started_ms));
        let lasted = resolved_at.duration_since(started_at).unwrap_or_default();
        let notification = Notification {
            alert: rule.to_owned(),
            kind: episode.kind.clone(),
            status: Status::Resolved,
            subject: subject.to_owned(),
            started_at,
            resolved_at: Some(resolved_at),
            value,
            threshold: episode.threshold,
            summary: format!("{summary} (after {})", human(lasted)),
        };
        self.episodes.remove(&key);
        Ok(Some(notification))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::store::StoreSettings;
    use crate::store::journal::{Ending, JournalRecord};
    use crate::trace::TraceId;

    const CONFIG: &str = "default_route = \"support\"\n[providers.kb]\nkind = \"extractive\"\n[providers.kb2]\nkind = \"extractive\"\n[routes.support]\nchain = [\"kb\"]\nsla_p95 = \"1s\"\n";

    fn config(alerts: &str) -> Config {
        Config::parse(&format!("{CONFIG}{alerts}"), Path::new("baton.toml")).unwrap()
    }

    fn open_store(dir: &Path) -> Store {
        Store::open(dir, &StoreSettings::default()).unwrap()
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    const DOWN: &str = "[alerts]\n[[alerts.rules]]\nname = \"down\"\nkind = \"provider_down\"\n";

    #[test]
    fn a_provider_down_episode_fires_once_and_resolves_once_per_provider() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path());
        let mut engine = AlertEngine::new(&store, &config(DOWN)).unwrap();
        let fired = engine.on_health("kb", true, at(0));
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].status, Status::Firing);
        assert_eq!(fired[0].subject, "kb");
        assert!(engine.on_health("kb", true, at(5)).is_empty());
        assert_eq!(engine.on_health("kb2", true, at(6)).len(), 1);
        assert!(engine.on_health("kb2", true, at(7)).is_empty());
        let resolved = engine.on_health("kb", false, at(65));
        assert_eq!(resolved.len(), 1);
        assert_eq!(resolved[0].status, Status::Resolved);
        assert_eq!(resolved[0].duration(), Some(Duration::from_secs(65)));
        assert!(
            resolved[0].summary.ends_with("(after 1m5s)"),
            "{}",
            resolved[0].summary
        );
        assert!(engine.on_health("kb", false, at(70)).is_empty());
        assert_eq!(engine.open_episodes().count(), 1);
    }

    #[test]
    fn a_rule_for_one_provider_ignores_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path());
        let mut engine =
            AlertEngine::new(&store, &config(&format!("{DOWN}provider = \"kb2\"\n"))).unwrap();
        assert!(engine.on_health("kb", true, at(0)).is_empty());
        assert_eq!(engine.on_health("kb2", true, at(0)).len(), 1);
    }

    #[test]
    fn an_episode_open_at_a_restart_neither_fires_again_nor_is_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = open_store(dir.path());
            let mut engine = AlertEngine::new(&store, &config(DOWN)).unwrap();
            assert_eq!(engine.on_health("kb", true, at(0)).len(), 1);
            store.flush().unwrap();
        }
        let store = open_store(dir.path());
        let mut engine = AlertEngine::new(&store, &config(DOWN)).unwrap();
        assert!(engine.reconcile(at(10)).is_empty());
        assert!(engine.on_health("kb", true, at(20)).is_empty());
        let resolved = engine.on_health("kb", false, at(30));
        assert_eq!(resolved.len(), 1);
        assert_eq!(resolved[0].started_at, at(0));
        assert_eq!(resolved[0].duration(), Some(Duration::from_secs(30)));
    }

    #[test]
    fn an_episode_whose_rule_is_gone_is_resolved_on_reload() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path());
        let mut engine = AlertEngine::new(&store, &config(DOWN)).unwrap();
        engine.on_health("kb", true, at(0));
        let renamed =
            config("[alerts]\n[[alerts.rules]]\nname = \"other\"\nkind = \"provider_down\"\n");
        let closed = engine.reconfigure(&renamed, at(40));
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].alert, "down");
        assert_eq!(closed[0].status, Status::Resolved);
        assert!(
            closed[0].summary.contains("no longer covers `kb`"),
            "{}",
            closed[0].summary
        );
        assert_eq!(AlertEpisodes::new(&store).unwrap().all().unwrap().len(), 0);
        // The renamed rule starts its own episode on the next Down.
        assert_eq!(engine.on_health("kb", true, at(41))[0].alert, "other");
    }

    fn journal_request(journal: &Journal, latency: Duration, ok: bool) {
        let id = TraceId::new();
        let mut record = JournalRecord::accepted(id, "q");
        record.route = Some("support".into());
        record.accepted_ms -= latency.as_millis() as u64;
        journal.accept(&record).unwrap();
        let ending = if ok {
            Ending::Completed {
                chain: vec![],
                attempts: vec![],
                served_by: "provider:kb".into(),
                fallback: false,
                degraded: false,
                refusal: false,
                needs_review: false,
                answer: "a".into(),
            }
        } else {
            Ending::Failed {
                chain: vec![],
                attempts: vec![],
                error: "every provider failed".into(),
            }
        };
        journal.finish(id, None, ending).unwrap();
    }

    #[test]
    fn burn_rate_fires_above_the_threshold_and_holds_on_thin_traffic() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path());
        let journal = Journal::new(&store).unwrap();
        let mut engine = AlertEngine::new(
            &store,
            &config("[alerts]\n[[alerts.rules]]\nname = \"burn\"\nkind = \"burn_rate\"\nslo = 0.9\nthreshold = 2.0\nwindow = \"1m\"\nmin_requests = 4\n"),
        )
        .unwrap();
        // Three failures: too few requests to judge.
        for _ in 0..3 {
            journal_request(&journal, Duration::ZERO, false);
        }
        assert!(engine.evaluate(SystemTime::now()).unwrap().is_empty());
        // 3 of 4 failed: 75% / 10% budget = 7.5× > 2×.
        journal_request(&journal, Duration::ZERO, true);
        let fired = engine.evaluate(SystemTime::now()).unwrap();
        assert_eq!(fired.len(), 1, "{fired:?}");
        assert!((fired[0].value.unwrap() - 7.5).abs() < 1e-9, "{fired:?}");
        assert_eq!(fired[0].threshold, Some(2.0));
        assert!(
            fired[0].summary.contains("3 of 4 requests failed"),
            "{}",
            fired[0].summary
        );
        // 3 of 16 failed: 1.875× ≤ 2×.
        for _ in 0..12 {
            journal_request(&journal, Duration::ZERO, true);
        }
        let resolved = engine.evaluate(SystemTime::now()).unwrap();
        assert_eq!(resolved.len(), 1, "{resolved:?}");
        assert_eq!(resolved[0].status, Status::Resolved);
        assert!(
            (resolved[0].value.unwrap() - 1.875).abs() < 1e-9,
            "{resolved:?}"
        );
    }

    #[test]
    fn an_empty_window_neither_fires_nor_resolves() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path());
        let journal = Journal::new(&store).unwrap();
        let mut engine = AlertEngine::new(
            &store,
            &config("[alerts]\n[[alerts.rules]]\nname = \"sla\"\nkind = \"sla_attainment\"\ntarget = 0.9\nwindow = \"1m\"\nmin_requests = 2\n"),
        )
        .unwrap();
        journal_request(&journal, Duration::from_secs(2), true);
        journal_request(&journal, Duration::from_secs(2), true);
        let now = SystemTime::now();
        assert_eq!(engine.evaluate(now).unwrap().len(), 1);
        // Ten minutes on, the window is empty: the episode stays open.
        assert!(
            engine
                .evaluate(now + Duration::from_secs(600))
                .unwrap()
                .is_empty()
        );
        assert_eq!(engine.open_episodes().count(), 1);
    }

    #[test]
    fn bodies_carry_the_documented_fields() {
        let firing = Notification {
            alert: "sla".into(),
            kind: "sla_attainment".into(),
            status: Status::Firing,
            subject: "support".into(),
            started_at: UNIX_EPOCH + Duration::from_millis(1_740_821_400_250),
            resolved_at: None,
            value: Some(0.5),
            threshold: Some(0.95),
            summary: "s".into(),
        };
        let body = firing.body();
        assert_eq!(body["status"], "firing");
        assert_eq!(body["started_at"], "2025-03-01T09:30:00.250Z");
        assert!(body.get("resolved_at").is_none());
        assert!(body.get("duration_ms").is_none());
        let resolved = Notification {
            status: Status::Resolved,
            resolved_at: Some(firing.started_at + Duration::from_secs(90)),
            ..firing
        };
        let body = resolved.body();
        assert_eq!(body["resolved_at"], "2025-03-01T09:31:30.250Z");
        assert_eq!(body["duration_ms"], 90_000);
        assert_eq!(body["threshold"], 0.95);
    }

    #[test]
    fn human_spans() {
        assert_eq!(human(Duration::from_millis(250)), "250ms");
        assert_eq!(human(Duration::from_secs(45)), "45s");
        assert_eq!(human(Duration::from_secs(300)), "5m");
        assert_eq!(human(Duration::from_secs(192)), "3m12s");
        assert_eq!(human(Duration::from_secs(3600)), "1h");
        assert_eq!(human(Duration::from_secs(7500)), "2h5m");
    }
}
