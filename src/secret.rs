//! Secrets (provider API keys) that cannot leak by accident.
//!
//! A [`Secret`] has no `Display`, and its `Debug` prints `Secret([redacted])`,
//! so a key inside a struct that is logged or formatted into an error stays
//! hidden. The only way to the value is [`Secret::expose`], called where the
//! key goes into a request header and nowhere else.

use std::fmt;

/// A value that must never be printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// Reads the environment variable `name`; `None` when unset or empty.
    pub fn from_env(name: &str) -> Option<Secret> {
        std::env::var(name)
            .ok()
            .filter(|v| !v.trim().is_empty())
            .map(Secret)
    }

    /// The value, for the request header that carries it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let secret = Secret::new("sk-canary-123");
        let shown = format!("{secret:?} {:?}", Some(&secret));
        assert!(!shown.contains("canary"), "{shown}");
        assert_eq!(secret.expose(), "sk-canary-123");
    }
}
