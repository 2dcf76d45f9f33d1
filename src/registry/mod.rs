//! The registry protocol (distribution v2): manifests, blobs, cross-repo mounts,
//! uploads; auth from the Docker config with Basic and Bearer challenges; plain
//! HTTP for loopback and `--insecure-registry` hosts; retries with backoff.

pub mod auth;
mod blobs;
pub(crate) mod files;
mod manifests;
mod retry;
mod roots;
mod token;

use retry::{backoff, retry_after, retryable_status, wait_to_retry};
mod transport;

use crate::image::reference::Reference;
use crate::image::Digest;
use auth::{parse_challenge, Challenge, Keychain};
use reqwest::header::AUTHORIZATION;
use reqwest::{Client, RequestBuilder, Response, StatusCode};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{op} {registry}/{repository}: {source}")]
    Http {
        op: String,
        registry: String,
        repository: String,
        source: reqwest::Error,
    },
    #[error("{op} {registry}/{repository}: {status}{hint}: {body}")]
    Status {
        op: String,
        registry: String,
        repository: String,
        status: StatusCode,
        hint: &'static str,
        body: String,
    },
    #[error("{what} from {registry}/{repository} has digest {actual}, expected {expected}")]
    DigestMismatch {
        what: String,
        registry: String,
        repository: String,
        expected: String,
        actual: String,
    },
    #[error("{op} {registry}: server gave HTTP response to HTTPS client; if {registry} is a plain-HTTP registry, pass --insecure-registry {registry}")]
    PlainHttp { op: String, registry: String },
    #[error("{op} {registry}: {cause}; pass --skip-tls-verify-registry {registry} to skip verification, or trust its CA certificate (SSL_CERT_FILE=ca.pem)")]
    Tls {
        op: String,
        registry: String,
        cause: String,
    },
    #[error("{op} {registry}: {cause}; give one with --registry-client-cert {registry}=CERT.pem,KEY.pem")]
    ClientCertificate {
        op: String,
        registry: String,
        cause: String,
    },
    #[error("{what} from {registry}/{repository} is larger than {limit} bytes (refused)")]
    TooLarge {
        what: String,
        registry: String,
        repository: String,
        limit: u64,
    },
    #[error("{op} {registry}/{repository}: timed out (no data for {idle_secs} s)")]
    TimedOut {
        op: String,
        registry: String,
        repository: String,
        idle_secs: u64,
    },
    #[error("authenticating to {registry}: {reason}")]
    Auth { registry: String, reason: String },
    #[error(transparent)]
    Credentials(#[from] auth::AuthError),
    #[error("{op}: {source}")]
    Io { op: String, source: std::io::Error },
}

/// The largest manifest read (distribution refuses larger ones too).
pub(crate) const MAX_MANIFEST_BYTES: usize = 4 << 20;

/// A connection that sends no byte for this long is given up (and retried).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The largest image config read: it is held in memory.
pub(crate) const MAX_CONFIG_BYTES: u64 = 16 << 20;

/// How to reach registries: which are plain HTTP or unverified TLS, how often to retry.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    pub insecure_push: bool,
    pub insecure_pull: bool,
    pub insecure_registries: Vec<String>,
    pub skip_tls_verify_push: bool,
    pub skip_tls_verify_pull: bool,
    pub skip_tls_verify_registries: Vec<String>,
    /// Extra attempts after a 5xx, 429, reset or timeout.
    pub retries: u32,
    /// Where to pull a registry's images from first, in order (Kaniko's
    /// `--registry-map REGISTRY=HOST[/PREFIX]`; `--registry-mirror` maps Docker Hub).
    pub mirrors: Vec<(String, Vec<String>)>,
    /// Never pull from a mapped registry itself when its mirrors fail.
    pub skip_default_registry_fallback: bool,
    /// A registry's own CA certificates (PEM), trusted beside the system's.
    pub certificates: Vec<(String, PathBuf)>,
    /// A registry's client certificate and key (PEM), for mutual TLS.
    pub client_certs: Vec<(String, PathBuf, PathBuf)>,
}

