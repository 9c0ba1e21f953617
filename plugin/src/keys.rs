//! `keys create|list|get|rotate|revoke`. A key created here is minted in this process and
//! stored only as its hash (`spec.keyHash`): the plaintext is printed once and nowhere kept.

use std::time::Duration;

use anyhow::{Context as _, bail};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::ResourceExt;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde::Serialize;
use serde_json::{Value, json};
use sluice_crds::api::{ApiKey, ApiKeySpec, Budget, BudgetPeriod, HashedKey, KeyRotation, Scope};
use sluice_crds::keys::mint;

use crate::cli::{CreateArgs, PeriodArg};
use crate::cluster::Cluster;
use crate::output::Report;
use crate::span::{age, human};
use crate::table::{Table, fields};

/// Longest rotation grace the ApiKey schema accepts (`rotation.gracePeriodSeconds`).
const MAX_GRACE: Duration = Duration::from_secs(2_592_000);

/// Creates the ApiKey with a freshly minted key's hash; the report holds the key itself.
pub async fn create(cluster: &Cluster, args: CreateArgs) -> anyhow::Result<Report> {
    let project = cluster.project().await?;
    let now = Timestamp::now();
    let (key, hashed) = mint(&project.spec.slug, now, None, &mut rand::rng());
    let apikey = ApiKey {
        metadata: ObjectMeta {
            name: Some(args.name.clone()),
            namespace: Some(cluster.namespace.clone()),
            ..ObjectMeta::default()
        },
        spec: create_spec(&args, now, hashed)?,
        status: None,
    };
    let created = cluster
        .api::<ApiKey>()
        .create(&PostParams::default(), &apikey)
        .await
        .with_context(|| format!("creating ApiKey {}/{}", cluster.namespace, args.name))?;
    let view = KeyView::of(&created);
    let text = format!(
        "apikey/{} created in namespace {} (prefix {})\n\n{key}\n\nThis key will not be shown again: store it now.\n",
        view.name,
        cluster.namespace,
        view.prefix.as_deref().unwrap_or("-"),
    );
    let mut value = serde_json::to_value(&view)?;
    value["key"] = Value::String(key);
    Ok(Report { text, value })
}

/// The spec `keys create` writes: the flags, with `hashed` as the key.
pub fn create_spec(args: &CreateArgs, now: Timestamp, hashed: HashedKey) -> anyhow::Result<ApiKeySpec> {
    let scopes = args
        .scopes
        .iter()
        .map(|s| {
            serde_json::from_value::<Scope>(Value::String(s.trim().to_owned())).map_err(|_| {
                anyhow::anyhow!("--scopes: unknown scope {s:?} (use inference, models.read, usage.read, management)")
            })
        })
        .collect::<anyhow::Result<Vec<Scope>>>()?;
    let expires_at = match (args.expires_at, args.expires_in) {
        (Some(at), _) => Some(at),
        (None, Some(within)) => Some(now.checked_add(SignedDuration::try_from(within)?)?),
        (None, None) => None,
    };
    if let Some(at) = expires_at.filter(|at| *at <= now) {
        bail!("--expires-at {at} is not in the future");
    }
    let budget = match args.budget_usd {
        Some(limit) if !(0.0..=1e9).contains(&limit) => bail!("--budget-usd must be between 0 and 1e9, not {limit}"),
        Some(limit_usd) => Some(Budget { limit_usd, period: budget_period(args.budget_period) }),
        None => None,
    };
    let listed = |values: &[String]| (!values.is_empty()).then(|| values.to_vec());
    Ok(ApiKeySpec {
        description: args.description.clone(),
        scopes,
        endpoints: listed(&args.endpoints),
        models: listed(&args.models),
        tier: args.tier.clone(),
        expires_at: expires_at.map(Time),
        allowed_cidrs: listed(&args.allowed_cidrs),
        budget,
        secret_ref: None,
        key_hash: Some(hashed),
        rotation: None,
    })
}

fn budget_period(period: PeriodArg) -> BudgetPeriod {
    match period {
        PeriodArg::Daily => BudgetPeriod::Daily,
        PeriodArg::Monthly => BudgetPeriod::Monthly,
        PeriodArg::Total => BudgetPeriod::Total,
    }
}

