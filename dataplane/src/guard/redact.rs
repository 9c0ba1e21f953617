//! Finding personal data and secrets in prompt text and replacing each with a placeholder
//! (`[EMAIL_1]`). The same value gets the same placeholder within a request, and a placeholder
//! never takes a bracketed name the prompt already contains (so restoring cannot turn the
//! client's own `[EMAIL_1]` into something else). Card numbers must pass the Luhn check and
//! IBANs the mod-97 check; phone numbers must be written as phone numbers (see [`phone_at`]).
//! Pure: what was found lives in the [`Redactor`] of one request and nowhere else.

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::sync::LazyLock;

use regex::Regex;
use sluice_crds::api::RedactionKind::{self, ApiKey, BearerToken, CardNumber, Email, Iban, Phone, PrivateKey};

use super::restore::Restore;

/// The order kinds are looked for: private keys and tokens first (their base64 can look like
/// anything), IBANs before card numbers and card numbers before phone numbers (each can hold
/// the next one's digits), e-mail addresses before phone numbers (a local part of digits).
pub const ORDER: [RedactionKind; 7] = [PrivateKey, BearerToken, ApiKey, Iban, CardNumber, Email, Phone];

/// The name inside a kind's placeholders: `[EMAIL_1]`.
pub fn placeholder_name(kind: RedactionKind) -> &'static str {
    match kind {
        Email => "EMAIL",
        Phone => "PHONE",
        CardNumber => "CARD",
        Iban => "IBAN",
        ApiKey => "API_KEY",
        BearerToken => "BEARER_TOKEN",
        PrivateKey => "PRIVATE_KEY",
    }
}

/// The regular expressions of the kinds that have one (numbers are scanned by hand).
#[derive(Debug)]
pub struct Patterns {
    email: Regex,
    iban: Regex,
    api_key: Regex,
    bearer: Regex,
    jwt: Regex,
    private_key: Regex,
    /// A bracketed name shaped like a placeholder, already in the prompt.
    placeholder: Regex,
}

impl Patterns {
    fn new() -> Result<Self, regex::Error> {
        Ok(Self {
            email: Regex::new(
                r"[A-Za-z0-9._%+-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.[A-Za-z]{2,24}\b",
            )?,
            // Upper case, in groups of four or not; the checksum decides (see `iban_at`).
            iban: Regex::new(r"\b[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){11,30}")?,
            // Keys whose prefix says what they are: OpenAI and Anthropic (`sk-`), Sluice's own
            // (`sl_<project>_`), AWS access key ids, GitHub, GitLab, Slack, Google, Hugging
            // Face, Stripe, npm.
            api_key: Regex::new(concat!(
                r"\b(?:sk-(?:proj-|svcacct-|admin-|ant-(?:api|admin)[0-9]{2}-)?[A-Za-z0-9_-]{20,}",
                r"|sl_[a-z0-9](?:[a-z0-9-]*[a-z0-9])?_[A-Za-z0-9]{16,}",
                r"|(?:AKIA|ASIA)[0-9A-Z]{16}",
                r"|gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{40,}",
                r"|glpat-[A-Za-z0-9_-]{20,}",
                r"|xox[abposr]-[A-Za-z0-9-]{10,}",
                r"|AIza[0-9A-Za-z_-]{35}",
                r"|hf_[A-Za-z0-9]{30,}",
                r"|(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{16,}",
                r"|npm_[A-Za-z0-9]{36})",
            ))?,
            // The token after `Bearer` (the word stays, so the text still reads right), in RFC
            // 6750's token characters; a full stop right after it ends the sentence, not the token.
            bearer: Regex::new(r"(?i)\bbearer[ \t]+([A-Za-z0-9._~+/-]{15,}[A-Za-z0-9_~+/-]=*)")?,
            // A JSON Web Token: two base64url JSON objects (`eyJ` is `{"`) and a signature.
            jwt: Regex::new(r"\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*")?,
            // A whole PEM block, or from its BEGIN line to the end of a text cut short.
            private_key: Regex::new(
                r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----(?s:.*?)(?:-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|\z)",
            )?,
            placeholder: Regex::new(r"\[[A-Z][A-Z_]*_[0-9]+\]")?,
        })
    }
}

