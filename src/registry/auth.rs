//! Credentials from the Docker config (`DOCKER_CONFIG`, `~/.docker/config.json`):
//! `auths` entries, `credHelpers` and `credsStore` (calling `docker-credential-<name>`),
//! and parsing of `WWW-Authenticate` challenges.

use base64::Engine;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("reading docker config {path}: {source}")]
    Config {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("docker config {path} is not valid JSON: {source}")]
    ConfigJson {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("credential helper docker-credential-{helper} failed for {registry}: {reason}")]
    Helper {
        helper: String,
        registry: String,
        reason: String,
    },
}

/// A user name and secret for one registry.
#[derive(Debug, Clone, PartialEq)]
pub enum Credential {
    Basic {
        username: String,
        password: String,
    },
    /// An identity token from `docker login` against an OAuth2 registry.
    IdentityToken(String),
}

#[derive(Debug, Default, serde::Deserialize)]
struct ConfigFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
}

#[derive(Debug, Default, serde::Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

/// The Docker config in force for this process.
#[derive(Debug, Default)]
pub struct Keychain {
    config: ConfigFile,
    /// GitLab's job credentials (`CI_REGISTRY`, `CI_REGISTRY_USER`,
    /// `CI_REGISTRY_PASSWORD`), used where the config names no credentials for
    /// that registry, as the maintained Kaniko fork uses them.
    ci: Option<(String, Credential)>,
}

impl Keychain {
    /// Reads `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`; none is fine.
    pub fn load() -> Result<Keychain, AuthError> {
        let ci = gitlab(|k| std::env::var(k).ok());
        Ok(Keychain {
            ci,
            ..Self::load_config()?
        })
    }

    fn load_config() -> Result<Keychain, AuthError> {
        let dir = std::env::var_os("DOCKER_CONFIG")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker")));
        let Some(dir) = dir else {
            return Ok(Keychain::default());
        };
        let path = dir.join("config.json");
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Keychain::default()),
            Err(source) => return Err(AuthError::Config { path, source }),
        };
        let config = serde_json::from_slice(&text)
            .map_err(|source| AuthError::ConfigJson { path, source })?;
        Ok(Keychain { config, ci: None })
    }

    /// Credentials for `registry` (host[:port]); Docker Hub also under its legacy key.
    pub fn credential(&self, registry: &str) -> Result<Option<Credential>, AuthError> {
        let keys = registry_keys(registry);
        if let Some(helper) = keys.iter().find_map(|k| self.config.cred_helpers.get(k)) {
            return run_helper(helper, registry);
        }
        for (key, entry) in &self.config.auths {
            if keys.iter().any(|k| normalize_key(key) == *k) {
                if let Some(c) = entry_credential(entry) {
                    return Ok(Some(c));
                }
            }
        }
        if let Some((host, c)) = &self.ci {
            if keys.iter().any(|k| k == host) {
                return Ok(Some(c.clone()));
            }
        }
        match &self.config.creds_store {
            Some(store) => run_helper(store, registry),
            None => Ok(None),
        }
    }
}

/// GitLab's registry credentials from a job's variables, when all three are set.
fn gitlab(var: impl Fn(&str) -> Option<String>) -> Option<(String, Credential)> {
    let host = var("CI_REGISTRY").filter(|h| !h.is_empty())?;
    let username = var("CI_REGISTRY_USER").filter(|u| !u.is_empty())?;
    let password = var("CI_REGISTRY_PASSWORD").filter(|p| !p.is_empty())?;
    Some((
        normalize_key(&host),
        Credential::Basic { username, password },
    ))
}

fn registry_keys(registry: &str) -> Vec<String> {
    if registry == super::super::image::reference::DOCKER_HUB || registry == "docker.io" {
        vec![
            "index.docker.io".into(),
            "docker.io".into(),
            "registry-1.docker.io".into(),
        ]
    } else {
        vec![registry.to_string()]
    }
}

/// `https://host:port/v1/` → `host:port`.
fn normalize_key(key: &str) -> String {
    let k = key
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    k.split('/').next().unwrap_or(k).to_string()
}

fn entry_credential(e: &AuthEntry) -> Option<Credential> {
    if let Some(t) = e.identitytoken.as_ref().filter(|t| !t.is_empty()) {
        return Some(Credential::IdentityToken(t.clone()));
    }
    if let Some(auth) = e.auth.as_ref().filter(|a| !a.is_empty()) {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .ok()?;
        let s = String::from_utf8(raw).ok()?;
        let (u, p) = s.split_once(':')?;
        return Some(Credential::Basic {
            username: u.to_string(),
            password: p.to_string(),
        });
    }
    match (&e.username, &e.password) {
        (Some(u), Some(p)) => Some(Credential::Basic {
            username: u.clone(),
            password: p.clone(),
        }),
        _ => None,
    }
}

