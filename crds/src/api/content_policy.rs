//! An Endpoint's content policies: PII redaction (what is replaced by placeholders before a
//! prompt leaves the gateway, and whether the answer gets the originals back) and content rules
//! (phrases, regular expressions and prompt-injection heuristics that refuse a request).

use serde::{Deserialize, Serialize};

/// Personal data and secrets in prompts replaced by placeholders (`[EMAIL_1]`, `[CARD_1]`...)
/// before the request leaves the gateway; the same value gets the same placeholder within a
/// request. The placeholders' originals live only in the request's memory and are never logged.
/// With redaction on, a Messages or Gemini request is always translated for its backend (never
/// passed through as the client sent it), so that what leaves is what was redacted.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RedactionSpec {
    /// What to redact. Absent: every kind. `email`: e-mail addresses. `phone`: phone numbers
    /// written as phone numbers (international `+` or `00` prefix, North American `555-123-4567`,
    /// national numbers starting with 0). `cardNumber`: payment card numbers that pass the Luhn
    /// check. `iban`: IBANs that pass the mod-97 check. `apiKey`: API keys of well-known shapes
    /// (`sk-...`, `sl_...`, `AKIA...`, `ghp_...`, `AIza...`, `xoxb-...`...). `bearerToken`:
    /// `Bearer <token>` and JSON Web Tokens. `privateKey`: PEM private key blocks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 7))]
    pub kinds: Option<Vec<RedactionKind>>,
    /// Put the originals back into the answer's text (whole answers and streams alike), so the
    /// client sees its own data while the upstream only ever saw placeholders.
    #[serde(default)]
    pub restore: bool,
}

/// A kind of personal data or secret that redaction finds.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum RedactionKind {
    /// E-mail addresses (`[EMAIL_n]`).
    Email,
    /// Phone numbers (`[PHONE_n]`).
    Phone,
    /// Payment card numbers, Luhn-checked (`[CARD_n]`).
    CardNumber,
    /// International bank account numbers, mod-97-checked (`[IBAN_n]`).
    Iban,
    /// API keys of well-known shapes (`[API_KEY_n]`).
    ApiKey,
    /// Bearer tokens and JSON Web Tokens (`[BEARER_TOKEN_n]`).
    BearerToken,
    /// PEM private keys (`[PRIVATE_KEY_n]`).
    PrivateKey,
}

impl RedactionKind {
    /// Every kind, in declaration order.
    pub const ALL: [Self; 7] =
        [Self::Email, Self::Phone, Self::CardNumber, Self::Iban, Self::ApiKey, Self::BearerToken, Self::PrivateKey];

    /// The name in the API (`cardNumber`), also the `kind` label of the redaction metric.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Email => "email",
            Self::Phone => "phone",
            Self::CardNumber => "cardNumber",
            Self::Iban => "iban",
            Self::ApiKey => "apiKey",
            Self::BearerToken => "bearerToken",
            Self::PrivateKey => "privateKey",
        }
    }
}

/// Rules that refuse a request whose prompt matches them, with `422 content_rule_violation`,
/// before it counts against any limit or reaches any backend. With content rules on, a Messages
/// or Gemini request is always translated for its backend (never passed through as the client
/// sent it), so that what leaves is what was checked.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContentRulesSpec {
    /// `enforce` (default): a matching request is refused. `dryRun`: it is only counted
    /// (`sluice_content_rule_matches_total{mode="dryRun"}`) and goes on, to try rules out on real
    /// traffic first.
    #[serde(default)]
    pub mode: ContentRuleMode,
    /// Phrases refused anywhere in the prompt, matched literally and case-insensitively
    /// (`"internal use only"` also matches `INTERNAL USE ONLY`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(min = 1, max = 256)))]
    pub blocked: Vec<String>,
    /// Regular expressions (Rust `regex` syntax: no look-around or back-references; `(?i)` for
    /// case-insensitive) refused anywhere in the prompt.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 1024)))]
    pub patterns: Vec<String>,
    /// Refuse prompts that match the gateway's prompt-injection heuristics (instructions to
    /// ignore previous instructions, jailbreak personas such as DAN, requests to reveal the
    /// system prompt, chat-template control tokens), in user and tool messages. A heuristic:
    /// it misses rephrased attacks and can catch a harmless question about these topics.
    #[serde(default)]
    pub prompt_injection: bool,
}

