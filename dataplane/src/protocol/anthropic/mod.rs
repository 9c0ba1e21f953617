//! Anthropic's Messages API, both ways. Inbound (`/v1/messages`, `/v1/messages/count_tokens`)
//! served by OpenAI-compatible backends: the request translated into a chat completions request
//! ([`request`]), the answer back into a message ([`response`]) or a Messages event stream
//! ([`stream`]), and errors in Anthropic's shape ([`error`]). Outbound ([`outbound`]): chat
//! completions served by Anthropic upstreams. [`usage`] reads Anthropic's token counts, for
//! both and for Messages requests passed through. Pure functions over bytes and JSON; the
//! stages call them.

pub mod error;
pub mod outbound;
pub mod request;
pub mod response;
pub mod stream;
pub mod usage;

/// Checks a request's `anthropic-version` header, when it has one. Anthropic dates its API
/// versions and its SDKs send newer ones as they appear (`2023-06-01` is the one its docs show);
/// the translation is the same for every version, so any date is taken and the header may be
/// left out. Only a value that is no date is refused.
pub fn check_version(value: Option<&[u8]>) -> Result<(), crate::error::ApiError> {
    let is_date = |v: &[u8]| {
        v.len() == 10
            && v.iter().enumerate().all(|(i, b)| if i == 4 || i == 7 { *b == b'-' } else { b.is_ascii_digit() })
    };
    match value {
        None => Ok(()),
        Some(v) if is_date(v) => Ok(()),
        Some(v) => Err(crate::error::ApiError::InvalidParam {
            param: "anthropic-version",
            code: "invalid_request_error",
            message: format!(
                "anthropic-version: {:?} is not a version (a date such as 2023-06-01)",
                String::from_utf8_lossy(v)
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_optional_but_must_be_known() {
        assert!(check_version(None).is_ok());
        assert!(check_version(Some(b"2023-06-01")).is_ok());
        assert!(check_version(Some(b"2026-10-21")).is_ok(), "newer SDKs send newer dates");
        assert!(check_version(Some(b"latest")).is_err());
        assert!(check_version(Some(b"2023-06-01x")).is_err());
    }
}