fn run_helper(helper: &str, registry: &str) -> Result<Option<Credential>, AuthError> {
    let fail = |reason: String| AuthError::Helper {
        helper: helper.to_string(),
        registry: registry.to_string(),
        reason,
    };
    let program = format!("docker-credential-{helper}");
    let mut child = match Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        // A helper the config names but nobody installed: silently anonymous
        // would fail later as "unauthorized", far from the cause.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(fail(format!(
                "{program} is not on PATH (install it, or remove it from the Docker config's credHelpers/credsStore)"
            )))
        }
        Err(e) => return Err(fail(e.to_string())),
    };
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(registry.as_bytes())
            .map_err(|e| fail(e.to_string()))?;
    }
    let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if msg.contains("credentials not found") {
            return Ok(None);
        }
        return Err(fail(format!("{}: {msg}", out.status)));
    }
    #[derive(serde::Deserialize)]
    struct HelperOut {
        #[serde(rename = "Username")]
        username: String,
        #[serde(rename = "Secret")]
        secret: String,
    }
    let h: HelperOut = serde_json::from_slice(&out.stdout).map_err(|e| fail(e.to_string()))?;
    Ok(Some(if h.username == "<token>" {
        Credential::IdentityToken(h.secret)
    } else {
        Credential::Basic {
            username: h.username,
            password: h.secret,
        }
    }))
}

/// A parsed `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

pub(crate) fn parse_challenge(header: &str) -> Option<Challenge> {
    let (scheme, params) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut realm = None;
    let mut service = None;
    let mut rest = params;
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let key = key.trim().trim_start_matches(',').trim();
        let after = after.trim_start();
        let (value, next) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"')?;
            (&q[..end], &q[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        match key {
            "realm" => realm = Some(value.to_string()),
            "service" => service = Some(value.to_string()),
            _ => {}
        }
        rest = next.trim_start_matches(',').trim_start();
    }
    Some(Challenge::Bearer {
        realm: realm?,
        service,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        assert_eq!(parse_challenge("Basic realm=\"x\""), Some(Challenge::Basic));
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.example/token",service="reg",scope="repository:a:pull""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("reg".into())
            })
        );
    }

    #[test]
    fn config_auths() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"auths":{"https://reg.example:5000/v1/":{"auth":"dXNlcjpwYXNz"},"other":{"username":"a","password":"b"}}}"#,
        )
        .unwrap();
        let text = std::fs::read(dir.path().join("config.json")).unwrap();
        let k = Keychain {
            config: serde_json::from_slice(&text).unwrap(),
            ci: None,
        };
        assert_eq!(
            k.credential("reg.example:5000").unwrap(),
            Some(Credential::Basic {
                username: "user".into(),
                password: "pass".into()
            })
        );
        assert_eq!(k.credential("nowhere").unwrap(), None);
    }

    #[test]
    fn gitlab_job_credentials_where_the_config_names_none() {
        let vars = |k: &str| {
            Some(match k {
                "CI_REGISTRY" => "gitlab.example:5050".to_string(),
                "CI_REGISTRY_USER" => "gitlab-ci-token".to_string(),
                _ => "job-token".to_string(),
            })
        };
        let ci = gitlab(vars);
        let job = Credential::Basic {
            username: "gitlab-ci-token".into(),
            password: "job-token".into(),
        };
        let k = Keychain {
            config: serde_json::from_str(r#"{"auths":{"other.example":{"auth":"dXNlcjpwYXNz"}}}"#)
                .unwrap(),
            ci: ci.clone(),
        };
        assert_eq!(k.credential("gitlab.example:5050").unwrap(), Some(job));
        assert_eq!(k.credential("elsewhere.example").unwrap(), None);
        // The config's own entry for that registry wins.
        let k = Keychain {
            config: serde_json::from_str(
                r#"{"auths":{"gitlab.example:5050":{"auth":"dXNlcjpwYXNz"}}}"#,
            )
            .unwrap(),
            ci,
        };
        assert!(matches!(
            k.credential("gitlab.example:5050").unwrap(),
            Some(Credential::Basic { username, .. }) if username == "user"
        ));
        assert!(gitlab(|k| (k != "CI_REGISTRY_PASSWORD").then(|| "x".to_string())).is_none());
    }

    #[test]
    fn a_missing_credential_helper_is_named() {
        let k = Keychain {
            config: serde_json::from_str(r#"{"credsStore":"kiln-missing-helper"}"#).unwrap(),
            ci: None,
        };
        let e = k.credential("reg.example").unwrap_err().to_string();
        assert!(
            e.contains("docker-credential-kiln-missing-helper is not on PATH"),
            "{e}"
        );
    }
}