/// Whether content rules refuse or only count.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ContentRuleMode {
    /// A matching request is refused with `422`.
    #[default]
    Enforce,
    /// A matching request is counted and served.
    DryRun,
}

impl ContentRuleMode {
    /// The name in the API, also the `mode` label of the content rule metric.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enforce => "enforce",
            Self::DryRun => "dryRun",
        }
    }
}

/// Most bytes of compiled program a content rule pattern may take: a pattern that needs more is
/// refused when it is compiled, so one rule cannot make every request slow.
pub const PATTERN_SIZE_LIMIT: usize = 1 << 20;

/// Compiles a content rule pattern as the gateway does (with [`PATTERN_SIZE_LIMIT`]).
pub fn compile_pattern(pattern: &str) -> Result<regex::Regex, regex::Error> {
    regex::RegexBuilder::new(pattern).size_limit(PATTERN_SIZE_LIMIT).build()
}

impl ContentRulesSpec {
    /// What is wrong with these rules, each as (field below `contentRules`, problem).
    pub fn problems(&self) -> Vec<(String, String)> {
        content_rule_problems(&self.blocked, &self.patterns, self.prompt_injection)
    }
}

/// What is wrong with a set of content rules, each as (field below `contentRules`, or empty for
/// the whole; problem): no rule at all, a blank phrase, a pattern that does not compile (with
/// [`compile_pattern`]) or that matches every text.
pub fn content_rule_problems(blocked: &[String], patterns: &[String], prompt_injection: bool) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    if blocked.is_empty() && patterns.is_empty() && !prompt_injection {
        problems.push((String::new(), "no rule: set blocked, patterns or promptInjection".to_owned()));
    }
    for (i, phrase) in blocked.iter().enumerate() {
        if phrase.trim().is_empty() {
            problems.push((format!("blocked[{i}]"), "an empty phrase would match every request".to_owned()));
        }
    }
    for (i, pattern) in patterns.iter().enumerate() {
        match compile_pattern(pattern) {
            Err(error) => {
                // The regex error spans several lines (the pattern, a caret, the reason).
                let reason = error.to_string().lines().last().unwrap_or_default().trim().to_owned();
                problems.push((format!("patterns[{i}]"), format!("not a valid regular expression: {reason}")));
            }
            Ok(regex) if regex.is_match("") => {
                problems.push((format!("patterns[{i}]"), "matches the empty text, so every request".to_owned()));
            }
            Ok(_) => {}
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_modes_have_their_documented_spellings() {
        for kind in RedactionKind::ALL {
            assert_eq!(serde_json::to_value(kind).ok(), Some(serde_json::Value::from(kind.as_str())));
        }
        for mode in [ContentRuleMode::Enforce, ContentRuleMode::DryRun] {
            assert_eq!(serde_json::to_value(mode).ok(), Some(serde_json::Value::from(mode.as_str())));
        }
    }

    #[test]
    fn rules_name_the_field_at_fault() {
        let rules = ContentRulesSpec {
            blocked: vec!["ok".into(), "  ".into()],
            patterns: vec!["(unclosed".into(), "a*".into(), r"\bfine\b".into()],
            ..ContentRulesSpec::default()
        };
        let fields: Vec<String> = rules.problems().into_iter().map(|(field, _)| field).collect();
        assert_eq!(fields, ["blocked[1]", "patterns[0]", "patterns[1]"]);
        assert_eq!(ContentRulesSpec::default().problems().len(), 1, "no rule at all");
        let only_heuristics = ContentRulesSpec { prompt_injection: true, ..ContentRulesSpec::default() };
        assert!(only_heuristics.problems().is_empty());
    }
}