static PATTERNS: LazyLock<Result<Patterns, regex::Error>> = LazyLock::new(Patterns::new);

/// The compiled patterns, or why they did not compile (a bug the unit tests catch; the
/// snapshot that would use them is refused rather than redacting nothing).
pub fn patterns() -> Result<&'static Patterns, String> {
    PATTERNS.as_ref().map_err(|error| format!("redaction patterns: {error}"))
}

/// Where the values of `kind` are in `text`, in order and not overlapping.
pub fn find(patterns: &Patterns, kind: RedactionKind, text: &str) -> Vec<Range<usize>> {
    let spans = |regex: &Regex| regex.find_iter(text).map(|m| m.range()).collect::<Vec<_>>();
    match kind {
        Email => spans(&patterns.email),
        PrivateKey => spans(&patterns.private_key),
        ApiKey => {
            // A prefix and a long tail of letters could be a word; a key has digits.
            let mut found = spans(&patterns.api_key);
            found.retain(|span| text[span.clone()].bytes().any(|b| b.is_ascii_digit()));
            found
        }
        BearerToken => {
            let mut found: Vec<Range<usize>> =
                patterns.bearer.captures_iter(text).filter_map(|c| c.get(1)).map(|m| m.range()).collect();
            for jwt in patterns.jwt.find_iter(text) {
                if !found.iter().any(|span| span.start < jwt.end() && jwt.start() < span.end) {
                    found.push(jwt.range());
                }
            }
            found.sort_by_key(|span| span.start);
            found
        }
        Iban => patterns.iban.find_iter(text).filter_map(|m| iban_at(text, m.range())).collect(),
        CardNumber => windows(text, card_at),
        Phone => windows(text, phone_at),
    }
}

/// The longest prefix of the candidate `span` (whole, or cut at one of its spaces) that is an
/// IBAN: country letters, check digits, 11 to 30 letters and digits, mod 97 equal to 1, not
/// followed by a letter or digit.
fn iban_at(text: &str, span: Range<usize>) -> Option<Range<usize>> {
    let candidate = &text[span.clone()];
    let ends = std::iter::once(candidate.len()).chain(candidate.rmatch_indices(' ').map(|(at, _)| at));
    for end in ends {
        let followed = text[span.start + end..].chars().next().is_some_and(char::is_alphanumeric);
        if !followed && iban_valid(&candidate[..end]) {
            return Some(span.start..span.start + end);
        }
    }
    None
}

/// Whether `text` (spaces allowed) is an IBAN by its shape and its mod-97 check.
pub fn iban_valid(text: &str) -> bool {
    let compact: Vec<u8> = text.bytes().filter(|b| *b != b' ').collect();
    if !(15..=34).contains(&compact.len())
        || !compact[..2].iter().all(u8::is_ascii_uppercase)
        || !compact[2..4].iter().all(u8::is_ascii_digit)
        || !compact.iter().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    {
        return false;
    }
    // ISO 13616: the first four characters move to the end, letters count as 10 to 35.
    let rearranged = compact[4..].iter().chain(&compact[..4]);
    let remainder = rearranged.fold(0u32, |r, &b| {
        if b.is_ascii_digit() { (r * 10 + u32::from(b - b'0')) % 97 } else { (r * 100 + u32::from(b - b'A' + 10)) % 97 }
    });
    remainder == 1
}

/// Whether a string of digits passes the Luhn check.
pub fn luhn_valid(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, d) in digits.iter().rev().enumerate() {
        let mut d = u32::from(d - b'0');
        if i % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    !digits.is_empty() && sum.is_multiple_of(10)
}

/// Digits with single separators between them, as numbers are written (`4111 1111`,
/// `555-123-4567`, `(030) 1234`): where each group of digits is.
struct Run {
    groups: Vec<Range<usize>>,
}

