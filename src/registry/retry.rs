//! When and how long to wait before a request is tried again: the
//! statuses worth a retry, `Retry-After`, and backoff with a cap.

use super::Scope;
use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use std::time::Duration;

pub(super) fn retry_after(h: &HeaderMap) -> Option<Duration> {
    h.get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(|s| Duration::from_secs(s.min(60)))
}

/// Answers worth another try: the server's own trouble, or "slow down".
pub(super) fn retryable_status(s: StatusCode) -> bool {
    s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS
}

/// How long to wait before retry `attempt + 1`: the server's Retry-After, else
/// exponential backoff from 200 ms.
pub(super) fn backoff(attempt: u32, retry_after: Option<Duration>) -> Duration {
    retry_after.unwrap_or_else(|| Duration::from_millis(200 * (1 << attempt.min(6))))
}

pub(super) fn tracing_retry(op: &str, scope: &Scope<'_>, attempt: u32, backoff: Duration) {
    crate::log_warn!(
        "{op} {}/{}: transient failure, retry {attempt} in {:?}",
        scope.registry,
        scope.repository,
        backoff
    );
}

/// Waits before the next try ([`backoff`]); counts the attempt and logs it.
pub(super) async fn wait_to_retry(
    op: &str,
    scope: &Scope<'_>,
    attempt: &mut u32,
    retry_after: Option<Duration>,
) {
    let backoff = backoff(*attempt, retry_after);
    *attempt += 1;
    tracing_retry(op, scope, *attempt, backoff);
    tokio::time::sleep(backoff).await;
}
