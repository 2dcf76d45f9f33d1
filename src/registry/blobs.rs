//! Blob transfers: existence checks, verified downloads (from the registry or a
//! foreign layer's URL), cross-repository mounts, uploads and the push check.

use super::{
    retry_after, retryable_status, transport, wait_to_retry, Access, Registry, RegistryError, Scope,
};
use crate::image::reference::Reference;
use crate::image::Digest;
use reqwest::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use reqwest::{Response, StatusCode};
use sha2::{Digest as _, Sha256};
use std::path::Path;
use tokio::io::AsyncWriteExt;

impl Registry {
    /// Runs `place`, which puts one blob in `r`'s repository (a check, a mount,
    /// an upload), once per blob and repository for this client: a caller that
    /// finds it placed, or being placed, waits and gets `None`; a failed
    /// placement leaves the next caller to try. Distribution's filesystem
    /// storage rewrites a blob's link in the repository in place, so a second
    /// placement of it lets a manifest put at the same time find the link empty
    /// (400 DIGEST_INVALID, MANIFEST_BLOB_UNKNOWN): cache entries of stages or
    /// platforms whose steps made one layer did.
    pub(crate) async fn place_once<T, E, Fut>(
        &self,
        r: &Reference,
        digest: &str,
        place: impl FnOnce() -> Fut,
    ) -> Result<Option<T>, E>
    where
        Fut: std::future::Future<Output = Result<T, E>>,
    {
        let key = (r.registry.clone(), r.repository.clone(), digest.to_string());
        let cell = Self::lock(&self.placed).entry(key).or_default().clone();
        let mut placed_here = None;
        let slot = &mut placed_here;
        cell.get_or_try_init(move || async move {
            *slot = Some(place().await?);
            Ok::<(), E>(())
        })
        .await?;
        Ok(placed_here)
    }

