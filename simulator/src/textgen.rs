//! Deterministic generated output: pseudo-English words that are one token each under the
//! [`tokenizer`](crate::tokenizer), and JSON values that follow a JSON schema (tool arguments,
//! JSON mode). Everything is a pure function of a seed.

use serde_json::{Map, Value};

use crate::rng::SplitMix64;
use crate::tokenizer;

/// Short words (at most [`tokenizer::MAX_WORD_PIECE`] ASCII letters, so each is one token).
const WORDS: &[&str] = &[
    "the", "of", "and", "to", "in", "is", "it", "that", "was", "for", "on", "are", "as", "with", "they", "be", "at",
    "one", "have", "this", "from", "or", "had", "by", "word", "but", "what", "some", "we", "can", "out", "were", "all",
    "your", "when", "up", "use", "how", "said", "an", "each", "she", "do", "time", "if", "will", "way", "many", "then",
    "them", "make", "like", "long", "look", "more", "day", "go", "come", "did", "no", "most", "my", "over", "know",
    "than", "call", "down", "only", "new", "work", "part", "take", "get", "year", "live", "back", "give", "very",
    "name", "good", "just", "form", "help", "line", "turn", "much", "mean", "move", "same", "tell", "does", "set",
    "want", "air", "well", "also", "play", "home", "read", "hand", "port", "even", "land", "here", "must", "big",
    "high", "such", "act", "why", "ask", "men", "went", "kind", "off", "need", "try", "us", "near", "self", "head",
    "own", "page", "grow", "food", "four", "keep", "eye", "last", "city", "tree", "farm", "hard", "draw", "left",
    "late", "run", "real", "life", "few", "open", "seem", "next", "walk", "ease", "both", "mark", "mile", "feet",
    "car", "care", "book", "took", "song", "room", "idea", "fish", "once", "base", "hear", "cut", "sure", "face",
    "wood", "main", "fine", "road", "map", "rain", "rule", "pull", "cold", "note", "unit", "town", "fly", "fall",
    "lead", "cry", "dark",
];

/// A generated text and where each of its tokens ends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tokens {
    text: String,
    ends: Vec<usize>,
}

impl Tokens {
    /// Tokenizes `text` with the approximate tokenizer.
    pub fn from_text(text: String) -> Self {
        let mut ends = Vec::new();
        let mut end = 0;
        for piece in tokenizer::pieces(&text) {
            end += piece.len();
            ends.push(end);
        }
        Self { text, ends }
    }

    /// The whole text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The number of tokens.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// The text of token `i` (empty past the end).
    pub fn token(&self, i: usize) -> &str {
        let Some(&end) = self.ends.get(i) else {
            return "";
        };
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.text[start..end]
    }

    /// Keeps the first `n` tokens.
    pub fn truncate(&mut self, n: usize) {
        if n < self.ends.len() {
            self.ends.truncate(n);
            self.text.truncate(self.ends.last().copied().unwrap_or(0));
        }
    }