/// Separators that may join two groups of digits, at most two in a row (`) `).
fn is_separator(b: u8) -> bool {
    matches!(b, b' ' | b'-' | b'.' | b'/' | b'(' | b')')
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// The runs of digits of `text` that stand on their own (not inside a word like `abc123`).
fn digit_runs(text: &str) -> Vec<Run> {
    let bytes = text.as_bytes();
    let mut runs = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let inside_word = i > 0 && is_word(bytes[i - 1]);
        let mut groups = Vec::new();
        loop {
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            groups.push(start..i);
            let mut next = i;
            while next < bytes.len() && next - i < 2 && is_separator(bytes[next]) {
                next += 1;
            }
            if next > i && next < bytes.len() && bytes[next].is_ascii_digit() {
                i = next;
                continue;
            }
            break;
        }
        let ends_inside_word = i < bytes.len() && is_word(bytes[i]);
        if !inside_word && !ends_inside_word {
            runs.push(Run { groups });
        }
    }
    runs
}

/// Whether a window of groups of digits is a number of some kind, and its span if so.
type Accept = fn(&str, &[Range<usize>]) -> Option<Range<usize>>;

/// The spans `accept` finds in the runs of digits of `text`: for each run, windows of
/// consecutive groups, the longest first from each group on.
fn windows(text: &str, accept: Accept) -> Vec<Range<usize>> {
    /// Groups a window may have: more is no number anyone writes.
    const MAX_GROUPS: usize = 8;
    let mut found = Vec::new();
    for run in digit_runs(text) {
        let mut first = 0;
        'start: while first < run.groups.len() {
            let last_possible = (first + MAX_GROUPS).min(run.groups.len());
            for last in (first + 1..=last_possible).rev() {
                if let Some(span) = accept(text, &run.groups[first..last]) {
                    found.push(span);
                    first = last;
                    continue 'start;
                }
            }
            first += 1;
        }
    }
    found
}

fn digits_of(text: &str, groups: &[Range<usize>]) -> Vec<u8> {
    groups.iter().flat_map(|g| text[g.clone()].bytes()).collect()
}

/// A payment card number: 13 to 19 digits in groups joined by single spaces or single
/// dashes (all the same), starting with 2 to 6 (the card networks' ranges), Luhn-valid.
fn card_at(text: &str, groups: &[Range<usize>]) -> Option<Range<usize>> {
    let digits = digits_of(text, groups);
    if !(13..=19).contains(&digits.len()) || !(b'2'..=b'6').contains(&digits[0]) {
        return None;
    }
    let separators: Vec<&str> = groups.windows(2).map(|pair| &text[pair[0].end..pair[1].start]).collect();
    let joined = separators.iter().all(|s| *s == " ") || separators.iter().all(|s| *s == "-");
    (joined && luhn_valid(&digits)).then(|| groups[0].start..groups[groups.len() - 1].end)
}

/// A phone number, written as one: international (`+` and 8 to 15 digits, or `00` and 10 to 15
/// digits in groups), North American (`555-123-4567`, `(555) 123-4567`, `1 555 123 4567`), or
/// national with a leading 0 (`030 12345678`, `06 12 34 56 78`: 9 to 12 digits in groups of at
/// least two). Dates and times (`2024-01-15 10`, `01.02.2024 12`) are not.
fn phone_at(text: &str, groups: &[Range<usize>]) -> Option<Range<usize>> {
    let bytes = text.as_bytes();
    let first = groups[0].start;
    // `+` or `(` (or `+(`) right before the first digit belong to the number.
    let mut start = first;
    while start > 0 && matches!(bytes[start - 1], b'+' | b'(') && first - start < 2 {
        start -= 1;
    }
    if start > 0 && is_word(bytes[start - 1]) {
        return None;
    }
    let lead = &text[start..first];
    let separators: Vec<&str> = groups.windows(2).map(|pair| &text[pair[0].end..pair[1].start]).collect();
    let end = groups[groups.len() - 1].end;
    // One pair of parentheses at most, around a group (`(555) 123-4567`).
    let opened = lead.matches('(').count() + separators.iter().map(|s| s.matches('(').count()).sum::<usize>();
    let closed = separators.iter().map(|s| s.matches(')').count()).sum::<usize>();
    if opened > 1 || opened != closed {
        return None;
    }
    if separators.iter().any(|s| s.contains('/')) || looks_like_date_or_time(&text[first..end]) {
        return None;
    }
    let digits = digits_of(text, groups);
    let lengths: Vec<usize> = groups.iter().map(|g| g.len()).collect();
    let plus = lead.contains('+');
    let accepted = if plus {
        (8..=15).contains(&digits.len())
    } else if digits.starts_with(b"00") {
        groups.len() >= 2 && (10..=15).contains(&digits.len())
    } else if lengths == [3, 3, 4] || (lengths == [1, 3, 3, 4] && digits[0] == b'1') {
        true
    } else {
        digits[0] == b'0' && groups.len() >= 2 && (9..=12).contains(&digits.len()) && lengths.iter().all(|l| *l >= 2)
    };
    accepted.then_some(start..end)
}

