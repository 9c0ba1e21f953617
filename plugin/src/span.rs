//! Durations as people type them (`90s`, `15m`, `24h`, `30d`, `1h30m`) and ages as kubectl
//! shows them (`45s`, `5m10s`, `3h`, `12d`).

use std::time::Duration;

/// Parses `<number><unit>` terms, summed: units `s`, `m`, `h`, `d` (24 h) and `w` (7 d).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("an empty duration: write one like 30s, 15m, 24h or 30d".to_owned());
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3_600,
            'd' => 86_400,
            'w' => 604_800,
            _ => return Err(format!("{text:?}: unknown unit {c:?} (use s, m, h, d or w)")),
        };
        let number: u64 = digits.parse().map_err(|_| format!("{text:?}: a number must come before {c:?}"))?;
        digits.clear();
        total = number
            .checked_mul(unit)
            .and_then(|seconds| total.checked_add(seconds))
            .ok_or_else(|| format!("{text:?} is too long"))?;
    }
    if !digits.is_empty() {
        return Err(format!("{text:?}: {digits} needs a unit (s, m, h, d or w)"));
    }
    Ok(Duration::from_secs(total))
}

/// An age or a time left the way kubectl prints it: precise when short, coarse when long.
pub fn human(duration: Duration) -> String {
    let s = duration.as_secs();
    let (m, h, d) = (s / 60, s / 3_600, s / 86_400);
    match () {
        () if s < 120 => format!("{s}s"),
        () if m < 10 && !s.is_multiple_of(60) => format!("{m}m{}s", s % 60),
        () if h < 3 => format!("{m}m"),
        () if h < 8 && !m.is_multiple_of(60) => format!("{h}h{}m", m % 60),
        () if h < 48 => format!("{h}h"),
        () if d < 8 && !h.is_multiple_of(24) => format!("{d}d{}h", h % 24),
        () if d < 730 => format!("{d}d"),
        () => format!("{}y", d / 365),
    }
}

/// The age of something created at `then`, seen at `now`; zero for times in the future.
pub fn age(then: jiff::Timestamp, now: jiff::Timestamp) -> String {
    human(Duration::from_secs(u64::try_from(now.as_second() - then.as_second()).unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_in_every_unit_and_summed() {
        let cases = [
            ("45s", 45),
            ("15m", 900),
            ("24h", 86_400),
            ("30d", 2_592_000),
            ("2w", 1_209_600),
            ("1h30m", 5_400),
            (" 0s ", 0),
        ];
        for (text, seconds) in cases {
            assert_eq!(parse_duration(text), Ok(Duration::from_secs(seconds)), "{text}");
        }
    }

    #[test]
    fn bad_durations_say_what_is_wrong() {
        assert!(parse_duration("").expect_err("empty").contains("empty"));
        assert!(parse_duration("10").expect_err("no unit").contains("needs a unit"));
        assert!(parse_duration("3y").expect_err("unit").contains("unknown unit 'y'"));
        assert!(parse_duration("h").expect_err("number").contains("number must come before"));
        assert!(parse_duration("99999999999999999999w").is_err());
        assert!(parse_duration("-5m").is_err());
    }

    #[test]
    fn ages_read_like_kubectl() {
        let cases = [
            (0, "0s"),
            (119, "119s"),
            (310, "5m10s"),
            (600, "10m"),
            (2 * 3_600 + 59 * 60, "179m"),
            (3 * 3_600 + 20 * 60, "3h20m"),
            (30 * 3_600, "30h"),
            (3 * 86_400 + 4 * 3_600, "3d4h"),
            (200 * 86_400, "200d"),
            (800 * 86_400, "2y"),
        ];
        for (seconds, shown) in cases {
            assert_eq!(human(Duration::from_secs(seconds)), shown, "{seconds} s");
        }
        let now: jiff::Timestamp = "2026-03-01T12:00:00Z".parse().expect("time");
        let later: jiff::Timestamp = "2026-03-01T12:00:07Z".parse().expect("time");
        assert_eq!(age(now, later), "7s");
        assert_eq!(age(later, now), "0s", "clock skew shows as zero");
    }
}