/// Lists the namespace's ApiKeys.
pub async fn list(cluster: &Cluster) -> anyhow::Result<Report> {
    let mut keys = cluster.api::<ApiKey>().list(&ListParams::default()).await.context("listing ApiKeys")?.items;
    keys.sort_by_key(ResourceExt::name_any);
    let now = Timestamp::now();
    let views: Vec<KeyView> = keys.iter().map(KeyView::of).collect();
    let mut table = Table::new(&["name", "prefix", "scopes", "tier", "expires", "spend", "ready", "age"]);
    for view in &views {
        table.push(view.row(now));
    }
    let text =
        if table.is_empty() { format!("No ApiKeys in namespace {}.\n", cluster.namespace) } else { table.render() };
    Ok(Report { text, value: json!({"namespace": cluster.namespace, "items": views}) })
}

/// Shows one ApiKey.
pub async fn get(cluster: &Cluster, name: &str) -> anyhow::Result<Report> {
    let apikey = cluster.api::<ApiKey>().get(name).await.with_context(|| format!("reading ApiKey {name}"))?;
    let view = KeyView::of(&apikey);
    Ok(Report { text: view.describe(Timestamp::now()), value: serde_json::to_value(&view)? })
}

/// Where a key's material comes from, which decides how it is rotated.
#[derive(Clone, Debug, PartialEq)]
pub enum KeySource {
    /// Minted by `keys create` or the management API: only the hash is stored.
    Hash(HashedKey),
    /// Generated by the operator into a Secret.
    Operator,
    /// The tenant's own Secret (`spec.secretRef`).
    OwnSecret(String),
}

impl KeySource {
    pub fn of(spec: &ApiKeySpec) -> Self {
        match (&spec.secret_ref, &spec.key_hash) {
            (Some(secret), _) => Self::OwnSecret(secret.name.clone()),
            (None, Some(hashed)) => Self::Hash(hashed.clone()),
            (None, None) => Self::Operator,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Self::Hash(_) => "hash",
            Self::Operator => "operator",
            Self::OwnSecret(_) => "secretRef",
        }
    }
}

/// Rotates ApiKey `name`, the old key working for `grace` (see [`KeySource`]).
pub async fn rotate(cluster: &Cluster, name: &str, grace: Duration) -> anyhow::Result<Report> {
    if grace > MAX_GRACE {
        bail!("--grace {} is longer than the 30 days an ApiKey allows", human(grace));
    }
    let api = cluster.api::<ApiKey>();
    let mut apikey = api.get(name).await.with_context(|| format!("reading ApiKey {name}"))?;
    let now = Timestamp::now();
    let until = now.checked_add(SignedDuration::try_from(grace)?)?;
    match KeySource::of(&apikey.spec) {
        KeySource::OwnSecret(secret) => bail!(
            "ApiKey {name} takes its key from your Secret {secret} (spec.secretRef): rotate it by changing that \
             Secret; the gateway follows"
        ),
        KeySource::Hash(old) => {
            let slug = cluster.project().await?.spec.slug;
            let (key, hashed) = mint(&slug, now, Some((&old, until)), &mut rand::rng());
            apikey.spec.key_hash = Some(hashed);
            // A replace carries the resourceVersion read above: two rotations at once cannot
            // both win, and the loser's key is never printed.
            let replaced = api
                .replace(name, &PostParams::default(), &apikey)
                .await
                .with_context(|| format!("writing ApiKey {name}'s new key hash"))?;
            let view = KeyView::of(&replaced);
            let old_key = match &view.previous_key_expires_at {
                Some(until) => format!("the old key works until {until}"),
                None => "the old key stops working now".to_owned(),
            };
            let text = format!(
                "apikey/{name} rotated (prefix {}); {old_key}\n\n{key}\n\nThis key will not be shown again: store it \
                 now.\n",
                view.prefix.as_deref().unwrap_or("-"),
            );
            let mut value = serde_json::to_value(&view)?;
            value["key"] = Value::String(key);
            Ok(Report { text, value })
        }
        KeySource::Operator => {
            // Whole seconds: the operator compares the request with when the key was issued,
            // and status times have second precision.
            let requested = Timestamp::from_second(now.as_second())?;
            let rotation =
                KeyRotation { requested_at: Time(requested), grace_period_seconds: u32::try_from(grace.as_secs())? };
            let patch = json!({"spec": {"rotation": rotation}});
            let patched = api
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .with_context(|| format!("requesting a rotation of ApiKey {name}"))?;
            let secret = patched.status.as_ref().and_then(|s| s.secret_name.clone());
            let secret = secret.unwrap_or_else(|| format!("sluice-key-{name}"));
            let text = format!(
                "apikey/{name}: rotation requested; the operator puts the new key into Secret {secret} (key `key`), \
                 the old one works for {} after that\n",
                human(grace)
            );
            let value = json!({
                "name": name, "namespace": cluster.namespace, "rotationRequestedAt": format!("{requested:.0}"),
                "gracePeriodSeconds": grace.as_secs(), "secretName": secret,
            });
            Ok(Report { text, value })
        }
    }
}

