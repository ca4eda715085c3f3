//! Who is asking: the console's credentials, its session cookie and its CSRF
//! tokens.
//!
//! A request is let in by `Authorization: Bearer <token>`, by HTTP Basic
//! credentials, or by the session cookie the login form sets. The cookie is
//! `name.issued.mac`, where `mac` is an HMAC-SHA256 of the name and issue time
//! keyed with that credential's secret: it reveals nothing of the secret, stops
//! working when the secret changes, and lasts [`SESSION_TTL`]. The CSRF token
//! of a form is an HMAC of the session it was rendered for, so a page from
//! another origin cannot forge one (and the cookie is `SameSite=Strict`
//! besides). Every comparison is constant-time. No secret is ever logged,
//! rendered or put in a header.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::ConsoleConfig;
use axum::http::HeaderMap;
use axum::http::header::{AUTHORIZATION, COOKIE};
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use hookfleet_common::config::Secret;
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The session cookie's name.
pub const COOKIE_NAME: &str = "hf_console";
/// How long a login lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// One accepted credential.
#[derive(Clone)]
struct Credential {
    /// Who it is, in the audit log.
    name: String,
    /// Its secret (the token or the password).
    secret: Secret,
    /// Whether it is a username/password pair (else a token).
    basic: bool,
}

/// The console's credentials, from `[worker.console]`.
#[derive(Clone)]
pub struct Credentials {
    list: Vec<Credential>,
}

/// The person (credential) behind a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operator {
    /// The credential's name (`token_name` or `username`).
    pub name: String,
    /// The session's issue time (0 for header credentials): CSRF tokens are
    /// bound to it.
    issued: u64,
}

impl Credentials {
    /// The credentials `config` names (none when it names none).
    pub fn new(config: &ConsoleConfig) -> Self {
        let mut list = Vec::new();
        if let Some(token) = &config.token {
            list.push(Credential {
                name: config.token_name.clone(),
                secret: token.clone(),
                basic: false,
            });
        }
        if let (Some(username), Some(password)) = (&config.username, &config.password) {
            list.push(Credential {
                name: username.clone(),
                secret: password.clone(),
                basic: true,
            });
        }
        Self { list }
    }

    /// The operator `headers` authenticate, if any, at `now`.
    pub fn authenticate(&self, headers: &HeaderMap, now: SystemTime) -> Option<Operator> {
        if let Some(value) = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()) {
            return self.by_authorization(value);
        }
        headers
            .get_all(COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().strip_prefix(COOKIE_NAME)?.strip_prefix('='))
            .find_map(|value| self.by_cookie(value, now))
    }

    /// The operator a login form's fields name: a token alone, or a username
    /// and password.
    pub fn login(&self, username: &str, secret: &str) -> Option<Operator> {
        self.list
            .iter()
            .find(|c| {
                let name_ok = if c.basic {
                    bool::from(c.name.as_bytes().ct_eq(username.as_bytes()))
                } else {
                    username.is_empty()
                };
                name_ok && equal(c.secret.expose(), secret)
            })
            .map(|c| Operator {
                name: c.name.clone(),
                issued: 0,
            })
    }

    /// A session cookie's value for `operator`, issued at `now`.
    pub fn session(&self, operator: &Operator, now: SystemTime) -> Option<String> {
        let credential = self.find(&operator.name)?;
        let issued = secs(now).max(1);
        let mac = mac(
            &credential.secret,
            &format!("session:{}:{issued}", operator.name),
        );
        Some(format!("{}.{issued}.{mac}", operator.name))
    }

    /// The CSRF token of `operator`'s forms.
    pub fn csrf(&self, operator: &Operator) -> String {
        self.find(&operator.name)
            .map(|c| {
                mac(
                    &c.secret,
                    &format!("csrf:{}:{}", operator.name, operator.issued),
                )
            })
            .unwrap_or_default()
    }

    /// Whether `token` is `operator`'s CSRF token.
    pub fn csrf_ok(&self, operator: &Operator, token: &str) -> bool {
        let expected = self.csrf(operator);
        !expected.is_empty() && equal(&expected, token)
    }

    fn find(&self, name: &str) -> Option<&Credential> {
        self.list.iter().find(|c| c.name == name)
    }

    fn by_authorization(&self, value: &str) -> Option<Operator> {
        if let Some(token) = value.strip_prefix("Bearer ") {
            return self.login("", token.trim());
        }
        let encoded = value.strip_prefix("Basic ")?;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (user, password) = text.split_once(':')?;
        self.list
            .iter()
            .any(|c| c.basic)
            .then(|| self.login(user, password))
            .flatten()
    }

    fn by_cookie(&self, value: &str, now: SystemTime) -> Option<Operator> {
        let mut parts = value.splitn(3, '.');
        let (name, issued, given) = (parts.next()?, parts.next()?, parts.next()?);
        let issued: u64 = issued.parse().ok()?;
        let age = secs(now).checked_sub(issued)?;
        if age > SESSION_TTL.as_secs() {
            return None;
        }
        let credential = self.find(name)?;
        let expected = mac(&credential.secret, &format!("session:{name}:{issued}"));
        equal(&expected, given).then(|| Operator {
            name: name.to_owned(),
            issued,
        })
    }
}

fn mac(secret: &Secret, message: &str) -> String {
    let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.expose().as_bytes()) else {
        return String::new();
    };
    mac.update(message.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

fn equal(a: &str, b: &str) -> bool {
    bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

fn secs(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn credentials() -> Credentials {
        Credentials::new(&ConsoleConfig {
            enabled: true,
            token: Some(Secret::new("tok-secret")),
            username: Some("oncall".into()),
            password: Some(Secret::new("pw-secret")),
            ..ConsoleConfig::default()
        })
    }

    fn with(name: axum::http::HeaderName, value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(name, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn bearer_basic_and_cookie_let_in_and_nothing_else_does() {
        let c = credentials();
        let now = SystemTime::now();
        let bearer = c.authenticate(&with(AUTHORIZATION, "Bearer tok-secret"), now);
        assert_eq!(bearer.map(|o| o.name), Some("token".to_owned()));
        let basic = base64::engine::general_purpose::STANDARD.encode("oncall:pw-secret");
        let op = c.authenticate(&with(AUTHORIZATION, &format!("Basic {basic}")), now);
        assert_eq!(op.clone().map(|o| o.name), Some("oncall".to_owned()));
        let cookie = c.session(&op.unwrap(), now).unwrap();
        assert!(!cookie.contains("pw-secret"));
        let header = format!("a=b; {COOKIE_NAME}={cookie}");
        let by_cookie = c.authenticate(&with(COOKIE, &header), now).unwrap();
        assert_eq!(by_cookie.name, "oncall");
        let token = c.csrf(&by_cookie);
        assert!(c.csrf_ok(&by_cookie, &token));
        assert!(!c.csrf_ok(&by_cookie, "x"));
        for bad in ["Bearer nope", "Basic b25jYWxsOm5vcGU=", "tok-secret"] {
            assert!(
                c.authenticate(&with(AUTHORIZATION, bad), now).is_none(),
                "{bad}"
            );
        }
        let forged = format!("{COOKIE_NAME}=oncall.1.{}", "0".repeat(64));
        assert!(c.authenticate(&with(COOKIE, &forged), now).is_none());
        let later = now + SESSION_TTL + Duration::from_secs(5);
        assert!(c.authenticate(&with(COOKIE, &header), later).is_none());
        assert!(c.login("", "pw-secret").is_none());
        assert!(c.login("oncall", "tok-secret").is_none());
    }
}