/// `2024-01-15...`, `15.01.2024...`, `1/2/24...`: a date (and what follows it in the run).
fn looks_like_date_or_time(text: &str) -> bool {
    let parts: Vec<&str> = text.split(|c: char| !c.is_ascii_digit()).filter(|p| !p.is_empty()).take(3).collect();
    let lengths: Vec<usize> = parts.iter().map(|p| p.len()).collect();
    let day_first = matches!(lengths.as_slice(), [1 | 2, 1 | 2, 2 | 4]);
    let year_first = matches!(lengths.as_slice(), [4, 1 | 2, 1 | 2]);
    let separated = text.chars().find(|c| !c.is_ascii_digit()).is_some_and(|c| matches!(c, '.' | '-' | '/'));
    separated && (day_first || year_first)
}

/// Redacts the texts of one request: remembers each value it replaced and its placeholder,
/// and counts the replacements by kind.
pub struct Redactor<'r> {
    patterns: &'r Patterns,
    /// The kinds to redact, in [`ORDER`].
    kinds: &'r [RedactionKind],
    /// Original value to its placeholder.
    placeholders: HashMap<String, String>,
    /// Placeholder to original value, for the answer.
    originals: Vec<(String, String)>,
    /// The last number given to each kind's placeholders (by [`RedactionKind::ALL`] index).
    numbers: [u32; RedactionKind::ALL.len()],
    /// Bracketed names the prompt itself contains.
    taken: HashSet<String>,
    /// Values replaced, by kind ([`RedactionKind::ALL`] index).
    pub counts: [u64; RedactionKind::ALL.len()],
}

impl std::fmt::Debug for Redactor<'_> {
    // What it found is exactly what must never be printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor").field("kinds", &self.kinds).field("counts", &self.counts).finish_non_exhaustive()
    }
}

impl<'r> Redactor<'r> {
    /// A redactor of `kinds` (in [`ORDER`]).
    pub fn new(patterns: &'r Patterns, kinds: &'r [RedactionKind]) -> Self {
        Self {
            patterns,
            kinds,
            placeholders: HashMap::new(),
            originals: Vec::new(),
            numbers: [0; RedactionKind::ALL.len()],
            taken: HashSet::new(),
            counts: [0; RedactionKind::ALL.len()],
        }
    }

    /// Notes the placeholder-shaped names `text` already contains, so that no placeholder takes
    /// them. Call it on every text before redacting any.
    pub fn reserve(&mut self, text: &str) {
        if memchr::memchr(b'[', text.as_bytes()).is_none() {
            return;
        }
        self.taken.extend(self.patterns.placeholder.find_iter(text).map(|m| m.as_str().to_owned()));
    }

    /// Replaces every value of the redactor's kinds in `text`; returns whether it changed.
    pub fn redact(&mut self, text: &mut String) -> bool {
        let mut changed = false;
        for &kind in self.kinds {
            let spans = find(self.patterns, kind, text);
            if spans.is_empty() {
                continue;
            }
            let mut out = String::with_capacity(text.len());
            let mut at = 0;
            for span in &spans {
                out.push_str(&text[at..span.start]);
                out.push_str(&self.placeholder(kind, &text[span.clone()]));
                at = span.end;
            }
            out.push_str(&text[at..]);
            self.counts[kind as usize] += spans.len() as u64;
            *text = out;
            changed = true;
        }
        changed
    }

    /// The placeholder of `value`: the one it already has, or the kind's next free one.
    fn placeholder(&mut self, kind: RedactionKind, value: &str) -> String {
        if let Some(placeholder) = self.placeholders.get(value) {
            return placeholder.clone();
        }
        let placeholder = loop {
            let number = &mut self.numbers[kind as usize];
            *number += 1;
            let candidate = format!("[{}_{number}]", placeholder_name(kind));
            if !self.taken.contains(&candidate) {
                break candidate;
            }
        };
        self.placeholders.insert(value.to_owned(), placeholder.clone());
        self.originals.push((placeholder.clone(), value.to_owned()));
        placeholder
    }

