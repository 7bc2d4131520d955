//! Query and header parameters shared by the routes.

use axum::http::HeaderMap;
use serde::Deserialize;

use super::ApiError;
use crate::headers::IDEMPOTENCY_KEY_HEADER;
use crate::model::check_id;
use crate::store::{DEFAULT_HISTORY_LIMIT, MAX_HISTORY_LIMIT};

/// The `user_id` query parameter.
#[derive(Debug, Deserialize)]
pub(super) struct UserParams {
    pub(super) user_id: Option<String>,
}

pub(super) fn required<'a>(
    field: &'static str,
    value: &'a Option<String>,
) -> Result<&'a str, ApiError> {
    let value = value.as_deref().unwrap_or_default();
    check_id(field, value)?;
    Ok(value)
}

pub(super) fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY_HEADER) else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .map_err(|_| ApiError::BadRequest("Idempotency-Key must be visible ASCII".to_owned()))?;
    check_id("Idempotency-Key", key)?;
    Ok(Some(key.to_owned()))
}

pub(super) fn required_stream_id(stream_id: Option<&str>) -> Result<String, ApiError> {
    let stream_id = stream_id
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::BadRequest("stream_id is required".to_owned()))?;
    if !crate::stream_id::is_well_formed(stream_id) {
        return Err(ApiError::BadRequest(
            "stream_id must be 16 lowercase hex characters".to_owned(),
        ));
    }
    Ok(stream_id.to_owned())
}

/// A page size: 1 or more (clamped to 500), an unsigned 32-bit integer as the API description
/// says; default 50. Shared by history, the inbox and the conversation list.
pub(super) fn parse_limit(limit: Option<&str>) -> Result<usize, ApiError> {
    let Some(limit) = limit else {
        return Ok(DEFAULT_HISTORY_LIMIT);
    };
    match limit.parse::<u32>() {
        Ok(n) if n >= 1 => Ok((n as usize).min(MAX_HISTORY_LIMIT)),
        _ => Err(ApiError::BadRequest(format!(
            "limit must be an integer from 1 to {MAX_HISTORY_LIMIT}"
        ))),
    }
}
