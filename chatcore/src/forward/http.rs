//! [`HttpForwarder`]: delivers to websocket tiers running in other processes through their
//! internal routes, the way a change-handler service calls its websocket services.

use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;

use super::{Delivery, DeliveryReport, ForwardError, Forwarder};
use crate::model::NotificationType;

use crate::headers::ROUTING_KEY_HEADER;

/// One remote tier: its base URL and request timeout (the `*_CLIENT_HOST` and
/// `*_CLIENT_TIMEOUT`).
#[derive(Debug, Clone)]
pub struct TierEndpoint {
    /// Base URL, e.g. `http://chat-ws.internal:8080`.
    pub base_url: String,
    /// Upper bound of one request.
    pub timeout: Duration,
}

impl TierEndpoint {
    /// An endpoint with a 5 s timeout.
    pub fn new(base_url: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into().trim_end_matches('/').to_owned(),
            timeout: Duration::from_secs(5),
        }
    }
}

/// Forwards over HTTP with connection pooling, answering with the 200 / 206 / 500 semantics of
/// the internal routes: 200 and 206 are reports, a 500 carrying a report is a report with nothing
/// delivered, anything else an error.
#[derive(Debug, Clone)]
pub struct HttpForwarder {
    client: reqwest::Client,
    chat: TierEndpoint,
    notifications: TierEndpoint,
    token: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ReportBody {
    delivered: usize,
    #[serde(default)]
    failed: usize,
}

#[derive(Debug, Deserialize)]
struct ClosedBody {
    closed: usize,
}

impl HttpForwarder {
    /// Forwards chat messages to `chat` and notifications to `notifications`. With `token`, every
    /// request carries `Authorization: Bearer <token>` (`INTERNAL_TOKEN`).
    pub fn new(chat: TierEndpoint, notifications: TierEndpoint, token: Option<String>) -> Self {
        Self {
            client: reqwest::Client::new(),
            chat,
            notifications,
            token,
        }
    }

    fn route(
        &self,
        delivery: &Delivery,
    ) -> Result<(&TierEndpoint, String, serde_json::Value), ForwardError> {
        let encode = |e: serde_json::Error| ForwardError::Encode(e.to_string());
        match delivery {
            Delivery::Chat(message) => Ok((
                &self.chat,
                format!("/chat/forward-to-websocket?stream_id={}", message.stream_id),
                serde_json::to_value(message).map_err(encode)?,
            )),
            Delivery::Notify {
                user_id,
                notification,
            } => {
                let path = match &notification.notification_type {
                    NotificationType::ChatNotification => "chat",
                    NotificationType::PurchaseNotification => "purchase",
                    NotificationType::PaymentReminderNotification => "payment-reminder",
                    NotificationType::ShippingUpdateNotification => "shipping",
                    // The notification tier has routes for the contract's four types only; a
                    // custom type is delivered in process (`InProcessForwarder`).
                    NotificationType::Custom(name) => {
                        return Err(ForwardError::Encode(format!(
                            "no internal route for custom notification type {name:?}"
                        )))
                    }
                };
                Ok((
                    &self.notifications,
                    format!("/notifications/{path}?user_id={}", encode_query(user_id)),
                    notification.payload.clone(),
                ))
            }
            Delivery::Read(marker) => Ok((
                &self.chat,
                format!("/chat/forward-read?stream_id={}", marker.stream_id),
                serde_json::to_value(marker).map_err(encode)?,
            )),
        }
    }

