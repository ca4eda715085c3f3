//! The one place a test's [`Settings`] become a `hookfleet.toml` for a spawned
//! binary.
//!
//! The config types only deserialize (secrets must never serialize), so the file
//! is rendered here, field by field, and every secret goes to a file of its own
//! beside it, referenced as `{ secret_file = … }` the way a Kubernetes mount is.
//! [`ConfigFile::write`] then loads the file back with the services' own loader
//! and panics, naming the lines that differ, when the result is not the settings
//! it was given: a field this renderer does not know yet fails the test that needs
//! it instead of being dropped silently.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hookfleet_worker::config::{
    CacheConfig, LimitsConfig, OutboundConfig, PipelineConfig, ProviderConfig, SinkConfig,
};

use hookfleet_common::config::{Secret, Sources};

use crate::settings::Settings;

use hookfleet_ingest::config::SourceConfig;
use toml::{Table, Value};

/// A rendered config file and the secret files beside it.
pub struct ConfigFile {
    /// The `hookfleet.toml`.
    pub path: PathBuf,
}

impl ConfigFile {
    /// Renders `settings` into `dir/{name}.toml` (secrets in `dir/{name}-secret-N`),
    /// checking that the services would load exactly these settings from it.
    pub fn write(settings: &Settings, dir: &Path, name: &str) -> Self {
        let mut render = Render {
            dir,
            name,
            secrets: 0,
        };
        let text = toml::to_string(&render.settings(settings)).expect("TOML renders");
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, &text).expect("write the config file");
        let loaded = Settings::load_from(Sources {
            file: Some(path.clone()),
            toml: None,
            env: Some(Default::default()),
        })
        .unwrap_or_else(|e| panic!("the rendered config loads: {e}\n{text}"));
        assert_same(settings, &loaded, &text);
        Self { path }
    }
}

/// Panics when `loaded` differs from `wanted` in anything but where a secret came from.
fn assert_same(wanted: &Settings, loaded: &Settings, text: &str) {
    let lines = |s: &Settings| -> Vec<String> {
        format!("{s:#?}")
            .lines()
            .map(|line| match line.find("Secret(") {
                Some(at) => format!("{}Secret([REDACTED])", &line[..at]),
                None => line.to_owned(),
            })
            .collect()
    };
    let (wanted, loaded) = (lines(wanted), lines(loaded));
    let differ: Vec<String> = wanted
        .iter()
        .zip(&loaded)
        .filter(|(w, l)| w != l)
        .map(|(w, l)| format!("wanted {w}\n   got {l}"))
        .collect();
    assert!(
        differ.is_empty() && wanted.len() == loaded.len(),
        "config_file.rs does not render every setting this test uses:\n{}\n{text}",
        differ.join("\n")
    );
}

struct Render<'a> {
    dir: &'a Path,
    name: &'a str,
    secrets: usize,
}

fn duration(d: Duration) -> Value {
    Value::String(humantime::format_duration(d).to_string())
}

fn strings(items: &[String]) -> Value {
    Value::Array(items.iter().cloned().map(Value::String).collect())
}

fn text(s: impl ToString) -> Value {
    Value::String(s.to_string())
}

fn int(n: impl TryInto<i64>) -> Value {
    Value::Integer(n.try_into().ok().expect("fits in a TOML integer"))
}

/// A serde enum's name as written in TOML (`SemiStrict` → `semi-strict`).
fn variant(value: impl std::fmt::Debug, separator: &str) -> Value {
    let debug = format!("{value:?}");
    let mut out = String::new();
    for (i, c) in debug.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push_str(separator);
        }
        out.push(c.to_ascii_lowercase());
    }
    Value::String(out)
}

