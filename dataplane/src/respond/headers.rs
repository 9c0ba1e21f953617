//! The headers the gateway writes on answers and refusals: the upstream's less those the client
//! must not get, the client's limits in OpenAI's format, and an alias's deprecation.

use std::time::Duration;

use hyper::header::{HeaderMap, HeaderName, HeaderValue};

use crate::limits::LimitReport;
use crate::resolve::Deprecation;
use crate::snapshot::Tier;

/// Response headers from upstream that the client must not get: hop-by-hop ones, lengths the
/// gateway recomputes, cookies, and the upstream's own rate limits (the client's are ours).
pub(super) fn copy_response_headers(from: &HeaderMap, to: &mut HeaderMap) {
    for (name, value) in from {
        let n = name.as_str();
        let dropped = matches!(
            n,
            "connection"
                | "keep-alive"
                | "transfer-encoding"
                | "content-length"
                | "set-cookie"
                | "trailer"
                | "upgrade"
                | "proxy-connection"
                | "te"
        ) || n.starts_with("x-ratelimit-")
            || n == "retry-after";
        if !dropped {
            to.append(name.clone(), value.clone());
        }
    }
}

/// `Deprecation`, `Sunset` (RFC 8594) and the model to move to.
pub(super) fn deprecation_headers(headers: &mut HeaderMap, deprecation: Deprecation<'_>) {
    headers.insert(HeaderName::from_static("deprecation"), HeaderValue::from_static("true"));
    if let Some(sunset) = deprecation.sunset {
        let date = sunset.strftime("%a, %d %b %Y %H:%M:%S GMT").to_string();
        if let Ok(value) = HeaderValue::try_from(date) {
            headers.insert(HeaderName::from_static("sunset"), value);
        }
    }
    if let Ok(value) = HeaderValue::try_from(deprecation.replacement) {
        headers.insert(HeaderName::from_static("x-sluice-model-replacement"), value);
    }
}

/// `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` in OpenAI's format.
pub(super) fn limit_headers(headers: &mut HeaderMap, report: &LimitReport, tier: &Tier) {
    static NAMES: [[HeaderName; 3]; 2] = [
        [
            HeaderName::from_static("x-ratelimit-limit-requests"),
            HeaderName::from_static("x-ratelimit-remaining-requests"),
            HeaderName::from_static("x-ratelimit-reset-requests"),
        ],
        [
            HeaderName::from_static("x-ratelimit-limit-tokens"),
            HeaderName::from_static("x-ratelimit-remaining-tokens"),
            HeaderName::from_static("x-ratelimit-reset-tokens"),
        ],
    ];
    for ((names, numbers), limit) in NAMES.iter().zip([report.requests, report.tokens]).zip(&tier.limit_headers) {
        let (Some((_, remaining, reset)), Some(limit)) = (numbers, limit) else { continue };
        headers.insert(names[0].clone(), limit.clone());
        headers.insert(names[1].clone(), HeaderValue::from(remaining));
        if let Ok(value) = HeaderValue::try_from(format_reset(reset)) {
            headers.insert(names[2].clone(), value);
        }
    }
    generic_limit_headers(headers, report, tier);
}

/// `X-RateLimit-Limit`, `-Remaining` and `-Reset` (Unix seconds when the bucket is full again)
/// for clients that read those: the requests-per-minute numbers, else the tokens-per-minute ones.
fn generic_limit_headers(headers: &mut HeaderMap, report: &LimitReport, tier: &Tier) {
    static NAMES: [HeaderName; 3] = [
        HeaderName::from_static("x-ratelimit-limit"),
        HeaderName::from_static("x-ratelimit-remaining"),
        HeaderName::from_static("x-ratelimit-reset"),
    ];
    let picked = [report.requests, report.tokens].into_iter().zip(&tier.limit_headers).find_map(|(numbers, limit)| {
        let (_, remaining, reset) = numbers?;
        Some((limit.as_ref()?, remaining, reset))
    });
    let Some((limit, remaining, reset)) = picked else { return };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    headers.insert(NAMES[0].clone(), limit.clone());
    headers.insert(NAMES[1].clone(), HeaderValue::from(remaining));
    headers.insert(NAMES[2].clone(), HeaderValue::from((now + reset).as_secs_f64().ceil() as u64));
}

/// A duration as OpenAI writes it in `x-ratelimit-reset-*`: `120ms`, `7s`, `1.5s`, `6m0s`.
fn format_reset(duration: Duration) -> String {
    let ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    let mut numbers = itoa::Buffer::new();
    let mut text = String::with_capacity(12);
    if ms < 1000 {
        text.push_str(numbers.format(ms));
        text.push_str("ms");
    } else if ms < 60_000 {
        text.push_str(numbers.format(ms / 1000));
        let fraction = ms % 1000;
        if fraction > 0 {
            let digits = format!("{fraction:03}");
            text.push('.');
            text.push_str(digits.trim_end_matches('0'));
        }
        text.push('s');
    } else {
        text.push_str(numbers.format(ms / 60_000));
        text.push('m');
        text.push_str(numbers.format((ms % 60_000) / 1000));
        text.push('s');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_durations_read_like_openai() {
        assert_eq!(format_reset(Duration::from_millis(120)), "120ms");
        assert_eq!(format_reset(Duration::from_millis(7000)), "7s");
        assert_eq!(format_reset(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_reset(Duration::from_secs(360)), "6m0s");
    }

    #[test]
    fn upstream_hop_by_hop_and_rate_limit_headers_stay_upstream() {
        let mut upstream = HeaderMap::new();
        for name in ["content-type", "connection", "content-length", "set-cookie", "x-ratelimit-remaining-tokens"] {
            upstream.insert(HeaderName::from_static(name), HeaderValue::from_static("x"));
        }
        upstream.insert(HeaderName::from_static("retry-after"), HeaderValue::from_static("1"));
        upstream.append(HeaderName::from_static("x-upstream"), HeaderValue::from_static("a"));
        upstream.append(HeaderName::from_static("x-upstream"), HeaderValue::from_static("b"));
        let mut client = HeaderMap::new();
        copy_response_headers(&upstream, &mut client);
        let names: Vec<&str> = client.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["content-type", "x-upstream"]);
        assert_eq!(client.get_all("x-upstream").iter().count(), 2);
    }

    #[test]
    fn deprecations_name_the_sunset_and_the_replacement() {
        let mut headers = HeaderMap::new();
        let sunset = "2099-01-01T00:00:00Z".parse().expect("time");
        deprecation_headers(&mut headers, Deprecation { sunset: Some(sunset), replacement: "m" });
        assert_eq!(headers["deprecation"], "true");
        assert_eq!(headers["sunset"], "Thu, 01 Jan 2099 00:00:00 GMT");
        assert_eq!(headers["x-sluice-model-replacement"], "m");
    }
}
