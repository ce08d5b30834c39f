//! The configuration file (TOML) and its defaults.
//!
//! Every setting is optional. Without a `[services]` base URL the CLI
//! starts the bundled sandbox; secrets are never written in the file but
//! named by environment variable (`secret_env`), so the file can be
//! shared and committed. A full example with every default is in the
//! README and in `docs/CONFIG.md`.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::retry::Policies;
use crate::services::{Endpoint, Endpoints};
use crate::store::Durability;

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Attempts in flight at once.
    pub concurrency: Option<usize>,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub services: ServicesConfig,
    #[serde(default)]
    pub retry: Policies,
}

/// `[store]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    pub path: Option<PathBuf>,
    #[serde(default)]
    pub durability: Durability,
}

/// `[services]`: one base URL for all, or one table per service.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServicesConfig {
    pub base_url: Option<String>,
    pub profile: ServiceConfig,
    pub payment: ServiceConfig,
    pub email: ServiceConfig,
    pub sms: ServiceConfig,
    pub activity: ServiceConfig,
}

/// `[services.NAME]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    pub base_url: Option<String>,
    /// The environment variable holding this service's token or key.
    pub secret_env: Option<String>,
    /// Sender: an e-mail address (email) or a phone number (sms).
    pub from: Option<String>,
    /// The Twilio account SID (sms only).
    pub account_sid: Option<String>,
}

/// A configuration that cannot be used, with what to change.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("could not read the configuration file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the configuration file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    /// Reads and checks a configuration file.
    ///
    /// # Errors
    ///
    /// The file cannot be read, is not valid TOML of this shape, or holds
    /// values that cannot work (each named).
    pub fn load(path: &Path) -> Result<Config, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        })?;
        let config: Config = toml::from_str(&text).map_err(|e| Error::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), Error> {
        self.retry
            .validate()
            .map_err(|e| Error::Invalid(e.to_string()))?;
        if let Some(n) = self.concurrency {
            if !(1..=MAX_CONCURRENCY).contains(&n) {
                return Err(Error::Invalid(format!(
                    "concurrency is {n}; it must be between 1 and {MAX_CONCURRENCY}"
                )));
            }
        }
        let services = &self.services;
        check_url("services.base_url", services.base_url.as_deref())?;
        check_url(
            "services.profile.base_url",
            services.profile.base_url.as_deref(),
        )?;
        check_url(
            "services.payment.base_url",
            services.payment.base_url.as_deref(),
        )?;
        check_url(
            "services.email.base_url",
            services.email.base_url.as_deref(),
        )?;
        check_url("services.sms.base_url", services.sms.base_url.as_deref())?;
        check_url(
            "services.activity.base_url",
            services.activity.base_url.as_deref(),
        )?;
        Ok(())
    }

    /// The service endpoints, or `None` when nothing says where the
    /// services are (the CLI then starts the sandbox). `override_url`
    /// (the `--services` flag) sends every service to one base URL.
    ///
    /// # Errors
    ///
    /// Some services have a base URL and others have none, or a
    /// `secret_env` names a variable that is not set.
    pub fn endpoints(&self, override_url: Option<&str>) -> Result<Option<Endpoints>, Error> {
        let services = &self.services;
        let shared = override_url.or(services.base_url.as_deref());
        let named = [
            ("profile", &services.profile),
            ("payment", &services.payment),
            ("email", &services.email),
            ("sms", &services.sms),
            ("activity", &services.activity),
        ];
        if shared.is_none() && named.iter().all(|(_, s)| s.base_url.is_none()) {
            return Ok(None);
        }

        let endpoint = |name: &str, service: &ServiceConfig| -> Result<Endpoint, Error> {
            let base = override_url
                .or(service.base_url.as_deref())
                .or(shared)
                .ok_or_else(|| {
                    Error::Invalid(format!(
                        "services.{name}.base_url is not set: set it, or set services.base_url \
                         for all services"
                    ))
                })?;
            let mut endpoint = Endpoint::new(base);
            endpoint.secret = secret(name, service)?;
            Ok(endpoint)
        };

        check_url("--services", override_url)?;
        let mut endpoints = Endpoints::all_at("");
        endpoints.profile = endpoint("profile", &services.profile)?;
        endpoints.payment = endpoint("payment", &services.payment)?;
        endpoints.email = endpoint("email", &services.email)?;
        endpoints.sms = endpoint("sms", &services.sms)?;
        endpoints.activity = endpoint("activity", &services.activity)?;
        if let Some(from) = &services.email.from {
            endpoints.email_from.clone_from(from);
        }
        if let Some(from) = &services.sms.from {
            endpoints.sms_from.clone_from(from);
        }
        if let Some(sid) = &services.sms.account_sid {
            endpoints.sms_account_sid.clone_from(sid);
        }
        Ok(Some(endpoints))
    }
}

