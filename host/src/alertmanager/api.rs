//! Alertmanager's API v2 over HTTP: `GET /api/v2/alerts` and
//! `GET /api/v2/silence/{id}`, with a bearer token or basic auth from the
//! environment.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;

use super::{Alert, AlertSource, Matcher, NewSilence, Silence};
use crate::backends::{read_capped, transport_error, BackendError, BackendResult};

/// Most bytes of one answer read: a list of every alert of a big
/// installation fits, an endless answer does not.
const MAX_ANSWER: usize = 8 << 20;

/// How the host authenticates to Alertmanager (or the proxy before it).
#[derive(Clone)]
pub enum Auth {
    Bearer(String),
    Basic { user: String, password: String },
}

/// The client `[backends] alertmanager_url` configures, if any; its
/// credentials come from the environment variables the config names.
pub fn from_config(
    cfg: &crate::config::BackendsConfig,
) -> anyhow::Result<Option<std::sync::Arc<dyn AlertSource>>> {
    let Some(url) = &cfg.alertmanager_url else {
        return Ok(None);
    };
    let var = |key: &str, name: &Option<String>| -> anyhow::Result<Option<String>> {
        name.as_ref()
            .map(|v| {
                crate::backends::env_value(v)
                    .ok_or_else(|| anyhow::anyhow!("backends.{key}: variable {v} is not set"))
            })
            .transpose()
    };
    let token = var("alertmanager_token_env", &cfg.alertmanager_token_env)?;
    let basic = var(
        "alertmanager_basic_auth_env",
        &cfg.alertmanager_basic_auth_env,
    )?;
    let auth = match (token, basic) {
        (Some(_), Some(_)) => anyhow::bail!(
            "backends: give alertmanager_token_env or alertmanager_basic_auth_env, not both"
        ),
        (Some(t), None) => Some(Auth::Bearer(t)),
        (None, Some(b)) => {
            let (user, password) = b.split_once(':').ok_or_else(|| {
                anyhow::anyhow!(
                    "backends.alertmanager_basic_auth_env: the value must be `user:password`"
                )
            })?;
            Some(Auth::Basic {
                user: user.into(),
                password: password.into(),
            })
        }
        (None, None) => None,
    };
    let timeout = cfg
        .request_timeout_ms
        .map_or(Duration::from_millis(5_000), |t| t.get());
    Ok(Some(std::sync::Arc::new(HttpAlertmanager::new(
        url.as_str(),
        auth,
        timeout,
    )?)))
}

pub struct HttpAlertmanager {
    client: reqwest::Client,
    base: String,
    auth: Option<Auth>,
}

impl HttpAlertmanager {
    pub fn new(base: &str, auth: Option<Auth>, timeout: Duration) -> anyhow::Result<Self> {
        Ok(Self {
            client: reqwest::Client::builder()
                .timeout(timeout)
                .redirect(reqwest::redirect::Policy::none())
                .build()?,
            base: base.trim_end_matches('/').to_string(),
            auth,
        })
    }

    async fn get<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> BackendResult<T> {
        let req = self.client.get(format!("{}{path}", self.base)).query(query);
        self.send(path, req).await
    }

    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        mut req: reqwest::RequestBuilder,
    ) -> BackendResult<T> {
        let what = "alertmanager";
        req = match &self.auth {
            Some(Auth::Bearer(t)) => req.bearer_auth(t),
            Some(Auth::Basic { user, password }) => req.basic_auth(user, Some(password)),
            None => req,
        };
        let resp = req.send().await.map_err(|e| transport_error(what, e))?;
        let status = resp.status();
        let body = read_capped(what, resp, MAX_ANSWER).await?;
        if !status.is_success() {
            return Err(BackendError::Failed(format!(
                "{what}: HTTP {} on {path}: {}",
                status.as_u16(),
                String::from_utf8_lossy(&body)
                    .chars()
                    .take(200)
                    .collect::<String>()
            )));
        }
        // A DELETE answers with an empty body.
        let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
            b"null"
        } else {
            &body
        };
        serde_json::from_slice(body).map_err(|e| {
            BackendError::Failed(format!("{what}: {path} answered what is not its API: {e}"))
        })
    }
}

/// A silence id goes into a path: a UUID's characters only.
fn check_id(id: &str) -> BackendResult<()> {
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(BackendError::Invalid(format!("`{id}` is not a silence id")));
    }
    Ok(())
}

#[derive(Deserialize)]
struct GettableAlert {
    fingerprint: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    status: AlertStatus,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AlertStatus {
    state: String,
    #[serde(default)]
    silenced_by: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GettableSilence {
    id: String,
    #[serde(default)]
    created_by: String,
    #[serde(default)]
    comment: String,
    starts_at: Option<chrono::DateTime<chrono::Utc>>,
}

#[async_trait]
impl AlertSource for HttpAlertmanager {
    async fn alerts(&self, matchers: &[Matcher]) -> BackendResult<Vec<Alert>> {
        let mut query: Vec<(&str, String)> = ["active", "silenced", "inhibited", "unprocessed"]
            .into_iter()
            .map(|k| (k, "true".to_string()))
            .collect();
        query.extend(matchers.iter().map(|m| ("filter", m.filter())));
        let alerts: Vec<GettableAlert> = self.get("/api/v2/alerts", &query).await?;
        Ok(alerts
            .into_iter()
            .map(|a| Alert {
                fingerprint: a.fingerprint,
                labels: a.labels,
                state: a.status.state,
                silenced_by: a.status.silenced_by,
            })
            .collect())
    }

    async fn put_silence(&self, s: &NewSilence) -> BackendResult<String> {
        let matchers: Vec<serde_json::Value> = s
            .matchers
            .iter()
            .map(|m| serde_json::json!({"name": m.name, "value": m.value, "isRegex": m.regex, "isEqual": m.equal}))
            .collect();
        let mut body = serde_json::json!({
            "matchers": matchers,
            "startsAt": s.starts_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "endsAt": s.ends_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "createdBy": s.created_by,
            "comment": s.comment,
        });
        if let Some(id) = &s.id {
            check_id(id)?;
            body["id"] = serde_json::Value::String(id.clone());
        }
        #[derive(Deserialize)]
        struct Created {
            #[serde(rename = "silenceID")]
            silence_id: String,
        }
        let path = "/api/v2/silences";
        let req = self.client.post(format!("{}{path}", self.base)).json(&body);
        let c: Created = self.send(path, req).await?;
        Ok(c.silence_id)
    }

    async fn expire_silence(&self, id: &str) -> BackendResult<()> {
        check_id(id)?;
        let path = format!("/api/v2/silence/{id}");
        let req = self.client.delete(format!("{}{path}", self.base));
        let _: serde_json::Value = self.send(&path, req).await?;
        Ok(())
    }

    async fn silence(&self, id: &str) -> BackendResult<Silence> {
        check_id(id)?;
        let s: GettableSilence = self.get(&format!("/api/v2/silence/{id}"), &[]).await?;
        Ok(Silence {
            id: s.id,
            created_by: s.created_by,
            comment: s.comment,
            starts_at: s.starts_at,
        })
    }
}
