//! The `[worker.console]` section: the web console served by the worker's
//! admin listener under `/console`.
//!
//! Off by default. On, it needs a credential — a token, or a user name and
//! password — given as secret references, never inline; loading fails with the
//! field named when one is missing. What the console shows and does is in
//! docs/console.md.

use serde::Deserialize;

use hookfleet_common::config::{ConfigError, Secret};

use super::is_name;

/// The web console (`[worker.console]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Serve `/console` on the admin listener (`false`).
    pub enabled: bool,
    /// A token accepted as `Authorization: Bearer`, or typed into the login
    /// form (`{ secret_env = "HOOKFLEET_CONSOLE_TOKEN" }`).
    pub token: Option<Secret>,
    /// Who the token is, in the audit log (`token`).
    pub token_name: String,
    /// A user name accepted with [`ConsoleConfig::password`] as HTTP Basic
    /// credentials or in the login form; also its name in the audit log.
    pub username: Option<String>,
    /// The password of [`ConsoleConfig::username`], by reference.
    pub password: Option<Secret>,
    /// Dead letters on one page of the DLQ view (50, 1–500).
    pub page_size: usize,
    /// The most dead letters one DLQ page reads from the head of the queue
    /// looking for matches (1000, at least `page_size + 1`). A page never
    /// rewrites the queue: deeper letters are reached by narrowing the filters.
    pub scan_limit: usize,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            token: None,
            token_name: "token".to_owned(),
            username: None,
            password: None,
            page_size: 50,
            scan_limit: 1000,
        }
    }
}

impl ConsoleConfig {
    pub(super) fn validate(&self, field: &str) -> Result<(), ConfigError> {
        match (&self.username, &self.password) {
            (Some(_), None) => {
                return Err(ConfigError::invalid(
                    format!("{field}.password"),
                    "a username needs a password",
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::invalid(
                    format!("{field}.username"),
                    "a password needs a username",
                ));
            }
            _ => {}
        }
        if let Some(name) = &self.username
            && !is_name(name)
        {
            return Err(ConfigError::invalid(
                format!("{field}.username"),
                "use letters, digits, `-` and `_` (at most 100)",
            ));
        }
        if !is_name(&self.token_name) {
            return Err(ConfigError::invalid(
                format!("{field}.token_name"),
                "use letters, digits, `-` and `_` (at most 100)",
            ));
        }
        if self.enabled && self.token.is_none() && self.password.is_none() {
            return Err(ConfigError::invalid(
                format!("{field}.token"),
                "the console needs a token or a username and password",
            ));
        }
        if !(1..=500).contains(&self.page_size) {
            return Err(ConfigError::invalid(
                format!("{field}.page_size"),
                "must be between 1 and 500",
            ));
        }
        if self.scan_limit <= self.page_size || self.scan_limit > 60_000 {
            return Err(ConfigError::invalid(
                format!("{field}.scan_limit"),
                "must be above page_size and at most 60000",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_enabled_console_needs_a_credential() {
        let config = ConsoleConfig {
            enabled: true,
            ..ConsoleConfig::default()
        };
        let err = config.validate("worker.console").unwrap_err();
        assert!(err.to_string().contains("worker.console.token"), "{err}");
    }

    #[test]
    fn a_username_needs_a_password_and_pages_are_bounded() {
        let config = ConsoleConfig {
            username: Some("oncall".into()),
            ..ConsoleConfig::default()
        };
        let err = config.validate("worker.console").unwrap_err();
        assert!(err.to_string().contains("worker.console.password"), "{err}");
        let config = ConsoleConfig {
            page_size: 0,
            ..ConsoleConfig::default()
        };
        let err = config.validate("worker.console").unwrap_err();
        assert!(err.to_string().contains("page_size"), "{err}");
        let config = ConsoleConfig {
            enabled: true,
            token: Some(Secret::new("t")),
            ..ConsoleConfig::default()
        };
        assert!(config.validate("worker.console").is_ok());
    }
}