/// The most attempts in flight that a configuration may ask for.
pub const MAX_CONCURRENCY: usize = 10_000;

/// A base URL must be absolute http or https, with a host.
fn check_url(name: &str, url: Option<&str>) -> Result<(), Error> {
    let Some(url) = url else {
        return Ok(());
    };
    let ok = reqwest::Url::parse(url)
        .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "{name} is {url:?}; it must be an http:// or https:// URL, \
             for example http://127.0.0.1:8080"
        )))
    }
}

fn secret(name: &str, service: &ServiceConfig) -> Result<Option<String>, Error> {
    let Some(var) = &service.secret_env else {
        return Ok(None);
    };
    match std::env::var(var) {
        Ok(value) if !value.is_empty() => Ok(Some(value)),
        _ => Err(Error::Invalid(format!(
            "services.{name}.secret_env names the environment variable {var}, which is not set"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn parse(text: &str) -> Result<Config, Error> {
        let config: Config = toml::from_str(text).map_err(|e| Error::Parse {
            path: "test.toml".into(),
            message: e.to_string(),
        })?;
        config.check()?;
        Ok(config)
    }

    #[test]
    fn empty_file_means_defaults_and_sandbox() {
        let config = parse("").unwrap();
        assert_eq!(config.retry, Policies::default());
        assert_eq!(config.store.durability, Durability::Power);
        assert!(config.endpoints(None).unwrap().is_none());
    }

    /// The example in docs/CONFIG.md is valid and shows the defaults.
    #[test]
    fn documented_example_matches_the_defaults() {
        let doc = include_str!("../docs/CONFIG.md");
        let start = doc.find("```toml\n").expect("toml block") + 8;
        let end = start + doc[start..].find("```").expect("end of block");
        let config = parse(&doc[start..end]).unwrap();

        assert_eq!(config.retry, Policies::default());
        assert_eq!(config.concurrency, Some(crate::engine::DEFAULT_CONCURRENCY));
        assert_eq!(config.store.durability, Durability::Power);
        let defaults = Endpoints::all_at("");
        assert_eq!(
            config.services.email.from.as_deref(),
            Some(defaults.email_from.as_str())
        );
        assert_eq!(
            config.services.sms.from.as_deref(),
            Some(defaults.sms_from.as_str())
        );
    }

    #[test]
    fn retry_settings_are_read() {
        let config = parse(
            r#"
            [retry.external]
            attempt_timeout = "2s"
            max_attempts = 4
            "#,
        )
        .unwrap();
        assert_eq!(
            config.retry.external.attempt_timeout,
            Duration::from_secs(2)
        );
        assert_eq!(config.retry.external.max_attempts, 4);
        assert_eq!(config.retry.internal, crate::retry::RetryPolicy::internal());
    }

    #[test]
    fn impossible_values_are_refused_by_name() {
        let err = parse("[retry.internal]\nmax_attempts = 0\n").unwrap_err();
        assert!(err.to_string().contains("internal services"), "{err}");
        let err = parse("[retry.external]\nbackoff_coeficient = 2.0\n").unwrap_err();
        assert!(err.to_string().contains("backoff_coeficient"), "{err}");
    }

    #[test]
    fn partial_service_urls_name_the_missing_one() {
        let config = parse("[services.profile]\nbase_url = \"http://p\"\n").unwrap();
        let err = config.endpoints(None).unwrap_err();
        assert!(
            err.to_string().contains("services.payment.base_url"),
            "{err}"
        );
        let all = config.endpoints(Some("http://x/")).unwrap().unwrap();
        assert_eq!(all.payment.base_url, "http://x");
    }

    #[test]
    fn bad_urls_and_concurrency_are_refused_by_name() {
        for (text, name) in [
            (
                "[services]\nbase_url = \"not a url\"\n",
                "services.base_url",
            ),
            (
                "[services.sms]\nbase_url = \"ftp://x\"\n",
                "services.sms.base_url",
            ),
            ("concurrency = 100000\n", "concurrency"),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(name), "{err}");
        }
        let err = Config::default().endpoints(Some("notaurl")).unwrap_err();
        assert!(err.to_string().contains("--services"), "{err}");
    }

    #[test]
    fn missing_secret_variable_is_named() {
        let config = parse(
            "[services]\nbase_url = \"http://x\"\n[services.payment]\n\
             secret_env = \"REGSAGA_TEST_SURELY_UNSET\"\n",
        )
        .unwrap();
        let err = config.endpoints(None).unwrap_err();
        assert!(
            err.to_string().contains("REGSAGA_TEST_SURELY_UNSET"),
            "{err}"
        );
    }
}