    /// What the answer needs to get the originals back.
    pub fn into_restore(self) -> Restore {
        Restore::new(self.originals)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds_found(kind: RedactionKind, text: &str) -> Vec<&str> {
        let patterns = patterns().expect("patterns compile");
        find(patterns, kind, text).into_iter().map(|span| &text[span]).collect()
    }

    fn redacted(kinds: &[RedactionKind], texts: &[&str]) -> (Vec<String>, Restore, [u64; 7]) {
        let patterns = patterns().expect("patterns compile");
        let ordered: Vec<RedactionKind> = ORDER.iter().copied().filter(|k| kinds.contains(k)).collect();
        let mut redactor = Redactor::new(patterns, &ordered);
        for text in texts {
            redactor.reserve(text);
        }
        let out = texts
            .iter()
            .map(|text| {
                let mut text = (*text).to_owned();
                redactor.redact(&mut text);
                text
            })
            .collect();
        let counts = redactor.counts;
        (out, redactor.into_restore(), counts)
    }

    #[test]
    fn luhn_accepts_real_card_numbers_and_refuses_one_changed_digit() {
        for card in ["4111111111111111", "5555555555554444", "378282246310005", "6011111111111117", "2223003122003222"]
        {
            assert!(luhn_valid(card.as_bytes()), "{card}");
        }
        assert!(!luhn_valid(b"4111111111111112"));
        assert!(!luhn_valid(b"1234567812345678"));
        assert!(!luhn_valid(b""));
    }

    #[test]
    fn iban_checks_mod_97() {
        for iban in [
            "DE89370400440532013000",
            "GB82 WEST 1234 5698 7654 32",
            "FR1420041010050500013M02606",
            "NL91ABNA0417164300",
        ] {
            assert!(iban_valid(iban), "{iban}");
        }
        assert!(!iban_valid("DE89370400440532013001"), "one digit changed");
        assert!(!iban_valid("DE8937040044"), "too short");
        assert!(!iban_valid("de89370400440532013000"), "lower case is not looked for");
    }

    #[test]
    fn card_numbers_must_pass_luhn_and_look_like_cards() {
        let found = |text| kinds_found(CardNumber, text);
        assert_eq!(found("card 4111 1111 1111 1111, exp 12/27"), ["4111 1111 1111 1111"]);
        assert_eq!(found("4111-1111-1111-1111"), ["4111-1111-1111-1111"]);
        assert_eq!(found("pay with 5555555555554444."), ["5555555555554444"]);
        assert_eq!(found("amex 3782 822463 10005"), ["3782 822463 10005"]);
        assert_eq!(found("order 12 4111 1111 1111 1111"), ["4111 1111 1111 1111"], "a window inside a run");
        assert!(found("4111 1111 1111 1112").is_empty(), "Luhn fails");
        assert!(found("4111-1111 1111-1111").is_empty(), "mixed separators");
        assert!(found("id 79927398713 and 1111111111111117").is_empty(), "not a card network's range");
        assert!(found("hash a4111111111111111").is_empty(), "inside a word");
    }

    #[test]
    fn ibans_are_found_in_groups_or_not_and_cut_before_the_next_word() {
        let found = |text| kinds_found(Iban, text);
        assert_eq!(found("IBAN: DE89 3704 0044 0532 0130 00 for rent"), ["DE89 3704 0044 0532 0130 00"]);
        assert_eq!(found("to GB82WEST12345698765432."), ["GB82WEST12345698765432"]);
        assert_eq!(found("DE89 3704 0044 0532 0130 00 SEPA"), ["DE89 3704 0044 0532 0130 00"]);
        assert!(found("DE89 3704 0044 0532 0130 01").is_empty(), "checksum fails");
    }

    #[test]
    fn phone_numbers_written_as_phone_numbers() {
        let found = |text| kinds_found(Phone, text);
        assert_eq!(found("call +1 (555) 123-4567 now"), ["+1 (555) 123-4567"]);
        assert_eq!(found("call (555) 123-4567"), ["(555) 123-4567"]);
        assert_eq!(found("555.123.4567 or 555-987-6543"), ["555.123.4567", "555-987-6543"]);
        assert_eq!(found("+44 20 7946 0958"), ["+44 20 7946 0958"]);
        assert_eq!(found("+4915112345678"), ["+4915112345678"]);
        assert_eq!(found("0044 20 7946 0958"), ["0044 20 7946 0958"]);
        assert_eq!(found("Tel. 030 12345678"), ["030 12345678"]);
        assert_eq!(found("06 12 34 56 78"), ["06 12 34 56 78"]);
        assert_eq!(found("1-800-555-0199"), ["1-800-555-0199"]);
        // Not phone numbers.
        for text in [
            "on 2024-01-15 10:30",
            "on 01.02.2024 12:00",
            "version 1.2.3",
            "pi is 3.14159265358979",
            "order 5551234567",
            "total 1,234,567",
            "ref abc5551234567",
            "+12 34",
        ] {
            assert!(found(text).is_empty(), "{text}: {:?}", found(text));
        }
    }

    #[test]
    fn emails_keys_tokens_and_private_keys() {
        assert_eq!(
            kinds_found(Email, "write to jane.doe+work@mail.example.co.uk or bob@x.io."),
            ["jane.doe+work@mail.example.co.uk", "bob@x.io"]
        );
        assert!(kinds_found(Email, "not@an-address and @handle").is_empty());
        assert_eq!(
            kinds_found(
                ApiKey,
                "key sk-proj-abcdEFGH1234ijklMNOP5678 and sl_acme_0123456789abcdefXYZ and AKIAIOSFODNN7EXAMPLE"
            ),
            ["sk-proj-abcdEFGH1234ijklMNOP5678", "sl_acme_0123456789abcdefXYZ", "AKIAIOSFODNN7EXAMPLE"]
        );
        assert!(kinds_found(ApiKey, "use sk-learn-and-other-libraries-here").is_empty(), "no digit: a word");
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.dBjftJeZ4CVPmB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let text = format!("Authorization: Bearer abc_def0123456789abcdef. And {jwt}");
        assert_eq!(kinds_found(BearerToken, &text), ["abc_def0123456789abcdef", jwt]);
        let pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\nabc\n-----END RSA PRIVATE KEY-----";
        let text = format!("here:\n{pem}\nthanks");
        assert_eq!(kinds_found(PrivateKey, &text), [pem]);
        let cut = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBg";
        assert_eq!(kinds_found(PrivateKey, &format!("oops {cut}")), [cut], "a key cut short still goes");
    }

    #[test]
    fn same_value_same_placeholder_and_prompt_names_are_never_reused() {
        let (out, restore, counts) = redacted(
            &RedactionKind::ALL,
            &["mail a@b.io and [EMAIL_1] then c@d.io", "again a@b.io, card 4111 1111 1111 1111"],
        );
        assert_eq!(out, ["mail [EMAIL_2] and [EMAIL_1] then [EMAIL_3]", "again [EMAIL_2], card [CARD_1]"]);
        assert_eq!(counts[Email as usize], 3);
        assert_eq!(counts[CardNumber as usize], 1);
        assert_eq!(restore.text("[EMAIL_1] [EMAIL_2] [CARD_1]"), "[EMAIL_1] a@b.io 4111 1111 1111 1111");
    }

    #[test]
    fn only_the_configured_kinds_are_redacted() {
        let (out, _, counts) = redacted(&[Email], &["a@b.io +44 20 7946 0958"]);
        assert_eq!(out, ["[EMAIL_1] +44 20 7946 0958"]);
        assert_eq!(counts.iter().sum::<u64>(), 1);
        let (out, _, _) = redacted(&[], &["a@b.io"]);
        assert_eq!(out, ["a@b.io"]);
    }

    #[test]
    fn debug_output_names_no_value() {
        let patterns = patterns().expect("patterns compile");
        let kinds = [Email];
        let mut redactor = Redactor::new(patterns, &kinds);
        let mut text = "jane@example.com".to_owned();
        assert!(redactor.redact(&mut text));
        assert!(!format!("{redactor:?}").contains("jane"));
        assert!(!format!("{:?}", redactor.into_restore()).contains("jane"));
    }
}
