//! The text log line, written without the general-purpose formatter's detours: the access log
//! writes one line per request, and formatting it through `tracing-subscriber`'s default
//! formatter (timestamp through `Display`, every field through an escaping `fmt::Write`) cost
//! several percent of the gateway's throughput. Same layout as that formatter:
//! `2026-11-22T03:37:26.442598Z  INFO target: message key=value ...`.
//!
//! Values are written as they are, strings quoted; a control character in any value (a newline
//! in a client-supplied path segment, say) is escaped, so one event is always one line.

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// Formats events as text lines; `ansi` colours the level.
#[derive(Debug, Clone, Copy)]
pub struct TextFormat {
    ansi: bool,
}

impl TextFormat {
    /// A formatter that colours the level when `ansi` is true (a terminal).
    pub fn new(ansi: bool) -> Self {
        Self { ansi }
    }
}

impl<S, N> FormatEvent<S, N> for TextFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        write_timestamp(&mut writer, SystemTime::now())?;
        let meta = event.metadata();
        let level = level_text(*meta.level());
        if self.ansi {
            write!(writer, " \x1b[{}m{level}\x1b[0m ", level_colour(*meta.level()))?;
        } else {
            writer.write_char(' ')?;
            writer.write_str(level)?;
            writer.write_char(' ')?;
        }
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                writer.write_str(span.name())?;
                let extensions = span.extensions();
                if let Some(fields) = extensions.get::<FormattedFields<N>>()
                    && !fields.is_empty()
                {
                    write!(writer, "{{{fields}}}")?;
                }
                writer.write_char(':')?;
            }
            writer.write_char(' ')?;
        }
        writer.write_str(meta.target())?;
        writer.write_char(':')?;
        // The fields are written into one buffer and handed on in one piece: each write to
        // `writer` is a call through `dyn fmt::Write`, and an access line has some forty.
        let access = meta.target() == ACCESS_TARGET;
        let mut write_fields = |line: &mut String| {
            line.clear();
            let mut fields = FieldWriter { line, access, result: Ok(()) };
            event.record(&mut fields);
            fields.result?;
            line.push('\n');
            writer.write_str(line)
        };
        FIELDS.with(|cell| match cell.try_borrow_mut() {
            Ok(mut line) => write_fields(&mut line),
            // A value's `Debug` that logs while it is formatted: a buffer of its own.
            Err(_) => write_fields(&mut String::new()),
        })
    }
}

/// Right-aligned in five columns, as `tracing-subscriber` writes it.
fn level_text(level: Level) -> &'static str {
    match level {
        Level::ERROR => "ERROR",
        Level::WARN => " WARN",
        Level::INFO => " INFO",
        Level::DEBUG => "DEBUG",
        Level::TRACE => "TRACE",
    }
}

fn level_colour(level: Level) -> &'static str {
    match level {
        Level::ERROR => "31",
        Level::WARN => "33",
        Level::INFO => "32",
        Level::DEBUG => "34",
        Level::TRACE => "35",
    }
}

thread_local! {
    /// The second last formatted on this thread and its `YYYY-MM-DDTHH:MM:SS` text.
    static LAST_SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    /// Where an event's fields are formatted before they are written.
    static FIELDS: RefCell<String> = const { RefCell::new(String::new()) };
}