    /// Cuts the text before the earliest occurrence of any of `stops` and returns the index of the
    /// stop sequence found. A token cut in the middle still counts as generated.
    pub fn cut_at_stop(&mut self, stops: &[String]) -> Option<usize> {
        let (at, which) = stops
            .iter()
            .enumerate()
            .filter(|(_, stop)| !stop.is_empty())
            .filter_map(|(i, stop)| self.text.find(stop.as_str()).map(|at| (at, i)))
            .min()?;
        let kept = self.ends.iter().take_while(|&&end| end < at).count();
        self.ends.truncate(kept);
        if at > self.ends.last().copied().unwrap_or(0) {
            self.ends.push(at);
        }
        self.text.truncate(at);
        Some(which)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Last {
    Start,
    Word,
    Comma,
    Period,
}

/// `n` tokens of pseudo-English from `seed`. With `natural_end`, the last token is a period (the
/// model "chose" to stop); without it the text is cut where it stands (a length limit). The first
/// `k` tokens are the same for every `n >= k`.
pub fn words(seed: u64, n: usize, natural_end: bool) -> Tokens {
    let mut rng = SplitMix64::new(seed);
    let mut text = String::with_capacity(n * 5);
    let mut ends = Vec::with_capacity(n);
    let mut last = Last::Start;
    for i in 0..n {
        let roll = rng.below(100);
        let word = WORDS[rng.below(WORDS.len() as u64) as usize];
        if last == Last::Word && natural_end && i + 1 == n {
            text.push('.');
            last = Last::Period;
        } else if natural_end && i + 2 == n {
            // Leave room for the closing period: this one is a word.
            push_word(&mut text, word, last);
            last = Last::Word;
        } else if last == Last::Word && roll < 8 {
            text.push('.');
            last = Last::Period;
        } else if last == Last::Word && roll < 14 {
            text.push(',');
            last = Last::Comma;
        } else {
            push_word(&mut text, word, last);
            last = Last::Word;
        }
        ends.push(text.len());
    }
    Tokens { text, ends }
}

/// Appends a word after `last`: spaced unless first, capitalized at a sentence start.
fn push_word(out: &mut String, word: &str, last: Last) {
    if last != Last::Start {
        out.push(' ');
    }
    if matches!(last, Last::Start | Last::Period) {
        let mut chars = word.chars();
        if let Some(first) = chars.next() {
            out.push(first.to_ascii_uppercase());
            out.push_str(chars.as_str());
        }
    } else {
        out.push_str(word);
    }
}

/// A short phrase of one to three words.
fn phrase(rng: &mut SplitMix64) -> String {
    let n = 1 + rng.below(3) as usize;
    let mut out = String::new();
    for i in 0..n {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(WORDS[rng.below(WORDS.len() as u64) as usize]);
    }
    out
}

/// A value that validates against the common subset of JSON Schema used for tool parameters:
/// `type` (object, array, string, integer, number, boolean, null), `properties`, `items`, `enum`,
/// `const`. Unknown or missing types give a string.
pub fn value_for_schema(schema: &Value, rng: &mut SplitMix64) -> Value {
    value_at_depth(schema, rng, 0)
}

fn value_at_depth(schema: &Value, rng: &mut SplitMix64, depth: u8) -> Value {
    if let Some(constant) = schema.get("const") {
        return constant.clone();
    }
    if let Some(Value::Array(options)) = schema.get("enum")
        && !options.is_empty()
    {
        return options[rng.below(options.len() as u64) as usize].clone();
    }
    let kind = match schema.get("type") {
        Some(Value::String(kind)) => kind.as_str(),
        // A union of types: take the first that is not null.
        Some(Value::Array(kinds)) => {
            kinds.iter().filter_map(Value::as_str).find(|kind| *kind != "null").unwrap_or("null")
        }
        _ if schema.get("properties").is_some() => "object",
        _ => "string",
    };
    match kind {
        "object" if depth < 4 => {
            let mut map = Map::new();
            if let Some(Value::Object(properties)) = schema.get("properties") {
                for (name, property) in properties {
                    map.insert(name.clone(), value_at_depth(property, rng, depth + 1));
                }
            }
            Value::Object(map)
        }
        "array" if depth < 4 => {
            let item = schema.get("items").unwrap_or(&Value::Null);
            let n = 1 + rng.below(2);
            Value::Array((0..n).map(|_| value_at_depth(item, rng, depth + 1)).collect())
        }
        "integer" => Value::from(rng.below(100)),
        "number" => Value::from(rng.below(1000) as f64 / 10.0),
        "boolean" => Value::from(rng.below(2) == 1),
        "null" => Value::Null,
        "object" => Value::Object(Map::new()),
        "array" => Value::Array(Vec::new()),
        _ => Value::from(phrase(rng)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn vocabulary_words_are_one_token() {
        assert!(WORDS.iter().all(|w| w.len() <= tokenizer::MAX_WORD_PIECE));
    }

    #[test]
    fn every_generated_token_is_one_tokenizer_token() {
        for seed in 0..50 {
            let tokens = words(seed, 200, true);
            assert_eq!(tokens.len(), 200);
            assert_eq!(tokenizer::count(tokens.text()), 200, "{}", tokens.text());
            for i in 0..tokens.len() {
                assert_eq!(tokenizer::count(tokens.token(i)), 1);
            }
            assert!(tokens.text().ends_with('.'));
        }
    }

    #[test]
    fn shorter_runs_are_prefixes() {
        let long = words(9, 100, false);
        let short = words(9, 40, false);
        assert!(long.text().starts_with(short.text()));
        assert_ne!(words(10, 40, false), short);
    }

    #[test]
    fn reads_like_sentences() {
        let text = words(3, 60, true);
        let first = text.text().chars().next();
        assert!(first.is_some_and(|c| c.is_ascii_uppercase()), "{}", text.text());
        assert!(!text.text().contains(".."));
        assert!(!text.text().contains(" ."));
    }

    #[test]
    fn truncate_and_stop() {
        let mut tokens = Tokens::from_text("Alpha beta, gamma.".into());
        let original = tokens.clone();
        tokens.truncate(3);
        assert_eq!(tokens.text(), "Alpha beta");
        assert_eq!(tokens.len(), 3);
        tokens = original.clone();
        assert_eq!(tokens.cut_at_stop(&["zzz".into(), "ta,".into()]), Some(1));
        assert_eq!(tokens.text(), "Alpha be");
        assert_eq!(tokens.token(tokens.len() - 1), " be");
        tokens = original;
        assert_eq!(tokens.cut_at_stop(&["nothing".into()]), None);
        assert_eq!(tokens.cut_at_stop(&["Alpha".into()]), Some(0));
        assert_eq!(tokens.len(), 0);
    }

    #[test]
    fn schema_values_follow_the_schema() {
        let schema = json!({
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["c", "f"]},
                "days": {"type": "integer"},
                "tags": {"type": "array", "items": {"type": "boolean"}},
                "fixed": {"const": 3}
            },
            "required": ["city"]
        });
        let mut rng = SplitMix64::new(1);
        let value = value_for_schema(&schema, &mut rng);
        assert!(value["city"].is_string());
        assert!(["c", "f"].contains(&value["unit"].as_str().unwrap_or_default()));
        assert!(value["days"].is_u64());
        assert!(value["tags"].as_array().is_some_and(|a| a.iter().all(Value::is_boolean)));
        assert_eq!(value["fixed"], 3);
        assert_eq!(value, value_for_schema(&schema, &mut SplitMix64::new(1)));
    }
}
