//! Presence asked of the notification tier over HTTP.

use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;

use super::{Presence, PresenceError};
use crate::forward::ROUTING_KEY_HEADER;

/// Presence asked over HTTP of the notification tier (`GET {base}/notifications/presence`).
#[derive(Debug, Clone)]
pub struct HttpPresence {
    client: reqwest::Client,
    base_url: String,
    token: Option<String>,
    timeout: Duration,
}

impl HttpPresence {
    /// Asks the tier at `base_url` (the balancer's internal address), with `token` as bearer.
    pub fn new(base_url: impl Into<String>, token: Option<String>, timeout: Duration) -> Self {
        Self {
            client: reqwest::Client::new(),
            base_url: base_url.into().trim_end_matches('/').to_owned(),
            token,
            timeout,
        }
    }
}

#[derive(Debug, Deserialize)]
struct PresenceAnswer {
    online: bool,
}

#[async_trait]
impl Presence for HttpPresence {
    async fn is_online(&self, user_id: &str) -> Result<bool, PresenceError> {
        let mut request = self
            .client
            .get(format!("{}/notifications/presence", self.base_url))
            .query(&[("user_id", user_id)])
            .header(ROUTING_KEY_HEADER, user_id)
            .timeout(self.timeout);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request
            .send()
            .await
            .map_err(|e| PresenceError(e.to_string()))?;
        let status = response.status();
        if !status.is_success() {
            return Err(PresenceError(format!("status {status}")));
        }
        response
            .json::<PresenceAnswer>()
            .await
            .map(|answer| answer.online)
            .map_err(|e| PresenceError(e.to_string()))
    }
}