/// RFC 3339 in UTC with microseconds; the date part is computed once per second per thread.
pub(crate) fn write_timestamp(writer: &mut impl fmt::Write, now: SystemTime) -> fmt::Result {
    let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since_epoch.as_secs();
    LAST_SECOND.with_borrow_mut(|(cached, text)| {
        if *cached != seconds {
            *cached = seconds;
            text.clear();
            let (year, month, day) = civil_from_days(seconds / 86_400);
            let in_day = seconds % 86_400;
            write!(
                text,
                "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
                in_day / 3600,
                in_day % 3600 / 60,
                in_day % 60
            )?;
        }
        writer.write_str(text)
    })?;
    let mut digits = *b".000000Z";
    let mut rest = since_epoch.subsec_micros();
    for slot in digits[1..7].iter_mut().rev() {
        // `rest % 10` is one decimal digit: the cast cannot truncate.
        *slot = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    writer.write_str(std::str::from_utf8(&digits).map_err(|_| fmt::Error)?)
}

/// The proleptic Gregorian date of a day counted from 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, for days on or after the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 { shifted_month + 3 } else { shifted_month - 9 };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// The access log's target. Its ids and names (request id, project, endpoint, model, key,
/// client, backend) are passed as strings and written bare, as `%` (their `Display`) wrote them
/// before: formatting each through `core::fmt` cost about 400 instructions, seven times a
/// request. Its other strings (an error code, why a stream was cut short) stay quoted.
pub const ACCESS_TARGET: &str = "sluice::access";

/// Whether an access-log field is one of the ids and names written bare.
fn bare_in_access_log(name: &str) -> bool {
    matches!(name, "request_id" | "project" | "endpoint" | "model" | "key" | "client" | "backend")
}

/// Writes ` key=value` per field into `line`; the message goes first, without its key.
struct FieldWriter<'l> {
    line: &'l mut String,
    /// The access log's line: its ids and names unquoted.
    access: bool,
    result: fmt::Result,
}

impl FieldWriter<'_> {
    /// ` key=` (or ` ` before the message); false once a value failed to format.
    fn start(&mut self, field: &Field) -> bool {
        if self.result.is_err() {
            return false;
        }
        self.line.push(' ');
        if field.name() != "message" {
            self.line.push_str(field.name());
            self.line.push('=');
        }
        true
    }
}