/// Deletes ApiKey `name`.
pub async fn revoke(cluster: &Cluster, name: &str) -> anyhow::Result<Report> {
    let api = cluster.api::<ApiKey>();
    let apikey = api.get(name).await.with_context(|| format!("reading ApiKey {name}"))?;
    api.delete(name, &DeleteParams::default()).await.with_context(|| format!("deleting ApiKey {name}"))?;
    let view = KeyView::of(&apikey);
    let text = format!(
        "apikey/{name} deleted from namespace {} (prefix {}); the gateway refuses it within seconds\n",
        cluster.namespace,
        view.prefix.as_deref().unwrap_or("-")
    );
    Ok(Report {
        text,
        value: json!({"name": name, "namespace": cluster.namespace, "deleted": true, "prefix": view.prefix}),
    })
}

/// What `keys list` and `keys get` show of an ApiKey: never key material, never its hash.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyView {
    pub name: String,
    pub namespace: String,
    /// `hash` (minted by `keys create`), `operator` (a generated Secret) or `secretRef`.
    pub source: String,
    pub prefix: Option<String>,
    pub description: Option<String>,
    pub scopes: Vec<String>,
    pub endpoints: Option<Vec<String>>,
    pub models: Option<Vec<String>>,
    pub tier: Option<String>,
    pub allowed_cidrs: Option<Vec<String>>,
    pub expires_at: Option<String>,
    pub budget: Option<Budget>,
    pub spend_usd: Option<f64>,
    pub secret_name: Option<String>,
    pub issued_at: Option<String>,
    pub previous_key_expires_at: Option<String>,
    /// The Ready condition's status (`True`, `False`, `Unknown`), absent before the operator
    /// looked at the key.
    pub ready: Option<String>,
    pub reason: Option<String>,
    pub message: Option<String>,
    pub created: Option<String>,
}

impl KeyView {
    pub fn of(apikey: &ApiKey) -> Self {
        let spec = &apikey.spec;
        let status = apikey.status.clone().unwrap_or_default();
        let hashed = spec.key_hash.as_ref();
        let ready = status.conditions.iter().find(|c| c.type_ == "Ready");
        let time = |t: &Time| format!("{:.0}", t.0);
        Self {
            name: apikey.name_any(),
            namespace: apikey.namespace().unwrap_or_default(),
            source: KeySource::of(spec).name().to_owned(),
            // The spec's hash is the key now; the status may still describe the one before.
            prefix: hashed.and_then(|h| h.prefix.clone()).or_else(|| status.key_prefix.clone()),
            description: spec.description.clone(),
            scopes: spec.scopes.iter().map(|s| s.as_str().to_owned()).collect(),
            endpoints: spec.endpoints.clone(),
            models: spec.models.clone(),
            tier: spec.tier.clone(),
            allowed_cidrs: spec.allowed_cidrs.clone(),
            expires_at: spec.expires_at.as_ref().map(time),
            budget: spec.budget.clone(),
            spend_usd: status.current_period_spend_usd,
            secret_name: status.secret_name.clone(),
            issued_at: hashed.and_then(|h| h.issued_at.as_ref()).or(status.issued_at.as_ref()).map(time),
            previous_key_expires_at: match hashed {
                Some(hashed) => hashed.previous.as_ref().map(|p| time(&p.expires_at)),
                None => status.previous_key_expires_at.as_ref().map(time),
            },
            ready: ready.map(|c| c.status.clone()),
            reason: ready.map(|c| c.reason.clone()),
            message: ready.map(|c| c.message.clone()).filter(|m| !m.is_empty()),
            created: apikey.metadata.creation_timestamp.as_ref().map(time),
        }
    }