    /// Whether the repository already holds a blob.
    pub(crate) async fn blob_exists(
        &self,
        r: &Reference,
        digest: &str,
        access: Access,
    ) -> Result<bool, RegistryError> {
        let scope = Scope {
            registry: &r.registry,
            repository: &r.repository,
            access,
            mount_from: None,
        };
        let op = format!("checking blob {digest}");
        let path = format!("/v2/{}/blobs/{digest}", r.repository);
        let resp = self
            .send(&op, &scope, |c, base| Ok(c.head(format!("{base}{path}"))))
            .await?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            s => Err(Self::status_error(&op, &scope, s, String::new())),
        }
    }

    /// Downloads a blob into `dest`, verifying its digest as it streams and reading
    /// no more than the descriptor's `size`.
    pub(crate) async fn download_blob(
        &self,
        r: &Reference,
        digest: &Digest,
        size: u64,
        dest: &Path,
    ) -> Result<u64, RegistryError> {
        let scope = Scope::of(r, Access::Pull);
        let op = format!("downloading blob {digest}");
        let path = format!("/v2/{}/blobs/{digest}", r.repository);
        self.download_verified(&op, &scope, digest, size, dest, || {
            self.send(&op, &scope, |c, base| Ok(c.get(format!("{base}{path}"))))
        })
        .await
    }

    /// Downloads a foreign layer from one of its descriptor's `urls` (never with the
    /// registry's credentials), verified like any blob.
    pub(crate) async fn download_url(
        &self,
        r: &Reference,
        url: &str,
        digest: &Digest,
        size: u64,
        dest: &Path,
    ) -> Result<u64, RegistryError> {
        let scope = Scope::of(r, Access::Pull);
        let op = format!("downloading foreign layer {digest} from {url}");
        let client = self.client(&r.registry, Access::Pull);
        self.download_verified(&op, &scope, digest, size, dest, || async {
            client
                .get(url)
                .send()
                .await
                .map_err(|e| Self::request_error(&op, &scope, e))
        })
        .await
    }

    /// Streams the response of `fetch` into `dest`, hashing as it goes; a body cut
    /// short is fetched again, within the retry budget.
    async fn download_verified<F, Fut>(
        &self,
        op: &str,
        scope: &Scope<'_>,
        digest: &Digest,
        size: u64,
        dest: &Path,
        fetch: F,
    ) -> Result<u64, RegistryError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<Response, RegistryError>>,
    {
        let io = |source| RegistryError::Io {
            op: format!("writing {}", dest.display()),
            source,
        };
        let mut last_err = None;
        let bar = crate::progress::bar(crate::progress::Kind::Download, digest.as_str(), size);
        for _ in 0..=self.opts.retries {
            last_err = None;
            bar.restart();
            let mut resp = fetch().await?;
            if !resp.status().is_success() {
                let status = resp.status();
                let body = resp.text().await.unwrap_or_default();
                return Err(Self::status_error(op, scope, status, body));
            }
            let mut file = tokio::fs::File::create(dest).await.map_err(io)?;
            let mut hasher = Sha256::new();
            let mut got = 0u64;
            loop {
                match resp.chunk().await {
                    Ok(Some(chunk)) => {
                        bar.add(chunk.len() as u64);
                        got += chunk.len() as u64;
                        if got > size {
                            return Err(RegistryError::TooLarge {
                                what: format!("blob {digest}"),
                                registry: scope.registry.to_string(),
                                repository: scope.repository.to_string(),
                                limit: size,
                            });
                        }
                        hasher.update(&chunk);
                        file.write_all(&chunk).await.map_err(io)?;
                    }
                    Ok(None) => break,
                    Err(e) => {
                        let e = Self::request_error(op, scope, e);
                        crate::log_warn!("{e}; trying again");
                        last_err = Some(e);
                        break;
                    }
                }
            }
            if last_err.is_some() {
                continue;
            }
            file.flush().await.map_err(io)?;
            let actual = Digest::from_sha256(hasher.finalize().into());
            if actual != *digest {
                return Err(RegistryError::DigestMismatch {
                    what: "blob".into(),
                    registry: scope.registry.to_string(),
                    repository: scope.repository.to_string(),
                    expected: digest.to_string(),
                    actual: actual.to_string(),
                });
            }
            bar.done();
            return Ok(got);
        }
        Err(last_err.unwrap_or_else(|| RegistryError::Io {
            op: format!("{op} {}", scope.registry),
            source: std::io::Error::other("no attempt was made"),
        }))
    }

    /// Mounts a blob from another repository of the same registry; false if the
    /// registry declined (the caller then uploads).
    pub(crate) async fn mount_blob(
        &self,
        target: &Reference,
        digest: &str,
        from: &str,
    ) -> Result<bool, RegistryError> {
        let scope = Scope {
            registry: &target.registry,
            repository: &target.repository,
            access: Access::Push,
            mount_from: Some(from),
        };
        let op = format!("mounting blob {digest} from {from}");
        let path = format!(
            "/v2/{}/blobs/uploads/?mount={digest}&from={from}",
            target.repository
        );
        let resp = self
            .send(&op, &scope, |c, base| {
                Ok(c.post(format!("{base}{path}")).header(CONTENT_LENGTH, 0))
            })
            .await?;
        match resp.status() {
            StatusCode::CREATED => Ok(true),
            StatusCode::ACCEPTED => Ok(false),
            s => {
                let body = resp.text().await.unwrap_or_default();
                Err(Self::status_error(&op, &scope, s, body))
            }
        }
    }

    /// Opens an upload session; returns its absolute URL.
    async fn start_upload(&self, op: &str, scope: &Scope<'_>) -> Result<String, RegistryError> {
        let start = format!("/v2/{}/blobs/uploads/", scope.repository);
        let resp = self
            .send(op, scope, |c, base| {
                Ok(c.post(format!("{base}{start}")).header(CONTENT_LENGTH, 0))
            })
            .await?;
        if resp.status() != StatusCode::ACCEPTED {
            let s = resp.status();
            let body = resp.text().await.unwrap_or_default();
            return Err(Self::status_error(op, scope, s, body));
        }
        let location = resp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                Self::status_error(
                    op,
                    scope,
                    StatusCode::ACCEPTED,
                    "upload session without Location".into(),
                )
            })?
            .to_string();
        if location.starts_with("http://") || location.starts_with("https://") {
            Ok(location)
        } else {
            Ok(format!("{}{location}", self.base_url(op, scope).await?))
        }
    }

    /// Kaniko's push permission check: opens an upload session, so scheme, TLS
    /// and credential problems with a destination show before the build. The
    /// session is kept for the first layer uploaded there (one request less on
    /// the push's path); [`Registry::cancel_spare_uploads`] ends it if unused.
    pub async fn check_push(&self, target: &Reference) -> Result<(), RegistryError> {
        let scope = Scope::of(target, Access::Push);
        let url = self.start_upload("checking push access", &scope).await?;
        let key = (target.registry.clone(), target.repository.clone());
        let old = Self::lock(&self.spare_uploads).insert(key, url);
        if let Some(old) = old {
            self.cancel_upload(&scope, old).await;
        }
        Ok(())
    }

    /// Ends the upload sessions no layer took (their answers do not matter).
    pub async fn cancel_spare_uploads(&self) {
        let spare: Vec<_> = Self::lock(&self.spare_uploads).drain().collect();
        let cancels = spare
            .into_iter()
            .map(|((registry, repository), url)| async move {
                let scope = Scope {
                    registry: &registry,
                    repository: &repository,
                    access: Access::Push,
                    mount_from: None,
                };
                self.cancel_upload(&scope, url).await;
            });
        futures_util::future::join_all(cancels).await;
    }

    async fn cancel_upload(&self, scope: &Scope<'_>, url: String) {
        let mut req = self.client(scope.registry, Access::Push).delete(url);
        if let Ok(Some(h)) = self.auth_header(scope).await {
            req = req.header(AUTHORIZATION, h);
        }
        let _ = req.send().await;
    }

    /// [`Registry::upload_blob`] for a layer: into the session the push check
    /// left for its repository, if there is one.
    pub(crate) async fn upload_layer(
        &self,
        target: &Reference,
        digest: &str,
        file: &Path,
    ) -> Result<(), RegistryError> {
        let key = (target.registry.clone(), target.repository.clone());
        let spare = Self::lock(&self.spare_uploads).remove(&key);
        self.upload(target, digest, file, spare).await
    }

    /// Uploads a blob from a file in one PUT after opening an upload session.
    pub async fn upload_blob(
        &self,
        target: &Reference,
        digest: &str,
        file: &Path,
    ) -> Result<(), RegistryError> {
        self.upload(target, digest, file, None).await
    }

    /// [`Registry::upload_blob`], first into the session `spare` if given; when
    /// that fails in any way (the registry may have ended it), a session of its
    /// own is opened at once, as if the spare had never been.
    async fn upload(
        &self,
        target: &Reference,
        digest: &str,
        file: &Path,
        mut spare: Option<String>,
    ) -> Result<(), RegistryError> {
        let scope = Scope::of(target, Access::Push);
        let op = format!("uploading blob {digest}");
        let mut attempt = 0;
        loop {
            let on_spare = spare.is_some();
            let mut url = match spare.take() {
                Some(url) => url,
                None => self.start_upload(&op, &scope).await?,
            };
            url.push(if url.contains('?') { '&' } else { '?' });
            url.push_str(&format!("digest={digest}"));
            let size = std::fs::metadata(file)
                .map_err(|source| RegistryError::Io {
                    op: format!("reading {}", file.display()),
                    source,
                })?
                .len();
            let file_path = file.to_path_buf();
            let client = self.client(&target.registry, Access::Push);
            let mut req = client
                .put(&url)
                .header(CONTENT_TYPE, "application/octet-stream")
                .header(CONTENT_LENGTH, size);
            if let Some(h) = self.auth_header(&scope).await? {
                req = req.header(AUTHORIZATION, h);
            }
            let body_file =
                tokio::fs::File::open(&file_path)
                    .await
                    .map_err(|source| RegistryError::Io {
                        op: format!("reading {}", file_path.display()),
                        source,
                    })?;
            let bar = crate::progress::bar(crate::progress::Kind::Upload, digest, size);
            let counter = bar.counter();
            let stream = futures_util::StreamExt::inspect(
                tokio_util::io::ReaderStream::with_capacity(body_file, 256 * 1024),
                move |chunk| {
                    if let Ok(c) = chunk {
                        counter.add(c.len() as u64);
                    }
                },
            );
            let body = reqwest::Body::wrap_stream(stream);
            let result = req.body(body).send().await;
            let retryable = match result {
                Ok(resp) if resp.status() == StatusCode::CREATED => {
                    bar.done();
                    return Ok(());
                }
                Ok(_) | Err(_) if on_spare => {
                    crate::log_debug!(
                        "{op}: the push check's upload session failed; opening another"
                    );
                    continue;
                }
                Ok(resp) => {
                    let s = resp.status();
                    if !retryable_status(s) || attempt >= self.opts.retries {
                        let body = resp.text().await.unwrap_or_default();
                        return Err(Self::status_error(&op, &scope, s, body));
                    }
                    retry_after(resp.headers())
                }
                Err(e)
                    if attempt < self.opts.retries && transport::connect_failure(&e).is_none() =>
                {
                    None
                }
                Err(e) => return Err(Self::request_error(&op, &scope, e)),
            };
            wait_to_retry(&op, &scope, &mut attempt, retryable).await;
        }
    }
}