impl Render<'_> {
    fn secret(&mut self, secret: &Secret) -> Value {
        self.secrets += 1;
        let path = self
            .dir
            .join(format!("{}-secret-{}", self.name, self.secrets));
        std::fs::write(&path, secret.expose()).expect("write a secret file");
        let mut table = Table::new();
        table.insert("secret_file".into(), text(path.display()));
        Value::Table(table)
    }

    fn settings(&mut self, s: &Settings) -> Table {
        let mut t = Table::new();
        t.insert("namespace".into(), text(&s.namespace));
        let amqp = &s.amqp;
        let mut a = Table::new();
        a.insert("url".into(), text(&amqp.url));
        a.insert("connect_timeout".into(), duration(amqp.connect_timeout));
        a.insert("confirm_timeout".into(), duration(amqp.confirm_timeout));
        a.insert("publisher_channels".into(), int(amqp.publisher_channels));
        a.insert("delivery_limit".into(), int(amqp.delivery_limit));
        let tiers = amqp.retry_tiers.iter().map(|d| duration(*d)).collect();
        a.insert("retry_tiers".into(), Value::Array(tiers));
        if let Some(max) = amqp.jobs_max_length {
            a.insert("jobs_max_length".into(), int(max));
        }
        if let Some(expires) = amqp.queue_expires {
            a.insert("queue_expires".into(), duration(expires));
        }
        t.insert("amqp".into(), Value::Table(a));
        let mut r = Table::new();
        r.insert("url".into(), text(&s.redis.url));
        r.insert("pool_size".into(), int(s.redis.pool_size));
        r.insert("timeout".into(), duration(s.redis.timeout));
        t.insert("redis".into(), Value::Table(r));
        let mut st = Table::new();
        st.insert("enabled".into(), Value::Boolean(s.status.enabled));
        st.insert("ttl".into(), duration(s.status.ttl));
        st.insert("max_output_bytes".into(), int(s.status.max_output_bytes));
        t.insert("status".into(), Value::Table(st));
        let mut tel = Table::new();
        tel.insert("log_format".into(), variant(s.telemetry.log_format, ""));
        tel.insert("log_level".into(), text(&s.telemetry.log_level));
        t.insert("telemetry".into(), Value::Table(tel));
        t.insert("ingest".into(), Value::Table(self.ingest(s)));
        t.insert("worker".into(), Value::Table(self.worker(s)));
        t
    }

    fn ingest(&mut self, s: &Settings) -> Table {
        let i = &s.ingest;
        let mut t = Table::new();
        t.insert("listen".into(), text(i.listen));
        t.insert("admin_listen".into(), text(i.admin_listen));
        t.insert("dedup_ttl".into(), duration(i.dedup_ttl));
        t.insert("redis_failure".into(), variant(i.redis_failure, ""));
        t.insert("retry_after".into(), duration(i.retry_after));
        t.insert("drain_delay".into(), duration(i.drain_delay));
        t.insert("shutdown_grace".into(), duration(i.shutdown_grace));
        if let Some(token) = &i.status_token {
            let token = self.secret(token);
            t.insert("status_token".into(), token);
        }
        t.insert("status_listener".into(), variant(i.status_listener, ""));
        t.insert(
            "header_read_timeout".into(),
            duration(i.header_read_timeout),
        );
        t.insert("body_read_timeout".into(), duration(i.body_read_timeout));
        t.insert("max_header_bytes".into(), int(i.max_header_bytes));
        t.insert("max_in_flight".into(), int(i.max_in_flight));
        t.insert("trusted_proxies".into(), strings(&i.trusted_proxies));
        t.insert("client_ip_header".into(), variant(i.client_ip_header, "-"));
        let mut sources = Table::new();
        for (name, source) in &i.sources {
            sources.insert(name.clone(), Value::Table(self.source(source)));
        }
        t.insert("sources".into(), Value::Table(sources));
        t
    }

    fn source(&mut self, s: &SourceConfig) -> Table {
        let mut t = Table::new();
        t.insert("scheme".into(), variant(s.scheme, ""));
        let secrets = s.secrets.iter().map(|x| self.secret(x)).collect();
        t.insert("secrets".into(), Value::Array(secrets));
        t.insert("tolerance".into(), duration(s.tolerance));
        t.insert("max_body_bytes".into(), int(s.max_body_bytes));
        t.insert("require_json".into(), Value::Boolean(s.require_json));
        t.insert("allow_ips".into(), strings(&s.allow_ips));
        t.insert("forward_headers".into(), strings(&s.forward_headers));
        if let Some(limit) = s.rate_limit {
            let mut r = Table::new();
            r.insert("per_second".into(), int(limit.per_second));
            r.insert("burst".into(), int(limit.burst));
            t.insert("rate_limit".into(), Value::Table(r));
        }
        if let Some(dedup_body) = s.dedup_body {
            t.insert("dedup_body".into(), Value::Boolean(dedup_body));
        }
        t
    }

    fn worker(&mut self, s: &Settings) -> Table {
        let w = &s.worker;
        let mut t = Table::new();
        t.insert("admin_listen".into(), text(w.admin_listen));
        t.insert("concurrency".into(), int(w.concurrency));
        t.insert("shutdown_grace".into(), duration(w.shutdown_grace));
        t.insert("max_attempts".into(), int(w.max_attempts));
        t.insert("unmatched".into(), variant(w.unmatched, "-"));
        t.insert("done_ttl".into(), duration(w.done_ttl));
        t.insert("lease_ttl".into(), duration(w.lease_ttl));
        t.insert(
            "reconnect_min_delay".into(),
            duration(w.reconnect_min_delay),
        );
        t.insert(
            "reconnect_max_delay".into(),
            duration(w.reconnect_max_delay),
        );
        t.insert("requeue_delay".into(), duration(w.requeue_delay));
        t.insert("heartbeat_interval".into(), duration(w.heartbeat_interval));
        let mut providers = Table::new();
        for (name, provider) in &w.providers {
            providers.insert(name.clone(), Value::Table(self.provider(provider)));
        }
        t.insert("providers".into(), Value::Table(providers));
        let pipelines = w.pipelines.iter().map(|p| Value::Table(pipeline(p)));
        t.insert("pipelines".into(), Value::Array(pipelines.collect()));
        t.insert("limits".into(), Value::Table(limits(&w.limits)));
        t.insert("outbound".into(), Value::Table(outbound(&w.outbound)));
        t
    }

    fn provider(&mut self, p: &ProviderConfig) -> Table {
        let mut t = Table::new();
        t.insert("kind".into(), text(p.kind.as_str()));
        if let Some(url) = &p.base_url {
            t.insert("base_url".into(), text(url));
        }
        if let Some(key) = &p.api_key {
            let key = self.secret(key);
            t.insert("api_key".into(), key);
        }
        t.insert("timeout".into(), duration(p.timeout));
        t.insert("anthropic_version".into(), text(&p.anthropic_version));
        t
    }
}