/// What a request needs the token to allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Access {
    Pull,
    Push,
}

/// A manifest exactly as the registry sent it.
#[derive(Debug, Clone)]
pub struct RawManifest {
    pub bytes: Vec<u8>,
    pub media_type: String,
    pub digest: Digest,
}

/// The pull and push phases' layers, bytes and wall time, for the log and
/// the summary (the bytes under way are on the terminal view's bars).
#[derive(Debug, Default)]
pub struct Transfer {
    /// Layer downloads (the blob store's).
    pub pull: crate::report::Phase,
    /// Blob uploads to destinations (publish's).
    pub push: crate::report::Phase,
}

pub struct Registry {
    /// The phases' totals, read by the summary.
    pub transfer: std::sync::Arc<Transfer>,
    http: Client,
    http_unverified: Client,
    /// Clients for registries with their own certificates.
    own: HashMap<String, Client>,
    opts: RegistryOptions,
    keychain: Keychain,
    challenges: Mutex<HashMap<String, Option<Challenge>>>,
    tokens: Mutex<HashMap<String, String>>,
    /// The scheme found by probing, per registry and TLS verification setting.
    schemes: Mutex<HashMap<(String, bool), SchemeCell>>,
    /// Upload sessions the push check opened, by registry and repository: the
    /// first layer uploaded there uses one instead of opening its own.
    spare_uploads: Mutex<HashMap<(String, String), String>>,
    /// Blobs this client put in place (or is putting), by registry, repository
    /// and digest: see [`Registry::place_once`].
    placed: Mutex<HashMap<(String, String, String), PlacedCell>>,
}

type PlacedCell = std::sync::Arc<tokio::sync::OnceCell<()>>;

type SchemeCell = std::sync::Arc<tokio::sync::OnceCell<&'static str>>;

/// One repository on one registry, with the access wanted and repositories to mount from.
struct Scope<'a> {
    registry: &'a str,
    repository: &'a str,
    access: Access,
    mount_from: Option<&'a str>,
}

impl<'a> Scope<'a> {
    fn of(r: &'a Reference, access: Access) -> Scope<'a> {
        Scope {
            registry: &r.registry,
            repository: &r.repository,
            access,
            mount_from: None,
        }
    }

    fn key(&self) -> String {
        let mut k = format!("{}|{}", self.registry, self.scope_param());
        if let Some(from) = self.mount_from {
            k.push_str(&format!("|repository:{from}:pull"));
        }
        k
    }
    fn scope_param(&self) -> String {
        let actions = match self.access {
            Access::Pull => "pull",
            Access::Push => "pull,push",
        };
        format!("repository:{}:{actions}", self.repository)
    }
}

impl Registry {
    pub fn new(opts: RegistryOptions, keychain: Keychain) -> Result<Registry, RegistryError> {
        let http_err = |registry: &str| {
            let registry = registry.to_string();
            move |source| RegistryError::Http {
                op: "creating HTTP client".into(),
                registry,
                repository: String::new(),
                source,
            }
        };
        let builder = |verify: bool| {
            Client::builder()
                .danger_accept_invalid_certs(!verify)
                .pool_max_idle_per_host(8)
                .connect_timeout(Duration::from_secs(30))
                .read_timeout(IDLE_TIMEOUT)
                .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
        };
        let read = |flag: &str, p: &Path| {
            std::fs::read(p).map_err(|source| RegistryError::Io {
                op: format!("reading --{flag} file {}", p.display()),
                source,
            })
        };
        // Registries with their own CA or client certificate get a client of their own.
        let mut own: HashMap<String, reqwest::ClientBuilder> = HashMap::new();
        for (registry, ca) in &opts.certificates {
            let pem = read("registry-certificate", ca)?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(http_err(registry))?;
            let mut b = own.remove(registry).unwrap_or_else(|| builder(true));
            for c in certs {
                b = b.add_root_certificate(c);
            }
            own.insert(registry.clone(), b);
        }
        for (registry, cert, key) in &opts.client_certs {
            let mut pem = read("registry-client-cert", cert)?;
            pem.extend(read("registry-client-cert", key)?);
            let identity = reqwest::Identity::from_pem(&pem).map_err(http_err(registry))?;
            let b = own.remove(registry).unwrap_or_else(|| builder(true));
            own.insert(registry.clone(), b.identity(identity));
        }
        let own = own
            .into_iter()
            .map(|(r, b)| {
                let client = b.build().map_err(http_err(&r))?;
                Ok((r, client))
            })
            .collect::<Result<HashMap<_, _>, RegistryError>>()?;
        let tls = roots::client_config().map_err(|e| RegistryError::Tls {
            op: "creating HTTP client".into(),
            registry: String::new(),
            cause: e.to_string(),
        })?;
        Ok(Registry {
            transfer: Default::default(),
            // Its roots are read at the first certificate ([`roots`]).
            http: builder(true)
                .use_preconfigured_tls(tls)
                .build()
                .map_err(http_err(""))?,
            // Verifies nothing: reading the system's roots for it (reqwest does)
            // would cost every build about 10 ms.
            http_unverified: builder(false)
                .tls_built_in_root_certs(false)
                .build()
                .map_err(http_err(""))?,
            own,
            opts,
            keychain,
            challenges: Mutex::new(HashMap::new()),
            tokens: Mutex::new(HashMap::new()),
            schemes: Mutex::new(HashMap::new()),
            spare_uploads: Mutex::new(HashMap::new()),
            placed: Mutex::new(HashMap::new()),
        })
    }

