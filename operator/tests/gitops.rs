//! GitOps tools apply server-side: after `kubectl apply` (client-side) of `examples/kubernetes/`
//! and the operator's reconcile, `kubectl diff --server-side` shows nothing and `kubectl apply
//! --server-side` succeeds without `--force-conflicts`, as kubectl itself and as another field
//! manager (what Argo CD or Flux would be).

mod common;

use std::process::Output;
use std::time::Duration;

use anyhow::{Context as _, ensure};
use common::{World, eventually, ready};
use sluice_crds::api::Project;

const FILES: [&str; 5] =
    ["10-tiers.yaml", "20-providers.yaml", "30-project.yaml", "40-endpoints.yaml", "50-apikeys.yaml"];

/// One example file with its namespaces replaced by the test's, written to a temporary file;
/// `sluice_only` leaves out core objects (the credential Secrets).
fn example_file(world: &World, file: &str, sluice_only: bool) -> anyhow::Result<std::path::PathBuf> {
    let text = std::fs::read_to_string(sluice_testenv::workspace_root().join("examples/kubernetes").join(file))?
        .replace("namespace: team-a", &format!("namespace: {}", world.tenant))
        .replace("sluice-system", &world.shared);
    let docs: Vec<&str> =
        text.split("\n---").filter(|doc| !sluice_only || doc.contains("apiVersion: sluice.dev/")).collect();
    let path = world.env.dir().join(format!("{}-{sluice_only}-{file}", world.tenant));
    std::fs::write(&path, docs.join("\n---"))?;
    Ok(path)
}

fn kubectl(world: &World, args: &[&str], file: &std::path::Path) -> anyhow::Result<Output> {
    let mut command = world.env.kubectl()?;
    command.args(args).arg("-f").arg(file);
    command.output().with_context(|| format!("running kubectl {args:?}"))
}

/// The changed lines of a `kubectl diff`, except kubectl's own `last-applied-configuration`
/// annotation, which a server-side apply after a client-side one always rewrites.
fn changes(diff: &str) -> Vec<&str> {
    diff.lines()
        .filter(|line| {
            (line.starts_with('+') || line.starts_with('-')) && !line.starts_with("+++") && !line.starts_with("---")
        })
        .filter(|line| !line[1..].trim_start().starts_with("{\"apiVersion\":"))
        .collect()
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

#[tokio::test]
async fn examples_applied_client_side_then_server_side_do_not_conflict() -> anyhow::Result<()> {
    let world = World::start("gitops").await?;
    let files: Vec<_> = FILES.iter().map(|file| example_file(&world, file, false)).collect::<anyhow::Result<_>>()?;
    // A second field manager applies the Sluice objects only: a Secret's write-only `stringData`
    // conflicts between any two server-side appliers, whatever the CRDs say.
    let sluice_files: Vec<_> =
        FILES.iter().map(|file| example_file(&world, file, true)).collect::<anyhow::Result<_>>()?;
    for file in &files {
        let output = kubectl(&world, &["apply"], file)?;
        ensure!(output.status.success(), "kubectl apply {}: {}", file.display(), text(&output));
    }
    ready(&world.api::<Project>(&world.tenant), "team-a", |p| {
        p.status.clone().map(|s| s.conditions).unwrap_or_default()
    })
    .await?;
    // The operator has written every status and finalizer it writes once the keys are served.
    eventually("the configuration to hold the four keys", Duration::from_secs(60), || async {
        Ok(match world.config("team-a").await? {
            Some(config) if config.keys.len() == 4 => Ok(()),
            Some(config) => Err(format!("{} keys", config.keys.len())),
            None => Err("no config Secret".to_owned()),
        })
    })
    .await?;

    for (manager, files) in [(None, &files), (Some("--field-manager=argocd-controller"), &sluice_files)] {
        for file in files {
            let mut diff = vec!["diff", "--server-side"];
            diff.extend(manager);
            let output = kubectl(&world, &diff, file)?;
            // kubectl diff: 0 no differences, 1 differences, above that an error (a conflict).
            let clean = match output.status.code() {
                Some(0) => true,
                Some(1) => changes(&String::from_utf8_lossy(&output.stdout)).is_empty(),
                _ => false,
            };
            ensure!(clean, "kubectl {diff:?} {} is not clean ({}):\n{}", file.display(), output.status, text(&output));
            let mut apply = vec!["apply", "--server-side"];
            apply.extend(manager);
            let output = kubectl(&world, &apply, file)?;
            ensure!(output.status.success(), "kubectl {apply:?} {}:\n{}", file.display(), text(&output));
        }
    }
    Ok(())
}
