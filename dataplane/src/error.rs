//! Every way a request can fail, with its HTTP status and OpenAI error `type`, `code` and
//! `param` (one exhaustive match). Every stage refuses with an [`ApiError`];
//! [`crate::respond`] writes it out.

use std::time::Duration;

use hyper::StatusCode;
use hyper::header::HeaderValue;

/// Why a request was refused or failed. Messages never contain key material or credentials.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No credential in any of the accepted headers.
    #[error("You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.")]
    MissingKey,
    /// A credential that opens no key.
    #[error("Incorrect API key provided.")]
    InvalidKey,
    /// The key's `expiresAt` has passed.
    #[error("The API key has expired.")]
    KeyExpired,
    /// A JWT bearer token that does not verify; the reason is its code. The token is never
    /// echoed.
    #[error("The bearer token was refused: {}", .0.message())]
    TokenInvalid(crate::auth::jwt::TokenError),
    /// The key lacks the scope this API needs.
    #[error("The API key lacks the '{needed}' scope needed for {api}.")]
    ScopeInsufficient { needed: &'static str, api: &'static str },
    /// The key may not call this endpoint.
    #[error("The API key may not call endpoint '{0}'.")]
    EndpointNotAllowed(String),
    /// The key may not use this model.
    #[error("The API key may not use model '{0}'.")]
    ModelNotAllowed(String),
    /// The client's address is outside the key's allowed CIDRs.
    #[error("Requests with this API key are not allowed from {0}.")]
    IpNotAllowed(std::net::IpAddr),
    /// Unknown project or endpoint (or another tenant's: indistinguishable on purpose).
    #[error("Unknown URL: {method} {path}. Check the project and endpoint in the base URL.")]
    UnknownPath { method: String, path: String },
    /// The endpoint exists but does not serve this API.
    #[error("This endpoint does not serve {0}.")]
    ApiNotEnabled(&'static str),
    /// Wrong HTTP method for the path.
    #[error("Method {0} is not allowed here.")]
    MethodNotAllowed(String),
    /// The model is neither a name nor an alias on this endpoint.
    #[error("The model '{0}' does not exist or you do not have access to it.")]
    ModelNotFound(String),
    /// An alias past its sunset date.
    #[error("The model alias '{alias}' was retired on {sunset}; use '{replacement}' instead.")]
    ModelRetired { alias: String, sunset: String, replacement: String },
    /// The model cannot serve this API (an embeddings request to a chat model).
    #[error("The model '{model}' does not support {api}.")]
    ModelUnsupported { model: String, api: &'static str },
    /// The body is not JSON, or a field has the wrong type.
    #[error("We could not parse the JSON body of your request: {0}")]
    InvalidJson(String),
    /// A required parameter is missing or invalid.
    #[error("{message}")]
    InvalidParam { param: &'static str, code: &'static str, message: String },
    /// An SLO hint header that is not a whole number of milliseconds in range.
    #[error("Invalid header '{header}': expected a whole number of milliseconds from 1 to {max}.")]
    InvalidSloHint { header: &'static str, max: u32 },
    /// The body exceeds the endpoint's limit.
    #[error("Request body too large: the limit is {limit} bytes.")]
    BodyTooLarge { limit: u64 },
    /// The request line and headers exceed the gateway's limit.
    #[error("Request headers too large: the limit is {limit} bytes.")]
    HeadersTooLarge { limit: usize },
    /// Rate limited by the key's tier.
    #[error("Rate limit reached for {what}: limit {limit}, retry after {retry_after:?}.")]
    RateLimited { what: &'static str, limit: u64, retry_after: Duration },
    /// The key's budget is spent.
    #[error("The API key's budget of ${limit_usd:.2} for this {period} is spent.")]
    BudgetExhausted { limit_usd: f64, period: &'static str },
    /// A sheddable tier's request that no backend is predicted to serve within its SLO hints.
    #[error(
        "No backend for model '{model}' can currently meet the request's latency targets; this tier's requests are shed under load. Retry after {}s.",
        retry_after.as_secs()
    )]
    Shed { model: String, retry_after: Duration },
    /// Every backend refused the connection or was unavailable.
    #[error("No healthy backend for model '{0}'.")]
    NoHealthyBackend(String),
    /// The upstream answered with an error status (after failover ran out).
    #[error("The upstream for model '{model}' failed with status {status}.")]
    UpstreamStatus { model: String, status: u16 },
    /// The upstream rate-limited us and no other backend could take the request.
    #[error("The upstream for model '{model}' is rate limiting requests.")]
    UpstreamRateLimited { model: String, retry_after: Option<HeaderValue> },
    /// The TLS handshake with the upstream failed (after failover ran out): its certificate is
    /// not trusted, or it refused the gateway's client certificate.
    #[error("TLS with the upstream for model '{model}' failed: {reason}.")]
    UpstreamTls { model: String, reason: &'static str },
    /// The upstream did not answer in time.
    #[error("The upstream for model '{0}' timed out.")]
    UpstreamTimeout(String),
    /// The gateway has no configuration yet.
    #[error("The gateway has not loaded a configuration yet.")]
    NotReady,
    /// The project does not sign its responses, so it has no signing secret to read.
    #[error("This project does not sign its responses: set spec.signing on the Project.")]
    SigningNotEnabled,
    /// A key asked for a scope its creator does not hold.
    #[error("A key may be given only scopes the calling key holds; it lacks '{0}'.")]
    ScopeNotGrantable(&'static str),
    /// No ApiKey of this name in the project.
    #[error("No key named '{0}' in this project.")]
    KeyNotFound(String),
    /// An ApiKey of this name exists already.
    #[error("A key named '{0}' exists already in this project.")]
    KeyExists(String),
    /// A key held in a Secret: rotated where that Secret is made.
    #[error("{0}")]
    KeyNotRotatable(String),
    /// The key changed between reading and writing it, or is not this API's to change.
    #[error("{0}")]
    KeyConflict(String),
    /// This gateway has nowhere to write keys.
    #[error("Keys cannot be managed on this gateway: {0}")]
    KeyManagementUnavailable(String),
    /// Where keys are kept failed (the apiserver, the config folder).
    #[error("The key store failed: {0}")]
    KeyStoreFailed(String),
    /// The prompt matched one of the endpoint's content rules (named by its place in the
    /// configuration, never by what it matched).
    #[error("This request was refused by the endpoint's content rule {rule} (content_rule_violation).")]
    ContentRuleViolation { rule: String },
}

impl ApiError {
    /// HTTP status, OpenAI error `type` and `code`.
    pub fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        use StatusCode as S;
        match self {
            Self::MissingKey => (S::UNAUTHORIZED, "invalid_request_error", "missing_api_key"),
            Self::InvalidKey => (S::UNAUTHORIZED, "invalid_request_error", "invalid_api_key"),
            Self::KeyExpired => (S::UNAUTHORIZED, "invalid_request_error", "api_key_expired"),
            Self::TokenInvalid(reason) => (S::UNAUTHORIZED, "invalid_request_error", reason.code()),
            Self::ScopeInsufficient { .. } => (S::FORBIDDEN, "permission_error", "scope_insufficient"),
            Self::EndpointNotAllowed(_) => (S::FORBIDDEN, "permission_error", "endpoint_not_allowed"),
            Self::ModelNotAllowed(_) => (S::FORBIDDEN, "permission_error", "model_not_allowed"),
            Self::IpNotAllowed(_) => (S::FORBIDDEN, "permission_error", "ip_not_allowed"),
            Self::UnknownPath { .. } => (S::NOT_FOUND, "invalid_request_error", "unknown_url"),
            Self::ApiNotEnabled(_) => (S::NOT_FOUND, "invalid_request_error", "api_not_enabled"),
            Self::MethodNotAllowed(_) => (S::METHOD_NOT_ALLOWED, "invalid_request_error", "method_not_allowed"),
            Self::ModelNotFound(_) | Self::ModelRetired { .. } => {
                (S::NOT_FOUND, "invalid_request_error", "model_not_found")
            }
            Self::ModelUnsupported { .. } => (S::BAD_REQUEST, "invalid_request_error", "model_not_supported"),
            Self::InvalidJson(_) => (S::BAD_REQUEST, "invalid_request_error", "invalid_json"),
            Self::InvalidParam { code, .. } => (S::BAD_REQUEST, "invalid_request_error", code),
            Self::InvalidSloHint { .. } => (S::BAD_REQUEST, "invalid_request_error", "invalid_slo_hint"),
            Self::BodyTooLarge { .. } => (S::PAYLOAD_TOO_LARGE, "invalid_request_error", "request_too_large"),
            Self::HeadersTooLarge { .. } => {
                (S::REQUEST_HEADER_FIELDS_TOO_LARGE, "invalid_request_error", "request_headers_too_large")
            }
            Self::RateLimited { .. } => (S::TOO_MANY_REQUESTS, "rate_limit_error", "rate_limit_exceeded"),
            Self::BudgetExhausted { .. } => (S::PAYMENT_REQUIRED, "insufficient_quota", "budget_exhausted"),
            Self::Shed { .. } => (S::TOO_MANY_REQUESTS, "rate_limit_error", "slo_unattainable"),
            Self::NoHealthyBackend(_) => (S::SERVICE_UNAVAILABLE, "api_error", "no_healthy_backend"),
            Self::UpstreamStatus { .. } => (S::BAD_GATEWAY, "api_error", "upstream_error"),
            Self::UpstreamTls { .. } => (S::BAD_GATEWAY, "api_error", "upstream_tls_error"),
            Self::UpstreamRateLimited { .. } => (S::TOO_MANY_REQUESTS, "rate_limit_error", "upstream_rate_limited"),
            Self::UpstreamTimeout(_) => (S::GATEWAY_TIMEOUT, "timeout_error", "upstream_timeout"),
            Self::NotReady => (S::SERVICE_UNAVAILABLE, "api_error", "not_ready"),
            Self::SigningNotEnabled => (S::NOT_FOUND, "invalid_request_error", "signing_not_enabled"),
            Self::ScopeNotGrantable(_) => (S::FORBIDDEN, "permission_error", "scope_not_grantable"),
            Self::KeyNotFound(_) => (S::NOT_FOUND, "invalid_request_error", "key_not_found"),
            Self::KeyExists(_) => (S::CONFLICT, "invalid_request_error", "key_exists"),
            Self::KeyNotRotatable(_) => (S::CONFLICT, "invalid_request_error", "key_not_rotatable"),
            Self::KeyConflict(_) => (S::CONFLICT, "invalid_request_error", "key_conflict"),
            Self::KeyManagementUnavailable(_) => {
                (S::NOT_IMPLEMENTED, "invalid_request_error", "key_management_unavailable")
            }
            Self::KeyStoreFailed(_) => (S::BAD_GATEWAY, "api_error", "key_store_error"),
            Self::ContentRuleViolation { .. } => {
                (S::UNPROCESSABLE_ENTITY, "invalid_request_error", "content_rule_violation")
            }
        }
    }

    /// The `param` field: which request field is at fault.
    pub fn param(&self) -> Option<&'static str> {
        match self {
            Self::ModelNotFound(_)
            | Self::ModelRetired { .. }
            | Self::ModelNotAllowed(_)
            | Self::ModelUnsupported { .. } => Some("model"),
            Self::InvalidParam { param, .. } => Some(param),
            Self::InvalidSloHint { header, .. } => Some(header),
            Self::ScopeNotGrantable(_) => Some("scopes"),
            _ => None,
        }
    }

    /// The `Retry-After` header value, when the client should retry later.
    pub fn retry_after(&self) -> Option<HeaderValue> {
        match self {
            Self::RateLimited { retry_after, .. } => {
                Some(HeaderValue::from(retry_after.as_secs_f64().ceil().max(1.0) as u64))
            }
            Self::UpstreamRateLimited { retry_after, .. } => retry_after.clone(),
            Self::Shed { retry_after, .. } => Some(HeaderValue::from(retry_after.as_secs().max(1))),
            Self::NoHealthyBackend(_) | Self::NotReady => Some(HeaderValue::from_static("1")),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limits_say_when_to_retry() {
        let error = ApiError::RateLimited { what: "requests", limit: 10, retry_after: Duration::from_millis(1200) };
        assert_eq!(error.retry_after(), Some(HeaderValue::from(2u64)));
        assert_eq!(error.parts().0, StatusCode::TOO_MANY_REQUESTS);
        let shed = ApiError::Shed { model: "m".into(), retry_after: Duration::from_secs(3) };
        assert_eq!(
            (shed.parts().0, shed.retry_after()),
            (StatusCode::TOO_MANY_REQUESTS, Some(HeaderValue::from(3u64)))
        );
    }
}