    /// Whether plain HTTP may be used: a registry named insecure for this access, or
    /// one that looks local (go-containerregistry's rules).
    fn plain_allowed(&self, registry: &str, access: Access) -> bool {
        transport::looks_local(registry)
            || self.opts.insecure_registries.iter().any(|r| r == registry)
            || match access {
                Access::Pull => self.opts.insecure_pull,
                Access::Push => self.opts.insecure_push,
            }
    }

    /// The references to try before `r` itself: `r` on each of its registry's
    /// mirrors, the mirror's path prefix before the repository.
    pub(crate) fn mirrors_of(&self, r: &Reference) -> Vec<Reference> {
        self.opts
            .mirrors
            .iter()
            .filter(|(from, _)| *from == r.registry)
            .flat_map(|(_, to)| to.iter())
            .map(|to| {
                let (host, prefix) = to.split_once('/').unwrap_or((to.as_str(), ""));
                let prefix = prefix.trim_matches('/');
                Reference {
                    registry: host.to_string(),
                    repository: if prefix.is_empty() {
                        r.repository.clone()
                    } else {
                        format!("{prefix}/{}", r.repository)
                    },
                    ..r.clone()
                }
            })
            .collect()
    }

    pub(crate) fn skip_default_registry_fallback(&self) -> bool {
        self.opts.skip_default_registry_fallback
    }

    fn skip_verify(&self, registry: &str, access: Access) -> bool {
        self.opts
            .skip_tls_verify_registries
            .iter()
            .any(|r| r == registry)
            || match access {
                Access::Pull => self.opts.skip_tls_verify_pull,
                Access::Push => self.opts.skip_tls_verify_push,
            }
    }

    /// `scheme://host` for a registry. Where plain HTTP is allowed, the scheme is
    /// found once by probing `/v2/`: HTTPS first, plain HTTP if HTTPS fails.
    async fn base_url(&self, op: &str, scope: &Scope<'_>) -> Result<String, RegistryError> {
        let registry = scope.registry;
        let host = if registry == crate::image::reference::DOCKER_HUB {
            "registry-1.docker.io"
        } else {
            registry
        };
        if !self.plain_allowed(registry, scope.access) {
            return Ok(format!("https://{host}"));
        }
        let key = (
            registry.to_string(),
            self.skip_verify(registry, scope.access),
        );
        let cell = Self::lock(&self.schemes).entry(key).or_default().clone();
        let scheme = cell
            .get_or_try_init(|| self.probe_scheme(op, scope, host))
            .await?;
        Ok(format!("{scheme}://{host}"))
    }