    /// The `keys list` row: name, prefix, scopes, tier, expires, spend, ready, age.
    pub fn row(&self, now: Timestamp) -> Vec<String> {
        vec![
            self.name.clone(),
            self.prefix.clone().unwrap_or_default(),
            self.scopes.join(","),
            self.tier.clone().unwrap_or_default(),
            self.expires_at.clone().unwrap_or_default(),
            spend_cell(self.spend_usd, self.budget.as_ref()),
            self.ready.clone().unwrap_or_default(),
            self.age(now),
        ]
    }

    fn age(&self, now: Timestamp) -> String {
        self.created.as_deref().and_then(|t| t.parse().ok()).map(|t| age(t, now)).unwrap_or_default()
    }

    /// `keys get` in the table format.
    pub fn describe(&self, now: Timestamp) -> String {
        let list = |values: &Option<Vec<String>>| values.as_ref().map_or_else(|| "(all)".to_owned(), |v| v.join(","));
        let ready = match (&self.ready, &self.reason, &self.message) {
            (Some(status), Some(reason), Some(message)) => format!("{status} ({reason}: {message})"),
            (Some(status), Some(reason), None) => format!("{status} ({reason})"),
            (status, ..) => status.clone().unwrap_or_default(),
        };
        let source = match self.source.as_str() {
            "hash" => "stored as its hash (shown once when created)".to_owned(),
            "operator" => {
                format!("generated by the operator into Secret {}", self.secret_name.as_deref().unwrap_or("-"))
            }
            _ => format!("your Secret {}", self.secret_name.as_deref().unwrap_or("(spec.secretRef)")),
        };
        fields(&[
            ("Name", self.name.clone()),
            ("Namespace", self.namespace.clone()),
            ("Description", self.description.clone().unwrap_or_default()),
            ("Prefix", self.prefix.clone().unwrap_or_default()),
            ("Key", source),
            ("Scopes", self.scopes.join(",")),
            ("Endpoints", list(&self.endpoints)),
            ("Models", list(&self.models)),
            ("Tier", self.tier.clone().unwrap_or_default()),
            ("Allowed CIDRs", list(&self.allowed_cidrs)),
            ("Expires", self.expires_at.clone().unwrap_or_else(|| "never".to_owned())),
            ("Spend", spend_cell(self.spend_usd, self.budget.as_ref())),
            ("Issued", self.issued_at.clone().unwrap_or_default()),
            ("Previous key until", self.previous_key_expires_at.clone().unwrap_or_default()),
            ("Ready", ready),
            ("Age", self.age(now)),
        ])
    }
}

/// `$0.0123 / $10 monthly`: the current period's spend beside the budget.
pub fn spend_cell(spend: Option<f64>, budget: Option<&Budget>) -> String {
    let spend = spend.map(dollars);
    match (spend, budget) {
        (spend, Some(budget)) => {
            let period = match budget.period {
                BudgetPeriod::Daily => "daily",
                BudgetPeriod::Monthly => "monthly",
                BudgetPeriod::Total => "total",
            };
            format!("{} / {} {period}", spend.unwrap_or_else(|| "$0".to_owned()), dollars(budget.limit_usd))
        }
        (Some(spend), None) => spend,
        (None, None) => String::new(),
    }
}