    async fn post(
        &self,
        endpoint: &TierEndpoint,
        path_and_query: &str,
        routing_key: &str,
        body: &serde_json::Value,
        idempotency_key: Option<&str>,
    ) -> Result<reqwest::Response, ForwardError> {
        let mut request = self
            .client
            .post(format!("{}{path_and_query}", endpoint.base_url))
            .timeout(endpoint.timeout)
            .header(ROUTING_KEY_HEADER, routing_key)
            .json(body);
        if let Some(key) = idempotency_key {
            request = request.header(crate::headers::IDEMPOTENCY_KEY_HEADER, header_key(key));
        }
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        request.send().await.map_err(|e| {
            if e.is_timeout() {
                ForwardError::Timeout(endpoint.timeout)
            } else {
                ForwardError::Transport(e.to_string())
            }
        })
    }
}

/// A source key as an `Idempotency-Key` value: itself when it is short visible ASCII, otherwise
/// its SHA-256 (the notification tier accepts at most 256 visible ASCII bytes).
fn header_key(key: &str) -> String {
    if key.len() <= 200 && key.bytes().all(|b| b.is_ascii_graphic()) {
        return key.to_owned();
    }
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(key.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// Percent-encodes a query value (ids may hold any non-control character).
fn encode_query(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(byte))
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

async fn unexpected(response: reqwest::Response) -> ForwardError {
    let status = response.status().as_u16();
    let mut body = response.text().await.unwrap_or_default();
    body.truncate(512);
    ForwardError::Status { status, body }
}

#[async_trait]
impl Forwarder for HttpForwarder {
    async fn forward(&self, delivery: &Delivery) -> Result<DeliveryReport, ForwardError> {
        let (endpoint, path, body) = self.route(delivery)?;
        // The notification tier keeps one inbox entry per key and user, whatever the retries.
        let key = match delivery {
            Delivery::Notify { notification, .. } => notification.source_key.as_deref(),
            Delivery::Chat(_) | Delivery::Read(_) => None,
        };
        let response = self
            .post(endpoint, &path, delivery.routing_key(), &body, key)
            .await?;
        match response.status().as_u16() {
            200 | 206 | 500 => {}
            _ => return Err(unexpected(response).await),
        }
        let status = response.status().as_u16();
        match response.json::<ReportBody>().await {
            Ok(report) => Ok(DeliveryReport {
                delivered: report.delivered,
                failed: report.failed,
            }),
            Err(error) => Err(ForwardError::Status {
                status,
                body: format!("unreadable report: {error}"),
            }),
        }
    }
}

#[async_trait]
impl super::StreamCloser for HttpForwarder {
    async fn close_stream(&self, stream_id: &str, reason: &str) -> Result<usize, ForwardError> {
        let body = serde_json::json!({ "stream_id": stream_id, "reason": reason });
        self.close("close-stream", stream_id, &body).await
    }

    async fn close_member(&self, stream_id: &str, user_id: &str) -> Result<usize, ForwardError> {
        let body = serde_json::json!({ "stream_id": stream_id, "user_id": user_id });
        self.close("close-member", stream_id, &body).await
    }
}

impl HttpForwarder {
    /// Calls the chat tier's `POST /chat/{route}` for `stream_id`; returns how many sessions it
    /// closed.
    async fn close(
        &self,
        route: &str,
        stream_id: &str,
        body: &serde_json::Value,
    ) -> Result<usize, ForwardError> {
        let path = format!("/chat/{route}?stream_id={stream_id}");
        let response = self.post(&self.chat, &path, stream_id, body, None).await?;
        if response.status().as_u16() != 200 {
            return Err(unexpected(response).await);
        }
        response
            .json::<ClosedBody>()
            .await
            .map(|b| b.closed)
            .map_err(|e| ForwardError::Transport(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_or_non_ascii_source_keys_travel_as_their_digest() {
        assert_eq!(header_key("notify:abc:0123"), "notify:abc:0123");
        let long = "k".repeat(300);
        for key in [long.as_str(), "purchases:ordre é:1", "a b"] {
            let sent = header_key(key);
            assert!(sent.starts_with("sha256:") && sent.len() == 71, "{sent}");
            assert_eq!(sent, header_key(key), "deterministic");
        }
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(encode_query("user-1_a.b~"), "user-1_a.b~");
        assert_eq!(encode_query("a b&c=é"), "a%20b%26c%3D%C3%A9");
    }
}