impl Visit for FieldWriter<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if !self.start(field) {
            return;
        }
        if field.name() == "message" || (self.access && bare_in_access_log(field.name())) {
            push_escaped(self.line, value);
        } else {
            push_quoted(self.line, value);
        }
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if self.start(field) {
            write_f64(self.line, value);
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if self.start(field) {
            self.line.push_str(itoa::Buffer::new().format(value));
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if self.start(field) {
            self.line.push_str(itoa::Buffer::new().format(value));
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.start(field) {
            self.line.push_str(if value { "true" } else { "false" });
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if !self.start(field) {
            return;
        }
        let from = self.line.len();
        self.result = write!(self.line, "{value:?}");
        if needs_escaping(&self.line[from..]) {
            let raw = self.line.split_off(from);
            push_escaped(self.line, &raw);
        }
    }
}

/// `value` as its `Debug` writes it (`0.0`, `0.25`, `2e-5`, `1.5e16`), without `core::fmt`
/// for a whole number of billionths below a million, as the access log's `cost_usd` always is
/// (about 1,000 instructions less a line).
pub(super) fn write_f64(line: &mut String, value: f64) {
    const SCALE: f64 = 1e9;
    let scaled = (value * SCALE).round();
    // Exact below 2^53; a million times the scale keeps fifteen significant digits, where the
    // shortest decimal that reads back as the same double is the billionths' own digits.
    if !(0.0..1e15).contains(&scaled) || scaled / SCALE != value || value.is_sign_negative() {
        let _ = write!(line, "{value:?}");
        return;
    }
    let billionths = scaled as u64;
    if billionths == 0 {
        line.push_str("0.0");
        return;
    }
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(billionths).as_bytes();
    // value = 0.d1d2... x 10^exponent with d1 != 0, i.e. d1.d2... x 10^(exponent - 1).
    let exponent = digits.len() as i32 - 9;
    let significant = &digits[..digits.iter().rposition(|&d| d != b'0').map_or(1, |last| last + 1)];
    // ASCII digits only.
    let text = |bytes| std::str::from_utf8(bytes).unwrap_or_default();
    if exponent - 1 < -4 {
        // Scientific, as `Debug` writes below 1e-4: `2e-5`, `1.25e-7`.
        line.push_str(text(&significant[..1]));
        if significant.len() > 1 {
            line.push('.');
            line.push_str(text(&significant[1..]));
        }
        line.push('e');
        line.push_str(itoa::Buffer::new().format(exponent - 1));
    } else if exponent <= 0 {
        line.push_str("0.");
        for _ in 0..-exponent {
            line.push('0');
        }
        line.push_str(text(significant));
    } else {
        let whole = exponent as usize;
        line.push_str(text(&digits[..whole]));
        line.push('.');
        if significant.len() > whole {
            line.push_str(text(&significant[whole..]));
        } else {
            line.push('0');
        }
    }
}

/// Whether `value` may hold a control character. Read byte by byte: every control character
/// is below 0x20, 0x7f, or U+0080 to U+009F, whose UTF-8 starts with 0xc2 (as other characters'
/// do, which [`push_escaped`] then keeps as they are).
fn needs_escaping(value: &str) -> bool {
    // Without stopping early: the loop then has no branch per byte, and the compiler checks
    // many bytes at a time (an access line's ids are a few dozen bytes, and clean).
    value.bytes().fold(false, |found, b| found | (b < 0x20) | (b == 0x7f) | (b == 0xc2))
}

/// `value` with control characters escaped (`\n`, `\u{1b}`), so a value never breaks the line.
pub(super) fn push_escaped(line: &mut String, value: &str) {
    if !needs_escaping(value) {
        line.push_str(value);
        return;
    }
    for c in value.chars() {
        if c.is_control() {
            line.extend(c.escape_default());
        } else {
            line.push(c);
        }
    }
}

/// `value` in double quotes, escaped as Rust's `Debug` escapes it.
pub(super) fn push_quoted(line: &mut String, value: &str) {
    let control = needs_escaping(value) && value.chars().any(char::is_control);
    if control || value.bytes().any(|b| b == b'"' || b == b'\\') {
        let _ = write!(line, "{value:?}");
        return;
    }
    line.push('"');
    line.push_str(value);
    line.push('"');
}

#[cfg(test)]
pub(super) mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().map_err(|_| io::Error::other("poisoned"))?.extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn capture(emit: impl FnOnce()) -> String {
        capture_with(false, emit)
    }

    /// What the text formatter writes of the events `emit` makes (`ansi`: with colours).
    pub(in crate::logging) fn capture_with(ansi: bool, emit: impl FnOnce()) -> String {
        let captured = Captured::default();
        let sink = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(ansi)
            .event_format(TextFormat::new(ansi))
            .with_writer(move || sink.clone())
            .with_max_level(Level::TRACE)
            .finish();
        tracing::subscriber::with_default(subscriber, emit);
        let bytes = captured.0.lock().expect("not poisoned").clone();
        String::from_utf8(bytes).expect("UTF-8")
    }

    #[test]
    fn fields_follow_the_message_as_the_default_formatter_writes_them() {
        let project = "demo";
        let line = capture(|| {
            tracing::info!(target: "sluice::config", request_id = %"req_1", project, status = 200u16,
                duration_ms = 3u64, ttft_ms = Some(2u64), delta = -4i64, cost_usd = 0.5f64, cut_short = false, "request");
        });
        let (timestamp, rest) = line.split_once(' ').expect("a timestamp");
        assert_eq!(timestamp.len(), "2026-11-22T03:37:26.442598Z".len(), "{line}");
        assert!(timestamp.ends_with('Z'));
        assert_eq!(
            rest,
            " INFO sluice::config: request request_id=req_1 project=\"demo\" status=200 duration_ms=3 \
             ttft_ms=2 delta=-4 cost_usd=0.5 cut_short=false\n"
        );
    }

    #[test]
    fn the_access_log_writes_its_strings_bare_as_display_would() {
        let slug = "de\nmo";
        let line = capture(|| {
            tracing::info!(target: ACCESS_TARGET, request_id = "req_1", project = slug, key = "ns/k",
                cut_short = "idle", cost_usd = 2e-5, "request");
        });
        let fields = line.split_once("sluice::access: ").expect("the target").1;
        let shown = format!("{}", tracing::field::display(slug)).replace('\n', "\\n");
        assert_eq!(
            fields,
            format!("request request_id=req_1 project={shown} key=ns/k cut_short=\"idle\" cost_usd=2e-5\n")
        );
    }

    #[test]
    fn floats_read_as_their_debug_writes_them() {
        let mut checked = 0;
        let mut check = |value: f64| {
            let mut line = String::new();
            write_f64(&mut line, value);
            assert_eq!(line, format!("{value:?}"), "billionths {}", value * 1e9);
            checked += 1;
        };
        // Every whole number of billionths up to 2e-4 (both sides of Debug's switch to the
        // exponent at 1e-4), then a spread of them up to a million, as costs are rounded.
        for n in 0..200_000u64 {
            check(n as f64 / 1e9);
        }
        let mut n = 1u64;
        while n < 1_000_000_000_000_000 {
            for m in [n, n + 1, n * 3 + 7, n * 5 - 1, n * 10 - 1, n.wrapping_mul(123_457) % 999_999_999_999_999] {
                check(m as f64 / 1e9);
            }
            n = n * 7 + 3;
        }
        // Values that are no whole number of billionths take `Debug` itself.
        for value in [0.1 + 0.2, 1e-12, 1.5e16, 1e300, -0.5, -0.0, f64::NAN, f64::INFINITY, 1e15, 0.3] {
            check(value);
        }
        assert!(checked > 200_000);
    }

    #[test]
    fn a_control_character_in_a_value_never_breaks_the_line() {
        let slug = "de\nmo \u{1b}[31mred";
        let line = capture(|| {
            tracing::warn!(project = %slug, quoted = slug, "refused {slug:?} and {slug}");
        });
        assert_eq!(line.lines().count(), 1, "{line}");
        assert!(line.contains(r"project=de\nmo \u{1b}[31mred"), "{line}");
        assert!(line.contains(r#"quoted="de\nmo \u{1b}[31mred""#), "{line}");
        assert!(line.contains(r#"refused "de\nmo \u{1b}[31mred" and de\nmo"#), "{line}");
        assert!(line.contains(" WARN "), "{line}");
    }

    #[test]
    fn only_control_characters_are_escaped_whatever_their_encoding() {
        // U+0085 is a control character whose UTF-8 starts with 0xc2, as the copyright sign's
        // and the soft hyphen's do (neither is one).
        let line = capture(|| {
            tracing::info!(c1 = %"a\u{85}b", sign = %"\u{a9} 2026", soft = %"co\u{ad}op", quoted = "\u{a9}",
                quoted_c1 = "x\u{85}", slashed = "a\\b", said = "say \"hi\"", "\u{a9}\u{85}");
        });
        assert_eq!(line.lines().count(), 1, "{line}");
        let fields = line.split_once("logging::text::tests: ").expect("the target").1;
        assert_eq!(
            fields,
            "\u{a9}\\u{85} c1=a\\u{85}b sign=\u{a9} 2026 soft=co\u{ad}op quoted=\"\u{a9}\" quoted_c1=\"x\\u{85}\" \
             slashed=\"a\\\\b\" said=\"say \\\"hi\\\"\"\n"
        );
    }

    #[test]
    fn spans_are_named_before_the_target() {
        let line = capture(|| {
            let span = tracing::info_span!("reload", generation = 7);
            let _entered = span.enter();
            tracing::debug!("swapped");
        });
        assert!(line.contains("DEBUG reload{generation=7}: "), "{line}");
        assert!(line.ends_with(": swapped\n"), "{line}");
    }

    #[test]
    fn timestamps_are_utc_calendar_dates() {
        let at = |seconds: u64, micros: u64| {
            let mut text = String::new();
            write_timestamp(&mut text, UNIX_EPOCH + Duration::from_secs(seconds) + Duration::from_micros(micros))
                .expect("formats");
            text
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(at(951_782_400, 7), "2000-02-29T00:00:00.000007Z");
        assert_eq!(at(1_795_318_646, 442_598), "2026-11-22T03:37:26.442598Z");
        assert_eq!(at(4_107_542_399, 999_999), "2100-02-28T23:59:59.999999Z");
        // The cached second must not leak into the next one.
        assert_eq!(at(1_795_318_647, 0), "2026-11-22T03:37:27.000000Z");
    }
}