    async fn probe_scheme(
        &self,
        op: &str,
        scope: &Scope<'_>,
        host: &str,
    ) -> Result<&'static str, RegistryError> {
        let client = self.client(scope.registry, scope.access);
        let mut attempt = 0;
        loop {
            let https_err = match client.get(format!("https://{host}/v2/")).send().await {
                Ok(resp) => {
                    self.learn_challenge(scope.registry, &resp);
                    return Ok("https");
                }
                Err(e) => e,
            };
            let http_err = match client.get(format!("http://{host}/v2/")).send().await {
                // 400 is what a TLS port answers to plain HTTP.
                Ok(resp) if resp.status() != StatusCode::BAD_REQUEST => {
                    self.learn_challenge(scope.registry, &resp);
                    return Ok("http");
                }
                Ok(_) => None,
                Err(e) => Some(e),
            };
            // A TLS failure says more than plain HTTP's; else report the plain-HTTP one.
            let err = match http_err {
                Some(e) if transport::connect_failure(&https_err).is_none() => e,
                _ => https_err,
            };
            if !Self::transient(&err) || attempt >= self.opts.retries {
                return Err(Self::request_error(op, scope, err));
            }
            wait_to_retry(op, scope, &mut attempt, None).await;
        }
    }

    /// Failures worth another try: not TLS problems, which retrying cannot fix.
    fn transient(e: &reqwest::Error) -> bool {
        transport::connect_failure(e).is_none()
            && (e.is_connect() || e.is_timeout() || e.is_request() || e.is_body())
    }

    fn request_error(op: &str, scope: &Scope<'_>, source: reqwest::Error) -> RegistryError {
        match transport::connect_failure(&source) {
            Some(transport::ConnectFailure::PlainHttpServer) => RegistryError::PlainHttp {
                op: op.to_string(),
                registry: scope.registry.to_string(),
            },
            Some(transport::ConnectFailure::Tls(cause)) => RegistryError::Tls {
                op: op.to_string(),
                registry: scope.registry.to_string(),
                cause,
            },
            Some(transport::ConnectFailure::ClientCertificate(cause)) => {
                RegistryError::ClientCertificate {
                    op: op.to_string(),
                    registry: scope.registry.to_string(),
                    cause,
                }
            }
            None if source.is_timeout() => RegistryError::TimedOut {
                op: op.to_string(),
                registry: scope.registry.to_string(),
                repository: scope.repository.to_string(),
                idle_secs: IDLE_TIMEOUT.as_secs(),
            },
            None => RegistryError::Http {
                op: op.to_string(),
                registry: scope.registry.to_string(),
                repository: scope.repository.to_string(),
                source,
            },
        }
    }

