//! The routing benchmark's trace: who asks what, when, and how fast they hope to be served.
//! Arrivals are open loop with Gamma-distributed gaps (shape 1 = Poisson, below 1 = burstier),
//! and the requests mix two workloads of the routing notes, scaled down about tenfold so a run
//! fits in seconds: multi-turn conversations behind a shared system prompt, and groups of prompts
//! sharing a long prefix. Every request belongs to an SLO class. The same seed gives the same
//! requests in the same order at every rate; only the gaps are scaled.

use serde::{Deserialize, Serialize};

/// An SLO class: which hints its requests send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SloClass {
    /// A person waiting: tight time to first token and per output token.
    Interactive,
    /// Offline work: no hints; it only has to be answered.
    Batch,
}

impl SloClass {
    /// Every class, in table order.
    pub const ALL: [Self; 2] = [Self::Interactive, Self::Batch];

    /// Short name.
    pub fn id(self) -> &'static str {
        match self {
            Self::Interactive => "interactive",
            Self::Batch => "batch",
        }
    }

    /// `X-SLO-TTFT-Ms` and `X-SLO-TPOT-Ms` sent by this class.
    pub fn hints(self) -> (Option<u32>, Option<u32>) {
        match self {
            Self::Interactive => (Some(INTERACTIVE_TTFT_MS), Some(INTERACTIVE_TPOT_MS)),
            Self::Batch => (None, None),
        }
    }
}

/// The interactive class's time-to-first-token hint, ms.
pub const INTERACTIVE_TTFT_MS: u32 = 400;
/// The interactive class's time-per-output-token hint, ms.
pub const INTERACTIVE_TPOT_MS: u32 = 30;
/// Share of requests in the interactive class.
pub const INTERACTIVE_SHARE: f64 = 0.5;
/// Share of requests that are conversation turns (the rest: shared-prefix prompts).
pub const CONVERSATION_SHARE: f64 = 0.5;

/// Conversation workload (llm-d's predicted-latency guide, scaled by 1/10): a system prompt
/// shared by every conversation of an app, turns ~N(6, 3.5) clipped to 2-20, each turn's input
/// lognormal (mean 150, sd 120 tokens), output lognormal (mean 80, sd 60).
pub const APPS: usize = 4;
/// Tokens of each app's system prompt.
pub const SYSTEM_PROMPT_TOKENS: usize = 300;
/// Shared-prefix workload (llm-d-benchmark's shared_prefix_synthetic, scaled): groups sharing a
/// prefix, each prompt a short question after it.
pub const PREFIX_GROUPS: usize = 16;
/// Tokens of each group's shared prefix.
pub const PREFIX_TOKENS: usize = 600;
/// Tokens of the question after the prefix.
pub const QUESTION_TOKENS: usize = 40;

/// Which workload a request comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WorkloadKind {
    /// A turn of a conversation (its history grows).
    Conversation,
    /// A question after a group's shared prefix.
    SharedPrefix,
}

/// One request of the trace.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TraceRequest {
    /// Seconds after the start of the trace.
    pub at: f64,
    /// Its SLO class.
    pub class: SloClass,
    /// Its workload.
    pub workload: WorkloadKind,
    /// The chat `messages` array (JSON).
    pub messages: serde_json::Value,
    /// Prompt tokens (approximately, as the simulator counts them: one per four-letter word).
    pub prompt_tokens: usize,
    /// `max_tokens`: the simulator generates exactly this many.
    pub output_tokens: u32,
}

/// SplitMix64: small, fast and the same on every platform and crate version.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// Seeded.
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in 0..n.
    pub fn below(&mut self, n: usize) -> usize {
        ((self.unit() * n as f64) as usize).min(n.saturating_sub(1))
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u = 1.0 - self.unit();
        let v = self.unit();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    /// Lognormal with this mean and standard deviation (of the variable itself).
    pub fn lognormal(&mut self, mean: f64, sd: f64) -> f64 {
        let sigma2 = (1.0 + (sd / mean).powi(2)).ln();
        let mu = mean.ln() - sigma2 / 2.0;
        (mu + sigma2.sqrt() * self.normal()).exp()
    }

    /// Gamma(shape, scale 1) (Marsaglia and Tsang; shape below 1 boosted).
    pub fn gamma(&mut self, shape: f64) -> f64 {
        if shape < 1.0 {
            let u = 1.0 - self.unit();
            return self.gamma(shape + 1.0) * u.powf(1.0 / shape);
        }
        let d = shape - 1.0 / 3.0;
        let c = 1.0 / (9.0 * d).sqrt();
        loop {
            let x = self.normal();
            let v = (1.0 + c * x).powi(3);
            if v <= 0.0 {
                continue;
            }
            let u = 1.0 - self.unit();
            if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
                return d * v;
            }
        }
    }
}

