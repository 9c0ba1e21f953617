//! Fault injection: what can go wrong, how often (configured in the profile, switchable at run
//! time through `POST /_sim/faults`), and the per-request `x-sim-fault` header that forces one.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Result, invalid};

/// The name of the request header that forces a fault for one request.
pub const FAULT_HEADER: &str = "x-sim-fault";

/// How often each fault happens. Rates are probabilities per request, drawn once per request;
/// their sum must not exceed 1. Applies to the inference routes only (not `/v1/models`,
/// `/metrics`, `/health` or `/_sim/*`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct FaultConfig {
    /// Error responses by status code, each in the route's own error format. Default: none.
    /// `[{status: 503, rate: 1.0}]` forces a status on every request.
    pub errors: Vec<ErrorFault>,
    /// `Retry-After` (seconds) sent with 429 and 503 errors. Default 1.
    pub retry_after_secs: u32,
    /// Probability that the server sends nothing for `hangMs` before answering. Default 0.
    pub hang_rate: f64,
    /// How long a hang lasts before the request proceeds normally. Default 600000 (10 minutes).
    pub hang_ms: u64,
    /// Probability that the connection is cut mid-body: after `resetAfterTokens` streamed tokens,
    /// or halfway through a non-streamed body. Default 0.
    pub reset_rate: f64,
    /// Streamed tokens sent before a `reset`. Default 4.
    pub reset_after_tokens: u32,
    /// Probability of a body that is not valid JSON (a truncated body, or one broken SSE event in
    /// the middle of a stream). Default 0.
    pub malformed_rate: f64,
    /// Probability of a slow drip: each SSE event, or each 16-byte piece of a non-streamed body,
    /// comes `dripIntervalMs` after the previous one. Default 0.
    pub drip_rate: f64,
    /// Interval of a slow drip. Default 500.
    pub drip_interval_ms: u64,
}

impl Default for FaultConfig {
    fn default() -> Self {
        Self {
            errors: Vec::new(),
            retry_after_secs: 1,
            hang_rate: 0.0,
            hang_ms: 600_000,
            reset_rate: 0.0,
            reset_after_tokens: 4,
            malformed_rate: 0.0,
            drip_rate: 0.0,
            drip_interval_ms: 500,
        }
    }
}

/// One kind of error response and its probability.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ErrorFault {
    /// HTTP status, 400-599 (e.g. 500, 503, 429).
    pub status: u16,
    /// Probability per request, 0-1.
    pub rate: f64,
}

/// The fault chosen for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this error status (and `Retry-After` when set).
    Status {
        /// The HTTP status.
        status: u16,
        /// Seconds for `Retry-After` (429 and 503 only).
        retry_after: Option<u32>,
    },
    /// Send nothing for this long, then answer normally.
    Hang(Duration),
    /// Cut the connection after this many streamed tokens (or halfway through a plain body).
    Reset {
        /// Tokens sent before the cut.
        after_tokens: usize,
    },
    /// Send a body that is not valid JSON.
    Malformed,
    /// Send the body slowly, one event or 16 bytes at a time, at this interval.
    Drip(Duration),
}

impl Fault {
    /// A short label for metrics and logs, e.g. `status_503`, `hang`.
    pub fn kind(&self) -> String {
        match self {
            Fault::Status { status, .. } => format!("status_{status}"),
            Fault::Hang(_) => "hang".into(),
            Fault::Reset { .. } => "reset".into(),
            Fault::Malformed => "malformed".into(),
            Fault::Drip(_) => "drip".into(),
        }
    }
}

impl FaultConfig {
    /// Checks every rate and status; the message names the field.
    pub fn validate(&self) -> Result<()> {
        let mut total = 0.0;
        for (i, error) in self.errors.iter().enumerate() {
            if !(400..=599).contains(&error.status) {
                return Err(invalid("faults", format!("errors[{i}].status {} is not 400-599", error.status)));
            }
            check_rate(&format!("errors[{i}].rate"), error.rate)?;
            total += error.rate;
        }
        for (name, rate) in [
            ("hangRate", self.hang_rate),
            ("resetRate", self.reset_rate),
            ("malformedRate", self.malformed_rate),
            ("dripRate", self.drip_rate),
        ] {
            check_rate(name, rate)?;
            total += rate;
        }
        if total > 1.0 + 1e-9 {
            return Err(invalid("faults", format!("rates add up to {total}, more than 1")));
        }
        Ok(())
    }

    /// Whether no fault can ever be drawn.
    pub fn is_quiet(&self) -> bool {
        self.errors.iter().all(|e| e.rate <= 0.0)
            && self.hang_rate <= 0.0
            && self.reset_rate <= 0.0
            && self.malformed_rate <= 0.0
            && self.drip_rate <= 0.0
    }

    /// The fault for a uniform draw `u` in `[0, 1)`: the rates are laid end to end and `u` picks
    /// one, or none past their sum.
    pub fn pick(&self, u: f64) -> Option<Fault> {
        let mut edge = 0.0;
        for error in &self.errors {
            edge += error.rate;
            if u < edge {
                return Some(self.status(error.status));
            }
        }
        let others = [
            (self.hang_rate, self.hang()),
            (self.reset_rate, self.reset(None)),
            (self.malformed_rate, Fault::Malformed),
            (self.drip_rate, self.drip(None)),
        ];
        for (rate, fault) in others {
            edge += rate;
            if u < edge {
                return Some(fault);
            }
        }
        None
    }

