//! ADD's URL sources: one file downloaded over the registry client's transport
//! (its timeouts, retries with backoff, redirects, and the `HTTP(S)_PROXY` /
//! `NO_PROXY` settings reqwest reads), hashed as it streams, with the
//! `Last-Modified` time BuildKit gives the file.

use super::{retry_after, retryable_status, transport, Registry};
use sha2::Digest as _;
use std::path::Path;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{url}: the server answered {status}")]
    Status {
        url: String,
        status: reqwest::StatusCode,
    },
    #[error("{url}: {cause}")]
    Request { url: String, cause: String },
    #[error("{url}: redirect to {location}: unsupported protocol scheme {scheme:?}")]
    RedirectScheme {
        url: String,
        location: String,
        scheme: String,
    },
    #[error("{url}: checksum mismatch: --checksum is {want}, the download is {got}")]
    Checksum {
        url: String,
        want: String,
        got: String,
    },
    #[error("{url}: writing {path}: {source}")]
    Write {
        url: String,
        path: String,
        source: std::io::Error,
    },
}

/// A downloaded file.
#[derive(Debug, Clone)]
pub(crate) struct Fetched {
    /// `algorithm:hex` of the content, in the algorithm of the checksum asked
    /// for (sha256 when none was).
    pub digest: String,
    /// `Last-Modified`, in seconds since the epoch.
    pub modified: Option<u64>,
    /// `Content-Type`, as the server sent it.
    pub content_type: Option<String>,
}

/// The hash algorithms `--checksum` takes (those of OCI digests).
enum Hasher {
    Sha256(sha2::Sha256),
    Sha384(sha2::Sha384),
    Sha512(sha2::Sha512),
}

impl Hasher {
    fn for_checksum(checksum: Option<&str>) -> Hasher {
        match checksum.and_then(|c| c.split_once(':')).map(|(a, _)| a) {
            Some("sha384") => Hasher::Sha384(sha2::Sha384::new()),
            Some("sha512") => Hasher::Sha512(sha2::Sha512::new()),
            _ => Hasher::Sha256(sha2::Sha256::new()),
        }
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha384(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    fn finish(self) -> String {
        match self {
            Hasher::Sha256(h) => format!("sha256:{}", hex::encode(h.finalize())),
            Hasher::Sha384(h) => format!("sha384:{}", hex::encode(h.finalize())),
            Hasher::Sha512(h) => format!("sha512:{}", hex::encode(h.finalize())),
        }
    }
}

/// Whether `checksum` is a digest `--checksum` takes: `sha256:` and 64 hex
/// digits (or sha384/sha512 and theirs), lower case, as OCI digests are.
pub(crate) fn valid_checksum(checksum: &str) -> Result<(), String> {
    let (algo, hex) = checksum
        .split_once(':')
        .ok_or_else(|| format!("invalid checksum digest format: {checksum:?}"))?;
    let len = match algo {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => {
            return Err(format!(
                "unsupported checksum algorithm {algo:?} (sha256, sha384 or sha512)"
            ))
        }
    };
    if hex.len() != len || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(format!(
            "invalid checksum digest {checksum:?}: {algo} takes {len} lower-case hex digits"
        ));
    }
    Ok(())
}

impl Registry {
    /// Downloads `url` into `dest` (replacing it on a retry). A `checksum`
    /// that the content does not match fails, and `dest` is removed.
    pub(crate) async fn fetch_file(
        &self,
        url: &str,
        dest: &Path,
        checksum: Option<&str>,
    ) -> Result<Fetched, FileError> {
        let mut attempt = 0u32;
        loop {
            match self.fetch_once(url, dest, checksum).await {
                Ok(f) => return Ok(f),
                Err(Attempt::Final(e)) => {
                    let _ = std::fs::remove_file(dest);
                    return Err(e);
                }
                Err(Attempt::Again(e, wait)) => {
                    if attempt >= self.opts.retries {
                        let _ = std::fs::remove_file(dest);
                        return Err(e);
                    }
                    let backoff = super::backoff(attempt, wait);
                    attempt += 1;
                    crate::log_warn!("{e}: retry {attempt} in {backoff:?}");
                    tokio::time::sleep(backoff).await;
                }
            }
        }
    }

