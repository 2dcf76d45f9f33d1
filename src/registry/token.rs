//! Credentials on a request: Basic from the keychain, or a Bearer token
//! fetched from the realm a registry's challenge names, cached per scope.

use super::auth::{parse_challenge, Challenge, Credential};
use super::{
    retry_after, retryable_status, transport, wait_to_retry, Registry, RegistryError, Scope,
};
use base64::Engine;
use reqwest::{Response, StatusCode};

impl Registry {
    /// Keeps the auth challenge of a 401 so the first real request is sent with auth.
    pub(super) fn learn_challenge(&self, registry: &str, resp: &Response) {
        if resp.status() != StatusCode::UNAUTHORIZED {
            return;
        }
        let challenge = resp
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_challenge);
        if challenge.is_some() {
            Self::lock(&self.challenges).insert(registry.to_string(), challenge);
        }
    }

    pub(super) async fn auth_header(
        &self,
        scope: &Scope<'_>,
    ) -> Result<Option<String>, RegistryError> {
        let challenge = Self::lock(&self.challenges)
            .get(scope.registry)
            .cloned()
            .flatten();
        match challenge {
            None => Ok(None),
            Some(Challenge::Basic) => Ok(match self.keychain.credential(scope.registry)? {
                Some(Credential::Basic { username, password }) => Some(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD
                        .encode(format!("{username}:{password}"))
                )),
                _ => None,
            }),
            Some(Challenge::Bearer { realm, service }) => {
                if let Some(t) = Self::lock(&self.tokens).get(&scope.key()) {
                    return Ok(Some(format!("Bearer {t}")));
                }
                let token = self.fetch_token(scope, &realm, service.as_deref()).await?;
                Self::lock(&self.tokens).insert(scope.key(), token.clone());
                Ok(Some(format!("Bearer {token}")))
            }
        }
    }

    pub(super) async fn fetch_token(
        &self,
        scope: &Scope<'_>,
        realm: &str,
        service: Option<&str>,
    ) -> Result<String, RegistryError> {
        let fail = |reason: String| RegistryError::Auth {
            registry: scope.registry.to_string(),
            reason,
        };
        let mut params: Vec<(&str, String)> = Vec::new();
        if let Some(s) = service {
            params.push(("service", s.to_string()));
        }
        params.push(("scope", scope.scope_param()));
        if let Some(from) = scope.mount_from {
            params.push(("scope", format!("repository:{from}:pull")));
        }
        let client = self.client(scope.registry, scope.access);
        let credential = self.keychain.credential(scope.registry)?;
        let request = || match &credential {
            Some(Credential::IdentityToken(refresh)) => {
                let mut form = params.clone();
                form.extend([
                    ("grant_type", "refresh_token".to_string()),
                    ("refresh_token", refresh.clone()),
                    ("client_id", "kiln".to_string()),
                ]);
                client.post(realm).form(&form)
            }
            Some(Credential::Basic { username, password }) => client
                .get(realm)
                .query(&params)
                .basic_auth(username, Some(password)),
            None => client.get(realm).query(&params),
        };
        // The token endpoint gets the same retries as the registry itself.
        let mut attempt = 0;
        let resp = loop {
            let retry_after = match request().send().await {
                Ok(resp) if retryable_status(resp.status()) && attempt < self.opts.retries => {
                    retry_after(resp.headers())
                }
                Ok(resp) => break resp,
                Err(e) if attempt < self.opts.retries && Self::transient(&e) => None,
                Err(e) => {
                    return Err(
                        match transport::connect_failure(&e).and_then(|f| f.cause()) {
                            Some(cause) => fail(format!("token endpoint {realm}: {cause}")),
                            None => fail(crate::log::one_line(&e)),
                        },
                    )
                }
            };
            let op = format!("fetching a token from {realm} for");
            wait_to_retry(&op, scope, &mut attempt, retry_after).await;
        };
        let status = resp.status();
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            return Err(fail(format!(
                "token endpoint {realm} answered {status}: {}",
                body.trim()
            )));
        }
        #[derive(serde::Deserialize)]
        struct Token {
            token: Option<String>,
            access_token: Option<String>,
        }
        let t: Token = resp
            .json()
            .await
            .map_err(|e| fail(format!("token response: {e}")))?;
        t.token
            .or(t.access_token)
            .ok_or_else(|| fail("token response had no token".into()))
    }
}
