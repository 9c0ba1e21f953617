//! An endpoint's defaults (`defaultModel`, `defaultParameters`) written into a request that
//! lacks them. A field the client sent, even as `null`, is the client's: only absent top-level
//! fields are filled, inserted after the body's opening brace; every other byte stays as it
//! was, and a body that names every field is not copied. `max_tokens` and
//! `max_completion_tokens` are one field here: a client that sent either gets neither default.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use serde::de::IgnoredAny;
use serde_json::Value;

/// Fields that say the same thing: a client that sent one has chosen for all of them.
const SAME_FIELD: &[&[&str]] = &[&["max_tokens", "max_completion_tokens"]];

/// What an endpoint fills in, made once when the configuration is loaded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestDefaults {
    /// The model a request that names none gets.
    model: Option<String>,
    /// Each parameter's name and its value as JSON text, in name order.
    parameters: Vec<(String, String)>,
}

impl RequestDefaults {
    /// The defaults of an endpoint (`parameters` already checked by the configuration's
    /// validation: scalars or lists of scalars).
    pub fn new(model: Option<&str>, parameters: &BTreeMap<String, Value>) -> Self {
        Self {
            model: model.map(str::to_owned),
            parameters: parameters.iter().map(|(name, value)| (name.clone(), value.to_string())).collect(),
        }
    }

    /// Whether there is anything to fill in.
    pub fn is_empty(&self) -> bool {
        self.model.is_none() && self.parameters.is_empty()
    }

    /// `body` (a JSON object: a chat completions request, or a Messages or Responses one, or
    /// any other OpenAI request) with the default model when it names none and, with
    /// `parameters`, each default parameter it does not send. A body that is not a JSON object
    /// is returned as it is, for the next stage to refuse in its own words.
    pub fn fill(&self, body: &Bytes, parameters: bool) -> Bytes {
        let parameters: &[(String, String)] = if parameters { &self.parameters } else { &[] };
        if self.model.is_none() && parameters.is_empty() {
            return body.clone();
        }
        let Ok(sent) = serde_json::from_slice::<HashMap<String, IgnoredAny>>(body) else { return body.clone() };
        let absent = |name: &str| {
            let same = SAME_FIELD.iter().find(|names| names.contains(&name)).copied().unwrap_or(&[]);
            !sent.contains_key(name) && !same.iter().any(|other| sent.contains_key(*other))
        };
        let mut insert = Vec::new();
        let mut add = |name: &str, json: &str| {
            // Serialising a &str to JSON cannot fail.
            insert.extend_from_slice(&serde_json::to_vec(name).unwrap_or_default());
            insert.push(b':');
            insert.extend_from_slice(json.as_bytes());
            insert.push(b',');
        };
        if let Some(model) = self.model.as_deref().filter(|_| absent("model")) {
            add("model", &Value::String(model.to_owned()).to_string());
        }
        for (name, json) in parameters.iter().filter(|(name, _)| absent(name)) {
            add(name, json);
        }
        if insert.is_empty() {
            return body.clone();
        }
        // The body parsed as an object: its first `{` opens it (only whitespace comes before).
        let brace = body.iter().position(|b| *b == b'{').unwrap_or(0);
        if sent.is_empty() {
            insert.pop();
        }
        let mut out = Vec::with_capacity(body.len() + insert.len());
        out.extend_from_slice(&body[..=brace]);
        out.extend_from_slice(&insert);
        out.extend_from_slice(&body[brace + 1..]);
        Bytes::from(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn defaults(model: Option<&str>, parameters: Value) -> RequestDefaults {
        let parameters: BTreeMap<String, Value> = serde_json::from_value(parameters).expect("an object");
        RequestDefaults::new(model, &parameters)
    }

    fn filled(defaults: &RequestDefaults, body: &str, parameters: bool) -> String {
        String::from_utf8(defaults.fill(&Bytes::copy_from_slice(body.as_bytes()), parameters).to_vec()).expect("utf8")
    }

    #[test]
    fn absent_fields_are_filled_and_the_clients_own_win() {
        let defaults = defaults(Some("chat"), json!({"temperature": 0.2, "max_tokens": 512, "stop": ["END"]}));
        assert_eq!(
            filled(&defaults, r#"{"messages":[{"role":"user","content":"hi"}]}"#, true),
            r#"{"model":"chat","max_tokens":512,"stop":["END"],"temperature":0.2,"messages":[{"role":"user","content":"hi"}]}"#
        );
        assert_eq!(
            filled(&defaults, r#" { "model" : "mine", "temperature": 1.5 , "messages": []}"#, true),
            r#" {"max_tokens":512,"stop":["END"], "model" : "mine", "temperature": 1.5 , "messages": []}"#,
            "the client's model and temperature stay, byte for byte"
        );
        let parsed: Value = serde_json::from_str(&filled(&defaults, "{}", true)).expect("still JSON");
        assert_eq!(parsed, json!({"model": "chat", "max_tokens": 512, "stop": ["END"], "temperature": 0.2}));
    }

    #[test]
    fn max_tokens_and_max_completion_tokens_are_one_field() {
        let defaults = defaults(None, json!({"max_tokens": 512}));
        let body = r#"{"model":"m","max_completion_tokens":5}"#;
        assert_eq!(filled(&defaults, body, true), body);
        let other = self::defaults(None, json!({"max_completion_tokens": 512}));
        let body = r#"{"model":"m","max_tokens":5}"#;
        assert_eq!(filled(&other, body, true), body);
    }

    #[test]
    fn a_null_is_the_clients_choice_and_parameters_can_be_left_out() {
        let defaults = defaults(Some("chat"), json!({"temperature": 0.2}));
        let body = r#"{"temperature":null,"input":"x"}"#;
        assert_eq!(filled(&defaults, body, true), r#"{"model":"chat","temperature":null,"input":"x"}"#);
        assert_eq!(filled(&defaults, r#"{"input":"x"}"#, false), r#"{"model":"chat","input":"x"}"#, "model only");
    }

    #[test]
    fn nothing_to_fill_means_no_copy_and_non_objects_pass() {
        let defaults = defaults(Some("chat"), json!({"temperature": 0.2}));
        let body = Bytes::from_static(br#"{"model":"m","temperature":1}"#);
        assert_eq!(defaults.fill(&body, true).as_ptr(), body.as_ptr());
        for odd in [&b"[1,2]"[..], b"not json", b""] {
            let body = Bytes::copy_from_slice(odd);
            assert_eq!(defaults.fill(&body, true), body);
        }
        assert!(RequestDefaults::default().is_empty());
        let none = Bytes::from_static(b"{}");
        assert_eq!(RequestDefaults::default().fill(&none, true).as_ptr(), none.as_ptr());
    }
}