/// Dollars with up to six decimals, without trailing zeros: `$10`, `$0.00123`, `$1.5`.
pub fn dollars(usd: f64) -> String {
    let text = format!("{usd:.6}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("${text}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hashed() -> HashedKey {
        HashedKey { sha256: "0".repeat(64), prefix: Some("sl_demo_AbCd".into()), issued_at: None, previous: None }
    }

    fn t(text: &str) -> Timestamp {
        text.parse().expect("timestamp")
    }

    #[test]
    fn create_flags_become_the_spec_with_the_hash_only() {
        let args = CreateArgs {
            name: "ci".into(),
            scopes: vec!["inference".into(), "usage.read".into()],
            models: vec!["gpt-4o-mini".into()],
            budget_usd: Some(10.0),
            budget_period: PeriodArg::Daily,
            expires_in: Some(Duration::from_secs(86_400)),
            ..CreateArgs::default()
        };
        let spec = create_spec(&args, t("2026-03-01T00:00:00Z"), hashed()).expect("spec");
        assert_eq!(spec.scopes, [Scope::Inference, Scope::UsageRead]);
        assert_eq!(spec.models.as_deref(), Some(&["gpt-4o-mini".to_owned()][..]));
        assert_eq!(spec.endpoints, None, "no --endpoints: every endpoint");
        assert_eq!(spec.expires_at.map(|e| e.0), Some(t("2026-03-02T00:00:00Z")));
        assert_eq!(spec.budget, Some(Budget { limit_usd: 10.0, period: BudgetPeriod::Daily }));
        assert_eq!(spec.key_hash, Some(hashed()));
        assert!(spec.secret_ref.is_none() && spec.rotation.is_none());
    }

    #[test]
    fn bad_create_flags_are_refused_by_name() {
        let now = t("2026-03-01T00:00:00Z");
        let bad_scope = CreateArgs { scopes: vec!["admin".into()], ..CreateArgs::default() };
        assert!(create_spec(&bad_scope, now, hashed()).expect_err("scope").to_string().contains("unknown scope"));
        let past = CreateArgs {
            scopes: vec!["inference".into()],
            expires_at: Some(t("2025-01-01T00:00:00Z")),
            ..CreateArgs::default()
        };
        assert!(create_spec(&past, now, hashed()).expect_err("past").to_string().contains("not in the future"));
        let budget = CreateArgs { scopes: vec!["inference".into()], budget_usd: Some(-1.0), ..CreateArgs::default() };
        assert!(create_spec(&budget, now, hashed()).expect_err("budget").to_string().contains("--budget-usd"));
    }

    #[test]
    fn spend_shows_beside_the_budget() {
        let budget = Budget { limit_usd: 10.0, period: BudgetPeriod::Monthly };
        assert_eq!(spend_cell(Some(0.00123), Some(&budget)), "$0.00123 / $10 monthly");
        assert_eq!(spend_cell(None, Some(&budget)), "$0 / $10 monthly");
        assert_eq!(spend_cell(Some(1.5), None), "$1.5");
        assert_eq!(spend_cell(None, None), "");
    }

    #[test]
    fn the_source_decides_how_a_key_rotates() {
        let spec: ApiKeySpec = serde_json::from_value(json!({})).expect("spec");
        assert_eq!(KeySource::of(&spec), KeySource::Operator);
        let spec: ApiKeySpec = serde_json::from_value(json!({"secretRef": {"name": "mine"}})).expect("spec");
        assert_eq!(KeySource::of(&spec), KeySource::OwnSecret("mine".into()));
        let spec = ApiKeySpec { key_hash: Some(hashed()), ..spec };
        assert_eq!(KeySource::of(&spec), KeySource::OwnSecret("mine".into()), "secretRef wins, as in the operator");
        let spec = ApiKeySpec { secret_ref: None, ..spec };
        assert_eq!(KeySource::of(&spec), KeySource::Hash(hashed()));
    }

    #[test]
    fn a_view_never_holds_the_hash() {
        let apikey = ApiKey::new(
            "ci",
            ApiKeySpec { key_hash: Some(hashed()), ..serde_json::from_value(json!({})).expect("spec") },
        );
        let view = KeyView::of(&apikey);
        assert_eq!(view.prefix.as_deref(), Some("sl_demo_AbCd"));
        assert_eq!(view.source, "hash");
        let json = serde_json::to_string(&view).expect("json");
        assert!(!json.contains(&"0".repeat(64)), "{json}");
        assert_eq!(view.row(Timestamp::now())[0], "ci");
    }
}