    async fn fetch_once(
        &self,
        url: &str,
        dest: &Path,
        checksum: Option<&str>,
    ) -> Result<Fetched, Attempt> {
        let request_error = |e: reqwest::Error| {
            let cause = match transport::connect_failure(&e) {
                Some(transport::ConnectFailure::PlainHttpServer) => PLAIN_HTTP_SERVER.to_string(),
                Some(
                    f @ (transport::ConnectFailure::Tls(_)
                    | transport::ConnectFailure::ClientCertificate(_)),
                ) => f.cause().unwrap_or_default(),
                None => crate::log::one_line(&e),
            };
            let err = FileError::Request {
                url: url.to_string(),
                cause,
            };
            if Self::transient(&e) {
                Attempt::Again(err, None)
            } else {
                Attempt::Final(err)
            }
        };
        let mut resp = match self.http.get(url).send().await {
            Ok(resp) => resp,
            Err(e) if transport::handshake_closed(&e) && self.speaks_plain_http(url).await => {
                return Err(Attempt::Final(FileError::Request {
                    url: url.to_string(),
                    cause: PLAIN_HTTP_SERVER.to_string(),
                }))
            }
            Err(e) => return Err(request_error(e)),
        };
        let status = resp.status();
        if status.is_redirection() {
            // reqwest follows http(s) redirects itself and hands back any other
            // (`file:`, `ftp:`) unfollowed: name it, as BuildKit does.
            if let Some((location, scheme)) = unsupported_redirect(&resp) {
                return Err(Attempt::Final(FileError::RedirectScheme {
                    url: url.to_string(),
                    location,
                    scheme,
                }));
            }
        }
        if !status.is_success() {
            let err = FileError::Status {
                url: url.to_string(),
                status,
            };
            return Err(if retryable_status(status) {
                Attempt::Again(err, retry_after(resp.headers()))
            } else {
                Attempt::Final(err)
            });
        }
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let modified = resp
            .headers()
            .get(reqwest::header::LAST_MODIFIED)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs());
        let write_error = |source| {
            Attempt::Final(FileError::Write {
                url: url.to_string(),
                path: dest.display().to_string(),
                source,
            })
        };
        let mut file = tokio::fs::File::create(dest).await.map_err(write_error)?;
        let mut hasher = Hasher::for_checksum(checksum);
        while let Some(chunk) = resp.chunk().await.map_err(request_error)? {
            hasher.update(&chunk);
            file.write_all(&chunk).await.map_err(write_error)?;
        }
        file.flush().await.map_err(write_error)?;
        let digest = hasher.finish();
        if let Some(want) = checksum {
            if want != digest {
                return Err(Attempt::Final(FileError::Checksum {
                    url: url.to_string(),
                    want: want.to_string(),
                    got: digest,
                }));
            }
        }
        Ok(Fetched {
            digest,
            modified,
            content_type,
        })
    }

    /// Whether the server of an `https://` URL whose TLS handshake it closed
    /// answers plain HTTP on that port: then no retry can help. A TLS port
    /// answers plain HTTP with 400, so that answer does not count.
    async fn speaks_plain_http(&self, url: &str) -> bool {
        let Ok(mut plain) = reqwest::Url::parse(url) else {
            return false;
        };
        if plain.scheme() != "https" || plain.set_scheme("http").is_err() {
            return false;
        }
        // An https URL without a port means 443, which http would not.
        if plain.port().is_none() && plain.set_port(Some(443)).is_err() {
            return false;
        }
        matches!(self.http.get(plain).send().await,
            Ok(resp) if resp.status() != reqwest::StatusCode::BAD_REQUEST)
    }
}

const PLAIN_HTTP_SERVER: &str = "the server speaks plain HTTP, not HTTPS: use an http:// URL";

/// The `Location` of a redirect reqwest did not follow because its scheme is
/// not http or https, and that scheme. It is never followed.
fn unsupported_redirect(resp: &reqwest::Response) -> Option<(String, String)> {
    let location = resp
        .headers()
        .get(reqwest::header::LOCATION)?
        .to_str()
        .ok()?;
    redirect_scheme(resp.url(), location)
}

fn redirect_scheme(base: &reqwest::Url, location: &str) -> Option<(String, String)> {
    let mut target = base.join(location).ok()?;
    let scheme = target.scheme().to_string();
    if scheme == "http" || scheme == "https" {
        return None;
    }
    // Errors are logged: never a password the location may carry.
    let _ = target.set_password(None);
    Some((target.to_string(), scheme))
}

/// A failed try: worth another, after the server's Retry-After if it gave one.
enum Attempt {
    Again(FileError, Option<Duration>),
    Final(FileError),
}

/// The file name BuildKit gives a URL's download: the last segment of its path,
/// percent-decoded, or `__unnamed__` when the path has none.
pub(crate) fn url_file_name(url: &str) -> String {
    let Ok(u) = reqwest::Url::parse(url) else {
        return "__unnamed__".into();
    };
    let last = u
        .path()
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or("");
    let name = percent_encoding::percent_decode_str(last)
        .decode_utf8_lossy()
        .into_owned();
    if name.is_empty() || name == "." {
        "__unnamed__".into()
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_follow_buildkit() {
        assert_eq!(url_file_name("http://h/dir/tool"), "tool");
        assert_eq!(
            url_file_name("http://h/dir/tool.tar.gz?x=1#f"),
            "tool.tar.gz"
        );
        assert_eq!(url_file_name("http://h/dir/"), "dir");
        assert_eq!(url_file_name("http://h/a%20b"), "a b");
        assert_eq!(url_file_name("http://h/"), "__unnamed__");
        assert_eq!(url_file_name("http://h"), "__unnamed__");
    }

    #[test]
    fn redirects_to_other_schemes_are_named() {
        let base = reqwest::Url::parse("http://h/ctx.tar.gz").unwrap();
        assert_eq!(
            redirect_scheme(&base, "file:///etc/passwd"),
            Some(("file:///etc/passwd".into(), "file".into()))
        );
        assert_eq!(
            redirect_scheme(&base, "ftp://u:secret@f/x"),
            Some(("ftp://u@f/x".into(), "ftp".into()))
        );
        assert_eq!(redirect_scheme(&base, "/elsewhere"), None);
        assert_eq!(redirect_scheme(&base, "https://h2/x"), None);
    }

    #[test]
    fn checksums_are_oci_digests() {
        let hex64 = "a".repeat(64);
        assert!(valid_checksum(&format!("sha256:{hex64}")).is_ok());
        assert!(valid_checksum(&format!("sha512:{}", "0".repeat(128))).is_ok());
        assert!(valid_checksum("sha256:abc").unwrap_err().contains("64"));
        assert!(valid_checksum(&format!("SHA256:{hex64}")).is_err());
        assert!(valid_checksum(&format!("md5:{hex64}")).is_err());
        assert!(valid_checksum(&hex64).is_err());
    }
}
