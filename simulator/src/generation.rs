//! What a request asks the model to produce (length limits, stop sequences, text, JSON or a tool
//! call) and the deterministic output for it: a pure function of the profile's seed, the prompt
//! and the choice index.

use serde_json::{Value, json};

use crate::profile::Profile;
use crate::rng::{SplitMix64, combine};
use crate::textgen::{Tokens, value_for_schema, words};

/// The kind of output asked for.
#[derive(Debug, Clone, Copy)]
pub(crate) enum OutputMode<'a> {
    /// Prose.
    Text,
    /// A JSON document: following the schema if one is given, else `{"answer": "..."}`.
    Json(Option<&'a Value>),
    /// A call of the named tool with arguments following its parameter schema.
    Tool { name: &'a str, parameters: Option<&'a Value> },
    /// The given text (the request's own, with the profile's `echo`).
    Echo(&'a str),
}

/// Everything about a request that shapes its output.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OutputSpec<'a> {
    pub max_tokens: Option<u32>,
    pub ignore_eos: bool,
    pub stops: &'a [String],
    pub mode: OutputMode<'a>,
}

/// Why the output ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Finish {
    /// The model stopped by itself.
    Stop,
    /// `max_tokens` was reached.
    Length,
    /// A stop sequence was produced (its index in the request's list).
    StopSequence(usize),
    /// The output is a complete tool call.
    ToolCall,
}

impl Finish {
    /// OpenAI's `finish_reason` (also vLLM's `finished_reason` label).
    pub fn openai(self) -> &'static str {
        match self {
            Finish::Stop | Finish::StopSequence(_) => "stop",
            Finish::Length => "length",
            Finish::ToolCall => "tool_calls",
        }
    }
}

/// One generated choice.
#[derive(Debug, Clone)]
pub(crate) struct Output {
    /// The text (prose, JSON, or the tool call's arguments), token by token.
    pub tokens: Tokens,
    pub finish: Finish,
    /// The tool called, if the output is a tool call.
    pub tool: Option<String>,
    /// Seeds the ids of this choice (tool-call ids).
    pub seed: u64,
}

