//! Secrets referenced from the config file, never inlined in it.
//!
//! A [`Secret`] is written in `hookfleet.toml` as `{ secret_env = "NAME" }` or
//! `{ secret_file = "/path" }` (the shape of a Kubernetes secret mount) and is resolved
//! while the config is loaded, so a missing variable fails at start with the field
//! named. The value lives in a [`SecretString`]: `Debug` prints `[REDACTED]`, and
//! nothing here implements `Serialize` or `Display`, so a secret cannot reach a log by
//! accident.

use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer};

/// Where a secret comes from, as written in the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
enum SecretRef {
    /// Read from this environment variable at start.
    Env {
        /// The variable's name.
        secret_env: String,
    },
    /// Read from this file at start (trailing newline trimmed).
    File {
        /// The file's path.
        secret_file: PathBuf,
    },
}

/// A resolved secret value. Cheap to clone; redacted in `Debug`.
#[derive(Clone)]
pub struct Secret {
    value: SecretString,
    /// Where it came from, for error messages (never the value).
    origin: String,
}

impl Secret {
    /// A secret given directly, for tests and programmatic configuration.
    pub fn new(value: impl Into<String>) -> Self {
        Self {
            value: SecretString::from(value.into()),
            origin: "inline".to_owned(),
        }
    }

    /// The secret's value. Call only where it is used (an HMAC key, a header).
    pub fn expose(&self) -> &str {
        self.value.expose_secret()
    }

    /// Where the secret came from (`env:NAME`, `file:/path` or `inline`).
    pub fn origin(&self) -> &str {
        &self.origin
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({}, [REDACTED])", self.origin)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let reference = SecretRef::deserialize(deserializer).map_err(|_| {
            D::Error::custom(
                "a secret must be a table `{ secret_env = \"NAME\" }` or `{ secret_file = \"/path\" }`",
            )
        })?;
        match reference {
            SecretRef::Env { secret_env } => {
                let value = std::env::var(&secret_env).map_err(|_| {
                    D::Error::custom(format!("environment variable {secret_env} is not set"))
                })?;
                if value.is_empty() {
                    return Err(D::Error::custom(format!(
                        "environment variable {secret_env} is empty"
                    )));
                }
                Ok(Self {
                    value: SecretString::from(value),
                    origin: format!("env:{secret_env}"),
                })
            }
            SecretRef::File { secret_file } => {
                let value = std::fs::read_to_string(&secret_file).map_err(|e| {
                    D::Error::custom(format!(
                        "cannot read secret file {}: {e}",
                        secret_file.display()
                    ))
                })?;
                let value = value.trim_end_matches(['\n', '\r']).to_owned();
                if value.is_empty() {
                    return Err(D::Error::custom(format!(
                        "secret file {} is empty",
                        secret_file.display()
                    )));
                }
                Ok(Self {
                    value: SecretString::from(value),
                    origin: format!("file:{}", secret_file.display()),
                })
            }
        }
    }
}