/// `n` four-letter pseudo-words: one token each for the simulator's tokenizer.
pub fn words(rng: &mut Rng, n: usize) -> String {
    const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyz";
    let mut text = String::with_capacity(n * 5);
    for i in 0..n {
        if i > 0 {
            text.push(' ');
        }
        for _ in 0..4 {
            text.push(LETTERS[rng.below(LETTERS.len())] as char);
        }
    }
    text
}

/// Gaps between arrivals: Gamma with `shape` (1 = Poisson), mean `1 / rate`.
pub fn arrivals(rng: &mut Rng, rate: f64, shape: f64, until: f64) -> Vec<f64> {
    let (rate, shape) = (rate.max(1e-6), shape.max(0.05));
    let mut at = 0.0;
    let mut times = Vec::new();
    loop {
        at += rng.gamma(shape) / shape / rate;
        if at >= until {
            return times;
        }
        times.push(at);
    }
}

/// A conversation in progress.
struct Conversation {
    history: Vec<serde_json::Value>,
    tokens: usize,
    turns_left: u32,
}

/// What shapes a trace.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TraceSpec {
    /// Mean requests per second.
    pub rate: f64,
    /// Gamma shape of the gaps (1 = Poisson).
    pub burstiness: f64,
    /// Seconds of arrivals.
    pub secs: f64,
    /// Seed of everything random.
    pub seed: u64,
}

/// The shared texts: each app's system prompt and each group's prefix (also sent to warm the
/// warm-cache backend).
pub struct SharedTexts {
    /// One per app.
    pub system_prompts: Vec<String>,
    /// One per prefix group.
    pub prefixes: Vec<String>,
}

impl SharedTexts {
    /// The texts of `seed`.
    pub fn new(seed: u64) -> Self {
        let mut rng = Rng::new(seed ^ 0xA11CE);
        let system_prompts = (0..APPS)
            .map(|app| format!("system prompt of app {app}: {}", words(&mut rng, SYSTEM_PROMPT_TOKENS)))
            .collect();
        let prefixes = (0..PREFIX_GROUPS)
            .map(|group| format!("shared document {group}: {}", words(&mut rng, PREFIX_TOKENS)))
            .collect();
        Self { system_prompts, prefixes }
    }
}

/// Builds the trace. Request contents come from their own random stream, so the `k`th request
/// is the same whatever the rate; conversations in progress are picked in turn, and a new one
/// starts when fewer than `rate x 4 s` are open (so a turn usually follows its answer).
pub fn build(spec: &TraceSpec, texts: &SharedTexts) -> Vec<TraceRequest> {
    let mut timing = Rng::new(spec.seed);
    let times = arrivals(&mut timing, spec.rate, spec.burstiness, spec.secs);
    let mut rng = Rng::new(spec.seed.wrapping_add(1));
    let open_target = ((spec.rate * 4.0).ceil() as usize).max(1);
    let mut open: Vec<Conversation> = Vec::new();
    let mut next_conversation = 0usize;
    times
        .into_iter()
        .map(|at| {
            let class = if rng.unit() < INTERACTIVE_SHARE { SloClass::Interactive } else { SloClass::Batch };
            if rng.unit() < CONVERSATION_SHARE {
                if open.len() < open_target {
                    let app = next_conversation % APPS;
                    next_conversation += 1;
                    let turns = (6.0 + 3.5 * rng.normal()).round().clamp(2.0, 20.0) as u32;
                    open.push(Conversation {
                        history: vec![serde_json::json!({"role": "system", "content": texts.system_prompts[app]})],
                        tokens: SYSTEM_PROMPT_TOKENS + 8,
                        turns_left: turns,
                    });
                }
                let at_index = rng.below(open.len());
                let conversation = &mut open[at_index];
                let input = rng.lognormal(150.0, 120.0).round().clamp(10.0, 600.0) as usize;
                let output = rng.lognormal(80.0, 60.0).round().clamp(8.0, 300.0) as u32;
                conversation.history.push(serde_json::json!({"role": "user", "content": words(&mut rng, input)}));
                conversation.tokens += input + 3;
                let request = TraceRequest {
                    at,
                    class,
                    workload: WorkloadKind::Conversation,
                    messages: serde_json::Value::Array(conversation.history.clone()),
                    prompt_tokens: conversation.tokens,
                    output_tokens: output,
                };
                // The answer joins the history as the next turn would carry it.
                conversation
                    .history
                    .push(serde_json::json!({"role": "assistant", "content": words(&mut rng, output as usize)}));
                conversation.tokens += output as usize + 3;
                conversation.turns_left -= 1;
                if conversation.turns_left == 0 {
                    open.swap_remove(at_index);
                }
                request
            } else {
                let group = rng.below(PREFIX_GROUPS);
                let question = words(&mut rng, QUESTION_TOKENS);
                let output = rng.lognormal(60.0, 30.0).round().clamp(8.0, 200.0) as u32;
                TraceRequest {
                    at,
                    class,
                    workload: WorkloadKind::SharedPrefix,
                    messages: serde_json::json!([
                        {"role": "user", "content": format!("{}\n\nquestion: {question}", texts.prefixes[group])}
                    ]),
                    prompt_tokens: PREFIX_TOKENS + QUESTION_TOKENS + 12,
                    output_tokens: output,
                }
            }
        })
        .collect()
}