    /// Parses an `x-sim-fault` header value: `none`, a status (`503`), `hang[=MS]`,
    /// `reset[=TOKENS]`, `malformed`, `drip[=MS]`. `Ok(None)` means "no fault, whatever the rates".
    pub fn parse_header(&self, value: &str) -> Result<Option<Fault>, String> {
        let (kind, arg) = match value.trim().split_once('=') {
            Some((kind, arg)) => (kind.trim(), Some(arg.trim())),
            None => (value.trim(), None),
        };
        let number = |arg: Option<&str>| -> Result<Option<u64>, String> {
            arg.map(|a| a.parse::<u64>().map_err(|_| format!("`{a}` is not a number"))).transpose()
        };
        let fault = match kind {
            "none" => return Ok(None),
            "hang" => match number(arg)? {
                Some(ms) => Fault::Hang(Duration::from_millis(ms)),
                None => self.hang(),
            },
            "reset" => self.reset(number(arg)?),
            "malformed" => Fault::Malformed,
            "drip" => self.drip(number(arg)?),
            status => match status.parse::<u16>() {
                Ok(status) if (400..=599).contains(&status) => self.status(status),
                _ => {
                    return Err(format!(
                        "{FAULT_HEADER}: `{value}` is not one of none, 400-599, hang[=ms], \
                         reset[=tokens], malformed, drip[=ms]"
                    ));
                }
            },
        };
        Ok(Some(fault))
    }

    fn status(&self, status: u16) -> Fault {
        Fault::Status { status, retry_after: matches!(status, 429 | 503).then_some(self.retry_after_secs) }
    }

    fn hang(&self) -> Fault {
        Fault::Hang(Duration::from_millis(self.hang_ms))
    }

    fn reset(&self, after_tokens: Option<u64>) -> Fault {
        let after = after_tokens.unwrap_or(u64::from(self.reset_after_tokens));
        Fault::Reset { after_tokens: usize::try_from(after).unwrap_or(usize::MAX) }
    }

    fn drip(&self, ms: Option<u64>) -> Fault {
        Fault::Drip(Duration::from_millis(ms.unwrap_or(self.drip_interval_ms)))
    }
}

fn check_rate(name: &str, rate: f64) -> Result<()> {
    if (0.0..=1.0).contains(&rate) {
        Ok(())
    } else {
        Err(invalid("faults", format!("{name} {rate} is not between 0 and 1")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    fn config() -> FaultConfig {
        FaultConfig {
            errors: vec![ErrorFault { status: 500, rate: 0.1 }, ErrorFault { status: 429, rate: 0.2 }],
            hang_rate: 0.1,
            reset_rate: 0.1,
            malformed_rate: 0.1,
            drip_rate: 0.1,
            ..FaultConfig::default()
        }
    }

    #[test]
    fn pick_lays_rates_end_to_end() {
        let c = config();
        assert_eq!(c.pick(0.05).map(|f| f.kind()).as_deref(), Some("status_500"));
        assert_eq!(c.pick(0.25), Some(Fault::Status { status: 429, retry_after: Some(1) }));
        assert_eq!(c.pick(0.35).map(|f| f.kind()).as_deref(), Some("hang"));
        assert_eq!(c.pick(0.45).map(|f| f.kind()).as_deref(), Some("reset"));
        assert_eq!(c.pick(0.55), Some(Fault::Malformed));
        assert_eq!(c.pick(0.65).map(|f| f.kind()).as_deref(), Some("drip"));
        assert_eq!(c.pick(0.75), None);
        assert_eq!(FaultConfig::default().pick(0.0), None);
    }

    #[test]
    fn observed_frequencies_match_rates() {
        let c = config();
        let mut rng = SplitMix64::new(3);
        let n = 100_000;
        let errors_500 =
            (0..n).filter(|_| matches!(c.pick(rng.next_f64()), Some(Fault::Status { status: 500, .. }))).count();
        let share = errors_500 as f64 / n as f64;
        assert!((share - 0.1).abs() < 0.005, "{share}");
    }

    #[test]
    fn validation_names_the_field() {
        let mut c = config();
        c.validate().expect("valid");
        c.drip_rate = 0.5;
        assert!(c.validate().is_err_and(|e| e.to_string().contains("add up to")));
        c.drip_rate = -1.0;
        assert!(c.validate().is_err_and(|e| e.to_string().contains("dripRate")));
        c.drip_rate = 0.0;
        c.errors[0].status = 200;
        assert!(c.validate().is_err_and(|e| e.to_string().contains("errors[0].status")));
    }

    #[test]
    fn header_values() {
        let c = FaultConfig::default();
        assert_eq!(c.parse_header("none"), Ok(None));
        assert_eq!(c.parse_header("503"), Ok(Some(Fault::Status { status: 503, retry_after: Some(1) })));
        assert_eq!(c.parse_header("500"), Ok(Some(Fault::Status { status: 500, retry_after: None })));
        assert_eq!(c.parse_header("hang=250"), Ok(Some(Fault::Hang(Duration::from_millis(250)))));
        assert_eq!(c.parse_header("reset"), Ok(Some(Fault::Reset { after_tokens: 4 })));
        assert_eq!(c.parse_header(" drip = 20 "), Ok(Some(Fault::Drip(Duration::from_millis(20)))));
        assert!(c.parse_header("200").is_err());
        assert!(c.parse_header("hang=soon").is_err());
        assert!(c.parse_header("explode").is_err());
    }
}