fn pipeline(p: &PipelineConfig) -> Table {
    let mut t = Table::new();
    t.insert("name".into(), text(&p.name));
    t.insert("sources".into(), strings(&p.sources));
    t.insert("event_types".into(), strings(&p.event_types));
    t.insert("provider".into(), text(&p.provider));
    t.insert("model".into(), text(&p.model));
    if let Some(temperature) = p.temperature {
        t.insert("temperature".into(), Value::Float(f64::from(temperature)));
    }
    if let Some(max) = p.max_tokens {
        t.insert("max_tokens".into(), int(max));
    }
    t.insert("response_format".into(), variant(p.response_format, ""));
    if let Some(system) = &p.system {
        t.insert("system".into(), text(system));
    }
    t.insert("user".into(), text(&p.user));
    t.insert("undefined".into(), variant(p.undefined, "-"));
    let sinks = p.sinks.iter().map(|sink| match sink {
        SinkConfig::Amqp => Value::Table(Table::from_iter([("kind".into(), text("amqp"))])),
        SinkConfig::Http(http) => panic!("config_file.rs does not render HTTP sinks ({http:?})"),
    });
    t.insert("sinks".into(), Value::Array(sinks.collect()));
    assert!(p.enrich.is_empty(), "config_file.rs does not render enrich");
    t.insert("cache".into(), cache(&p.cache));
    let fallbacks = p.fallbacks.iter().map(|f| {
        let mut t = Table::new();
        t.insert("provider".into(), text(&f.provider));
        t.insert("model".into(), text(&f.model));
        Value::Table(t)
    });
    t.insert("fallbacks".into(), Value::Array(fallbacks.collect()));
    t.insert("fallback_wait".into(), duration(p.fallback_wait));
    t
}

fn cache(c: &CacheConfig) -> Value {
    let Some(c) = c.settings() else {
        return text("off");
    };
    let mut t = Table::new();
    t.insert("ttl".into(), duration(c.ttl));
    if let Some(namespace) = &c.namespace {
        t.insert("namespace".into(), text(namespace));
    }
    t.insert(
        "nondeterministic".into(),
        Value::Boolean(c.nondeterministic),
    );
    t.insert("lease".into(), duration(c.lease));
    t.insert("max_wait".into(), duration(c.max_wait));
    Value::Table(t)
}

fn limits(l: &LimitsConfig) -> Table {
    let mut t = Table::new();
    let models = l.models.iter().map(|m| {
        let mut t = Table::new();
        t.insert("provider".into(), text(&m.provider));
        t.insert("model".into(), text(&m.model));
        let counts = [
            ("rpm", m.rpm),
            ("tpm", m.tpm),
            ("burst_requests", m.burst_requests),
            ("burst_tokens", m.burst_tokens),
        ];
        for (key, count) in counts {
            if let Some(count) = count {
                t.insert(key.into(), int(count));
            }
        }
        t.insert("refund_unused".into(), Value::Boolean(m.refund_unused));
        Value::Table(t)
    });
    t.insert("models".into(), Value::Array(models.collect()));
    t.insert("redis_failure".into(), variant(l.redis_failure, ""));
    t.insert("max_wait".into(), duration(l.max_wait));
    t.insert("max_retry_after".into(), duration(l.max_retry_after));
    t
}

fn outbound(o: &OutboundConfig) -> Table {
    let mut t = Table::new();
    t.insert("allow_hosts".into(), strings(&o.allow_hosts));
    t.insert("allow_private".into(), Value::Boolean(o.allow_private));
    t
}