/// Mean prompt and output tokens of a trace.
pub fn mean_tokens(trace: &[TraceRequest]) -> (f64, f64) {
    if trace.is_empty() {
        return (0.0, 0.0);
    }
    let n = trace.len() as f64;
    (
        trace.iter().map(|r| r.prompt_tokens as f64).sum::<f64>() / n,
        trace.iter().map(|r| f64::from(r.output_tokens)).sum::<f64>() / n,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mean_sd(values: &[f64]) -> (f64, f64) {
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        (mean, var.sqrt())
    }

    #[test]
    fn poisson_and_bursty_gaps_keep_the_rate() {
        for shape in [1.0, 0.5, 4.0] {
            let mut rng = Rng::new(3);
            let times = arrivals(&mut rng, 50.0, shape, 400.0);
            let rate = times.len() as f64 / 400.0;
            assert!((rate - 50.0).abs() < 2.5, "shape {shape}: rate {rate}");
            let gaps: Vec<f64> = times.windows(2).map(|w| w[1] - w[0]).collect();
            let (mean, sd) = mean_sd(&gaps);
            // Gamma(k) gaps: coefficient of variation 1 / sqrt(k).
            let cv = sd / mean;
            assert!((cv - 1.0 / shape.sqrt()).abs() < 0.1, "shape {shape}: cv {cv}");
        }
    }

    #[test]
    fn lognormal_has_the_asked_mean_and_spread() {
        let mut rng = Rng::new(11);
        let values: Vec<f64> = (0..40_000).map(|_| rng.lognormal(150.0, 120.0)).collect();
        let (mean, sd) = mean_sd(&values);
        assert!((mean - 150.0).abs() < 5.0, "{mean}");
        assert!((sd - 120.0).abs() < 12.0, "{sd}");
    }

    #[test]
    fn the_same_seed_gives_the_same_requests_at_any_rate() {
        let texts = SharedTexts::new(1);
        let slow = build(&TraceSpec { rate: 10.0, burstiness: 1.0, secs: 30.0, seed: 5 }, &texts);
        let fast = build(&TraceSpec { rate: 20.0, burstiness: 1.0, secs: 30.0, seed: 5 }, &texts);
        assert!(fast.len() > slow.len() * 3 / 2, "{} vs {}", fast.len(), slow.len());
        // Arrival times scale with the rate; which requests come does not depend on it
        // until conversations diverge (more are kept open at a higher rate).
        assert!((slow[0].at - fast[0].at * 2.0).abs() < 1e-9);
        assert_eq!(slow[0].class, fast[0].class);
        let again = build(&TraceSpec { rate: 10.0, burstiness: 1.0, secs: 30.0, seed: 5 }, &texts);
        assert_eq!(slow, again);
    }

    #[test]
    fn the_trace_mixes_classes_workloads_and_shares_prefixes() {
        let texts = SharedTexts::new(1);
        let trace = build(&TraceSpec { rate: 20.0, burstiness: 1.0, secs: 60.0, seed: 9 }, &texts);
        let share =
            |f: &dyn Fn(&TraceRequest) -> bool| trace.iter().filter(|r| f(r)).count() as f64 / trace.len() as f64;
        assert!((share(&|r| r.class == SloClass::Interactive) - INTERACTIVE_SHARE).abs() < 0.06);
        assert!((share(&|r| r.workload == WorkloadKind::Conversation) - CONVERSATION_SHARE).abs() < 0.06);
        // Later turns carry the history: their prompts grow past the system prompt.
        let conversation: Vec<&TraceRequest> =
            trace.iter().filter(|r| r.workload == WorkloadKind::Conversation).collect();
        assert!(conversation.iter().any(|r| r.messages.as_array().is_some_and(|m| m.len() >= 6)));
        let first_text = |r: &TraceRequest| r.messages[0]["content"].as_str().unwrap_or_default().to_owned();
        assert!(conversation.iter().all(|r| texts.system_prompts.contains(&first_text(r))));
        let prefixed = trace.iter().filter(|r| r.workload == WorkloadKind::SharedPrefix);
        assert!(prefixed.into_iter().all(|r| texts.prefixes.iter().any(|p| first_text(r).starts_with(p.as_str()))));
        let (prompt, output) = mean_tokens(&trace);
        assert!(prompt > 500.0 && prompt < 1500.0, "{prompt}");
        assert!(output > 55.0 && output < 85.0, "{output}");
        assert!(words(&mut Rng::new(1), 3).split(' ').all(|w| w.len() == 4));
    }
}
