//! The request's SLO hints: the time to first token and per output token the client hopes for,
//! from `X-SLO-TTFT-Ms` / `X-SLO-TPOT-Ms` or llm-d's `x-llm-d-slo-ttft-ms` /
//! `x-llm-d-slo-tpot-ms`, else the tier's defaults. Hints, not deadlines: they will steer the
//! router; a malformed one is refused so that a typo does not pass silently. They never go
//! upstream (see the upstream client's dropped headers).

use hyper::header::{HeaderMap, HeaderName};
use sluice_crds::config::TierConfig;

use crate::error::ApiError;

/// The largest hint accepted, ms (ten minutes, longer than any tier's total time needs).
pub const MAX_HINT_MS: u32 = 600_000;

/// The headers of each hint: as they are named in errors, and as they are looked up (any case
/// matches; a ready-made name is looked up without being parsed on every request).
const TTFT_HEADERS: [(&str, HeaderName); 2] = [
    ("X-SLO-TTFT-Ms", HeaderName::from_static("x-slo-ttft-ms")),
    ("x-llm-d-slo-ttft-ms", HeaderName::from_static("x-llm-d-slo-ttft-ms")),
];
const TPOT_HEADERS: [(&str, HeaderName); 2] = [
    ("X-SLO-TPOT-Ms", HeaderName::from_static("x-slo-tpot-ms")),
    ("x-llm-d-slo-tpot-ms", HeaderName::from_static("x-llm-d-slo-tpot-ms")),
];

/// Where a hint came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HintSource {
    /// The request's header.
    Header,
    /// The tier's default.
    Tier,
}

/// One hint, ms, with its source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hint {
    /// Milliseconds.
    pub ms: u32,
    /// From the request or the tier.
    pub source: HintSource,
}

/// A request's SLO hints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SloHints {
    /// Time to first token.
    pub ttft: Option<Hint>,
    /// Time per output token.
    pub tpot: Option<Hint>,
}

/// Reads the hints of `headers`, falling back to `tier`'s defaults.
pub fn hints(headers: &HeaderMap, tier: &TierConfig) -> Result<SloHints, ApiError> {
    let default = |ms: Option<u32>| ms.map(|ms| Hint { ms, source: HintSource::Tier });
    // Most requests carry no hint: one pass over their few names instead of four lookups, each
    // hashing a long name (about 700 instructions a request).
    let hinted = headers.keys().any(|name| {
        let name = name.as_str();
        name.starts_with("x-slo-") || name.starts_with("x-llm-d-slo-")
    });
    if !hinted {
        return Ok(SloHints { ttft: default(tier.slo_ttft_ms), tpot: default(tier.slo_tpot_ms) });
    }
    Ok(SloHints {
        ttft: hint(headers, &TTFT_HEADERS)?.or(default(tier.slo_ttft_ms)),
        tpot: hint(headers, &TPOT_HEADERS)?.or(default(tier.slo_tpot_ms)),
    })
}

/// The first of `names` present; every one present must be valid.
fn hint(headers: &HeaderMap, names: &[(&'static str, HeaderName); 2]) -> Result<Option<Hint>, ApiError> {
    let mut found = None;
    for (shown, name) in names {
        for value in headers.get_all(name) {
            let ms = parse_ms(value.as_bytes()).ok_or(ApiError::InvalidSloHint { header: shown, max: MAX_HINT_MS })?;
            found = found.or(Some(Hint { ms, source: HintSource::Header }));
        }
    }
    Ok(found)
}

/// A whole number of milliseconds from 1 to [`MAX_HINT_MS`], ASCII digits only.
fn parse_ms(bytes: &[u8]) -> Option<u32> {
    let text = std::str::from_utf8(bytes).ok()?.trim();
    if text.is_empty() || text.len() > 7 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<u32>().ok().filter(|ms| (1..=MAX_HINT_MS).contains(ms))
}

#[cfg(test)]
mod tests {
    use hyper::header::HeaderValue;

    use super::*;

    fn tier(ttft: Option<u32>, tpot: Option<u32>) -> TierConfig {
        serde_json::from_value(serde_json::json!({
            "firstTokenMs": 1000, "totalMs": 2000, "idleStreamMs": 1000, "priority": 0,
            "sloTtftMs": ttft, "sloTpotMs": tpot, "priceMultiplier": 1.0, "retryPercent": 20,
            "minRetriesPerSecond": 1
        }))
        .expect("tier")
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).expect("value"));
        }
        map
    }

    #[test]
    fn headers_win_over_the_tier_and_either_spelling_works() {
        let from_headers =
            hints(&headers(&[("x-slo-ttft-ms", "250"), ("x-llm-d-slo-tpot-ms", " 30 ")]), &tier(None, Some(50)));
        let header = |ms| Some(Hint { ms, source: HintSource::Header });
        assert_eq!(from_headers.expect("valid"), SloHints { ttft: header(250), tpot: header(30) });
        let defaults = hints(&HeaderMap::new(), &tier(Some(800), None)).expect("valid");
        assert_eq!(defaults, SloHints { ttft: Some(Hint { ms: 800, source: HintSource::Tier }), tpot: None });
        assert_eq!(hints(&HeaderMap::new(), &tier(None, None)).expect("valid"), SloHints::default());
        let both = hints(&headers(&[("x-slo-ttft-ms", "100"), ("x-llm-d-slo-ttft-ms", "200")]), &tier(None, None));
        assert_eq!(both.expect("valid").ttft, header(100), "the first spelling wins");
        let among = headers(&[("content-type", "application/json"), ("x-slo", "1"), ("x-llm-d-slo-ttft-ms", "70")]);
        assert_eq!(hints(&among, &tier(Some(800), Some(9))).expect("valid").ttft, header(70), "found among others");
        let unhinted = headers(&[("content-type", "application/json"), ("x-slow", "1")]);
        assert_eq!(hints(&unhinted, &tier(Some(800), None)).expect("valid"), defaults);
    }

    #[test]
    fn malformed_hints_are_refused_naming_the_header() {
        for (name, value) in [
            ("x-slo-ttft-ms", "soon"),
            ("x-slo-ttft-ms", "0"),
            ("x-slo-ttft-ms", "600001"),
            ("x-slo-ttft-ms", "-5"),
            ("x-slo-ttft-ms", "1.5"),
            ("x-slo-ttft-ms", ""),
            ("x-slo-tpot-ms", "99999999999"),
            ("x-llm-d-slo-tpot-ms", "+20"),
        ] {
            let error = hints(&headers(&[(name, value)]), &tier(Some(100), Some(10))).expect_err(value);
            let ApiError::InvalidSloHint { header, .. } = &error else { panic!("{error:?}") };
            assert!(header.eq_ignore_ascii_case(name), "{header} for {name}");
            assert_eq!(error.parts().0, hyper::StatusCode::BAD_REQUEST);
            assert!(error.to_string().contains(header), "{error}");
        }
        assert_eq!(parse_ms(b"600000"), Some(600_000));
        assert_eq!(parse_ms(b"1"), Some(1));
        // A valid hint next to a broken one is still refused.
        let error = hints(&headers(&[("x-slo-tpot-ms", "20"), ("x-llm-d-slo-tpot-ms", "x")]), &tier(None, None));
        assert!(error.is_err());
    }
}