/// The output of choice `choice` for a prompt whose hash is `prompt_hash`.
pub(crate) fn generate(profile: &Profile, prompt_hash: u64, choice: usize, spec: &OutputSpec<'_>) -> Output {
    let seed = combine(combine(profile.seed, prompt_hash), choice as u64);
    let mut rng = SplitMix64::new(seed);
    let spread = (rng.next_f64() * 2.0 - 1.0) * profile.output_tokens_spread;
    let natural = ((f64::from(profile.output_tokens) * (1.0 + spread)).round() as usize).max(1);
    let limit = spec.max_tokens.map_or(usize::MAX, |m| m as usize);
    let (target, cut_by_length) = match spec.max_tokens {
        Some(max) if spec.ignore_eos => (max as usize, true),
        _ => (natural.min(limit), limit < natural),
    };
    let content_seed = rng.next_u64();
    let (mut tokens, tool) = match spec.mode {
        OutputMode::Text => {
            let tokens = words(content_seed, target, !cut_by_length);
            let mut output =
                Output { finish: if cut_by_length { Finish::Length } else { Finish::Stop }, tokens, tool: None, seed };
            if let Some(which) = output.tokens.cut_at_stop(spec.stops) {
                output.finish = Finish::StopSequence(which);
            }
            return output;
        }
        OutputMode::Json(schema) => {
            let value = match schema {
                Some(schema) => value_for_schema(schema, &mut rng),
                None => {
                    json!({"answer": words(content_seed, natural.saturating_sub(8).max(1), true).text()})
                }
            };
            (Tokens::from_text(value.to_string()), None)
        }
        OutputMode::Tool { name, parameters } => {
            let value = parameters.map_or_else(|| json!({}), |schema| value_for_schema(schema, &mut rng));
            (Tokens::from_text(value.to_string()), Some(name.to_owned()))
        }
        OutputMode::Echo(text) => {
            let mut tokens = Tokens::from_text(text.to_owned());
            let mut finish = Finish::Stop;
            if tokens.len() > limit {
                tokens.truncate(limit);
                finish = Finish::Length;
            }
            let mut output = Output { tokens, finish, tool: None, seed };
            if let Some(which) = output.tokens.cut_at_stop(spec.stops) {
                output.finish = Finish::StopSequence(which);
            }
            return output;
        }
    };
    let finish = if tokens.len() > limit {
        tokens.truncate(limit);
        Finish::Length
    } else if tool.is_some() {
        Finish::ToolCall
    } else {
        Finish::Stop
    };
    Output { tokens, finish, tool, seed }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer;

    fn spec(max_tokens: Option<u32>) -> OutputSpec<'static> {
        OutputSpec { max_tokens, ignore_eos: false, stops: &[], mode: OutputMode::Text }
    }

    #[test]
    fn natural_length_and_limits() {
        let profile = Profile::default();
        let out = generate(&profile, 1, 0, &spec(None));
        assert_eq!(out.tokens.len(), 64);
        assert_eq!(out.finish, Finish::Stop);
        assert_eq!(tokenizer::count(out.tokens.text()), 64);
        let short = generate(&profile, 1, 0, &spec(Some(10)));
        assert_eq!(short.tokens.len(), 10);
        assert_eq!(short.finish, Finish::Length);
        assert!(out.tokens.text().starts_with(short.tokens.text()));
        let roomy = generate(&profile, 1, 0, &spec(Some(1000)));
        assert_eq!(roomy.tokens.len(), 64);
        let forced = generate(&profile, 1, 0, &OutputSpec { ignore_eos: true, ..spec(Some(300)) });
        assert_eq!(forced.tokens.len(), 300);
        assert_eq!(forced.finish, Finish::Length);
    }

    #[test]
    fn deterministic_per_prompt_seed_and_choice() {
        let profile = Profile::default();
        let a = generate(&profile, 1, 0, &spec(None));
        assert_eq!(a.tokens, generate(&profile, 1, 0, &spec(None)).tokens);
        assert_ne!(a.tokens, generate(&profile, 2, 0, &spec(None)).tokens);
        assert_ne!(a.tokens, generate(&profile, 1, 1, &spec(None)).tokens);
        let reseeded = Profile { seed: 9, ..Profile::default() };
        assert_ne!(a.tokens, generate(&reseeded, 1, 0, &spec(None)).tokens);
    }

    #[test]
    fn spread_varies_length_within_bounds() {
        let profile = Profile { output_tokens: 100, output_tokens_spread: 0.5, ..Profile::default() };
        let lengths: Vec<usize> = (0..200).map(|h| generate(&profile, h, 0, &spec(None)).tokens.len()).collect();
        assert!(lengths.iter().all(|l| (50..=150).contains(l)));
        let mean = lengths.iter().sum::<usize>() as f64 / lengths.len() as f64;
        assert!((mean - 100.0).abs() < 8.0, "{mean}");
    }

    #[test]
    fn tool_calls_and_json() {
        let profile = Profile::default();
        let params = json!({"type": "object", "properties": {"city": {"type": "string"}}});
        let tool = OutputSpec { mode: OutputMode::Tool { name: "weather", parameters: Some(&params) }, ..spec(None) };
        let out = generate(&profile, 3, 0, &tool);
        assert_eq!(out.finish, Finish::ToolCall);
        assert_eq!(out.tool.as_deref(), Some("weather"));
        let args: Value = serde_json::from_str(out.tokens.text()).expect("arguments are JSON");
        assert!(args["city"].is_string());
        let json_mode = OutputSpec { mode: OutputMode::Json(None), ..spec(None) };
        let out = generate(&profile, 3, 0, &json_mode);
        let doc: Value = serde_json::from_str(out.tokens.text()).expect("JSON mode gives JSON");
        assert!(doc["answer"].is_string());
        let cut = generate(&profile, 3, 0, &OutputSpec { max_tokens: Some(3), ..json_mode });
        assert_eq!(cut.finish, Finish::Length);
        assert_eq!(cut.tokens.len(), 3);
    }

    #[test]
    fn echo_repeats_the_text_token_by_token_within_limits() {
        let profile = Profile::default();
        let text = "Mail [EMAIL_1] today";
        let out = generate(&profile, 1, 0, &OutputSpec { mode: OutputMode::Echo(text), ..spec(None) });
        assert_eq!(out.tokens.text(), text);
        assert_eq!(out.finish, Finish::Stop);
        assert!(out.tokens.len() >= 6, "a placeholder is several tokens: {}", out.tokens.len());
        assert_eq!(out.tokens.token(1), " [", "punctuation is a token of its own");
        let cut = generate(&profile, 1, 0, &OutputSpec { mode: OutputMode::Echo(text), ..spec(Some(2)) });
        assert_eq!((cut.tokens.text(), cut.finish), ("Mail [", Finish::Length));
        let stops = ["today".to_owned()];
        let stopped =
            generate(&profile, 1, 0, &OutputSpec { mode: OutputMode::Echo(text), stops: &stops, ..spec(None) });
        assert_eq!((stopped.tokens.text(), stopped.finish), ("Mail [EMAIL_1] ", Finish::StopSequence(0)));
    }

    #[test]
    fn stop_sequences_cut_text() {
        let profile = Profile::default();
        let full = generate(&profile, 5, 0, &spec(None));
        let word: String = full.tokens.token(3).trim().to_owned();
        let stops = [word.clone()];
        let out = generate(&profile, 5, 0, &OutputSpec { stops: &stops, ..spec(None) });
        assert_eq!(out.finish, Finish::StopSequence(0));
        assert!(!out.tokens.text().contains(&word));
        assert!(out.tokens.len() <= 4);
    }
}