    fn client(&self, registry: &str, access: Access) -> &Client {
        if self.skip_verify(registry, access) {
            &self.http_unverified
        } else {
            self.own.get(registry).unwrap_or(&self.http)
        }
    }

    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends a request built by `build`, answering one auth challenge and retrying
    /// transient failures with exponential backoff (honouring Retry-After).
    async fn send<F>(
        &self,
        op: &str,
        scope: &Scope<'_>,
        build: F,
    ) -> Result<Response, RegistryError>
    where
        F: Fn(&Client, &str) -> Result<RequestBuilder, RegistryError>,
    {
        let base = self.base_url(op, scope).await?;
        let client = self.client(scope.registry, scope.access);
        let mut attempt = 0;
        let mut authed = false;
        loop {
            let mut req = build(client, &base)?;
            if let Some(h) = self.auth_header(scope).await? {
                req = req.header(AUTHORIZATION, h);
            }
            let result = req.send().await;
            let retry_after = match result {
                Ok(resp) if resp.status() == StatusCode::UNAUTHORIZED && !authed => {
                    authed = true;
                    let challenge = resp
                        .headers()
                        .get("www-authenticate")
                        .and_then(|v| v.to_str().ok())
                        .and_then(parse_challenge);
                    if challenge.is_none() {
                        return Ok(resp);
                    }
                    Self::lock(&self.challenges).insert(scope.registry.to_string(), challenge);
                    Self::lock(&self.tokens).remove(&scope.key());
                    continue;
                }
                Ok(resp) if retryable_status(resp.status()) && attempt < self.opts.retries => {
                    retry_after(resp.headers())
                }
                Ok(resp) => return Ok(resp),
                Err(e) if attempt < self.opts.retries && Self::transient(&e) => None,
                Err(e) => return Err(Self::request_error(op, scope, e)),
            };
            wait_to_retry(op, scope, &mut attempt, retry_after).await;
        }
    }

    fn status_error(
        op: &str,
        scope: &Scope<'_>,
        status: StatusCode,
        body: String,
    ) -> RegistryError {
        let hint = match status {
            StatusCode::UNAUTHORIZED => " (no or wrong credentials in the docker config)",
            StatusCode::FORBIDDEN => " (the credentials are not allowed this)",
            StatusCode::NOT_FOUND => " (not found)",
            _ => "",
        };
        RegistryError::Status {
            op: op.to_string(),
            registry: scope.registry.to_string(),
            repository: scope.repository.to_string(),
            status,
            hint,
            body: body.trim().chars().take(500).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_is_allowed_as_go_containerregistry_allows_it() {
        let r = Registry::new(
            RegistryOptions {
                insecure_registries: vec!["reg.svc:5000".into()],
                insecure_push: true,
                ..Default::default()
            },
            Keychain::default(),
        )
        .unwrap();
        assert!(r.plain_allowed("127.0.0.1:5000", Access::Pull));
        assert!(r.plain_allowed("reg.svc:5000", Access::Pull));
        assert!(r.plain_allowed("registry.kube-system.svc.cluster.local:5000", Access::Pull));
        assert!(r.plain_allowed("ghcr.io", Access::Push));
        assert!(!r.plain_allowed("ghcr.io", Access::Pull));
    }

    /// Concurrent placements of one blob run once; another repository's is its
    /// own; a failed one leaves the next caller to try.
    #[test]
    fn a_blob_is_placed_once_per_repository() {
        let r = Registry::new(RegistryOptions::default(), Keychain::default()).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let runs = std::sync::atomic::AtomicUsize::new(0);
        let place = |how: &'static str| {
            let runs = &runs;
            move || async move {
                runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::task::yield_now().await;
                if how == "fails" {
                    Err("refused")
                } else {
                    Ok(how)
                }
            }
        };
        let a = Reference::parse("reg.test/a:1").unwrap();
        let b = Reference::parse("reg.test/b:1").unwrap();
        runtime.block_on(async {
            let (one, two) = tokio::join!(
                r.place_once(&a, "sha256:1", place("uploaded")),
                r.place_once(&a, "sha256:1", place("uploaded"))
            );
            assert_eq!((one, two), (Ok(Some("uploaded")), Ok(None)));
            assert_eq!(
                r.place_once(&a, "sha256:1", place("uploaded")).await,
                Ok(None)
            );
            assert_eq!(
                r.place_once(&b, "sha256:1", place("mounted")).await,
                Ok(Some("mounted"))
            );
            assert_eq!(
                r.place_once(&a, "sha256:2", place("fails")).await,
                Err("refused")
            );
            assert_eq!(
                r.place_once(&a, "sha256:2", place("uploaded")).await,
                Ok(Some("uploaded"))
            );
        });
        assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 4);
    }
}
