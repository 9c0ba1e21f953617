//! Response signing in the cluster: a Project with `spec.signing` and no Secret of its own gets
//! one generated (owned by the Project, 32 random bytes), which reaches the configuration; when
//! its rotation is due the operator rotates it, the previous secret signing until the grace
//! period ends; a Project naming its own Secret signs with it and the operator leaves it alone.

mod common;

use std::time::Duration;

use common::{World, eventually, secret_text};
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Patch, PatchParams};

const WAIT: Duration = Duration::from_secs(60);

fn signing_project(slug: &str, tier: &str, signing: &str) -> String {
    format!(
        "apiVersion: sluice.dev/v1alpha1
kind: Project
metadata: {{name: {slug}}}
spec: {{slug: {slug}, defaultTier: {tier}, dataPlane: {{replicas: 1}}, signing: {signing}}}
"
    )
}

/// The configuration's signing secrets, newest first.
async fn signing_secrets(world: &World, slug: &str) -> anyhow::Result<Vec<String>> {
    let config = world.config(slug).await?;
    Ok(config.map(|c| c.project.signing.iter().map(|s| s.secret.expose().to_owned()).collect()).unwrap_or_default())
}

#[tokio::test]
async fn a_generated_signing_secret_reaches_the_configuration_and_rotates() -> anyhow::Result<()> {
    let world = World::start("signing").await?;
    world.apply_simulated_tenant("sg").await?;
    let tier = format!("{}-tier", world.tenant);
    world.apply(&signing_project("sg", &tier, "{graceHours: 2}")).await?;

    let secrets = world.api::<Secret>(&world.tenant);
    let generated = eventually("the generated signing Secret", WAIT, || async {
        let found = secrets.get_opt("sluice-signing-sg").await?.filter(|s| secret_text(s, "secret").is_some());
        Ok(found.ok_or_else(|| "no Secret sluice-signing-sg with a secret".to_owned()))
    })
    .await?;
    let first = secret_text(&generated, "secret").unwrap_or_default();
    assert_eq!(first.len(), 64);
    assert!(first.bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(generated.owner_references().iter().any(|o| o.kind == "Project" && o.name == "sg"), "owned by the Project");
    eventually("the secret in the configuration", WAIT, || async {
        let secrets = signing_secrets(&world, "sg").await?;
        Ok(if secrets == [first.clone()] { Ok(()) } else { Err(format!("{} secrets", secrets.len())) })
    })
    .await?;

    // Make the rotation due: issued 31 days ago (the default rotation is 30 days).
    let long_ago = (jiff::Timestamp::now() - jiff::SignedDuration::from_hours(31 * 24)).to_string();
    let patch = serde_json::json!({"metadata": {"annotations": {"sluice.dev/issued-at": long_ago}}});
    secrets.patch("sluice-signing-sg", &PatchParams::default(), &Patch::Merge(&patch)).await?;
    let rotated = eventually("a rotated secret", WAIT, || async {
        let secret = secrets.get("sluice-signing-sg").await?;
        let changed = secret_text(&secret, "secret").is_some_and(|s| s != first);
        Ok(if changed { Ok(secret) } else { Err("the first secret still".to_owned()) })
    })
    .await?;
    let second = secret_text(&rotated, "secret").unwrap_or_default();
    assert_eq!(secret_text(&rotated, "previousSecret").as_deref(), Some(first.as_str()), "the old one signs on");
    let until: jiff::Timestamp = secret_text(&rotated, "previousSecretExpiresAt").unwrap_or_default().parse()?;
    let grace = until.duration_since(jiff::Timestamp::now());
    assert!(grace > jiff::SignedDuration::from_mins(110) && grace <= jiff::SignedDuration::from_hours(2), "{grace:?}");
    eventually("both secrets in the configuration, the new one first", WAIT, || async {
        let secrets = signing_secrets(&world, "sg").await?;
        Ok(if secrets == [second.clone(), first.clone()] { Ok(()) } else { Err(format!("{} secrets", secrets.len())) })
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_project_naming_its_own_secret_signs_with_it_untouched() -> anyhow::Result<()> {
    let world = World::start("signing-own").await?;
    world.apply_simulated_tenant("so").await?;
    let tier = format!("{}-tier", world.tenant);
    let own = "0123456789abcdef0123456789abcdef-own";
    world
        .apply(&format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: my-signing}}\nstringData: {{secret: {own}}}\n---\n{}",
            signing_project("so", &tier, "{secretName: my-signing}")
        ))
        .await?;
    eventually("the Project's own secret in the configuration", WAIT, || async {
        let secrets = signing_secrets(&world, "so").await?;
        Ok(if secrets == [own.to_owned()] { Ok(()) } else { Err(format!("{} secrets", secrets.len())) })
    })
    .await?;
    let secrets = world.api::<Secret>(&world.tenant);
    assert!(secrets.get_opt("sluice-signing-so").await?.is_none(), "nothing generated");
    let mine = secrets.get("my-signing").await?;
    assert!(mine.owner_references().is_empty(), "the operator leaves the user's Secret alone");
    Ok(())
}
