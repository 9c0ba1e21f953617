//! Leader election against a real apiserver: of two replicas one holds the Lease; the other takes
//! over when it is released, or when the holder stops renewing for a lease duration.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use sluice_operator::leader::LeaderElector;
use sluice_operator::settings::LeaderElectionSettings;
use sluice_testenv::TestEnv;

fn settings(namespace: &str) -> LeaderElectionSettings {
    LeaderElectionSettings {
        lease_duration: Duration::from_secs(2),
        retry_period: Duration::from_millis(200),
        ..LeaderElectionSettings::new(namespace, "sluice-operator")
    }
}

async fn holder(api: &Api<Lease>) -> anyhow::Result<Option<String>> {
    Ok(api.get("sluice-operator").await?.spec.and_then(|s| s.holder_identity))
}

#[tokio::test]
async fn one_replica_leads_and_another_takes_over() -> anyhow::Result<()> {
    let env = TestEnv::shared();
    let namespace = env.namespace("leader").await?;
    let leases: Api<Lease> = Api::namespaced(env.client()?, &namespace);
    let a = LeaderElector::new(env.client()?, &settings(&namespace), "replica-a");
    let b = LeaderElector::new(env.client()?, &settings(&namespace), "replica-b");

    a.acquire().await;
    assert_eq!(holder(&leases).await?.as_deref(), Some("replica-a"));
    // b waits while a renews.
    let a_holds = tokio::time::timeout(Duration::from_secs(5), a.hold());
    let b_waits = tokio::time::timeout(Duration::from_secs(5), b.acquire());
    let (a_held, b_acquired) = tokio::join!(a_holds, b_waits);
    assert!(a_held.is_err(), "a kept the Lease for 5 s: {a_held:?}");
    assert!(b_acquired.is_err(), "b did not get the Lease while a renewed it");

    // Released: b takes over at once.
    a.release().await;
    tokio::time::timeout(Duration::from_secs(5), b.acquire()).await?;
    assert_eq!(holder(&leases).await?.as_deref(), Some("replica-b"));
    // a notices it lost the Lease when it tries to renew.
    let lost = tokio::time::timeout(Duration::from_secs(5), a.hold()).await?;
    assert!(lost.is_err(), "a's hold ends with an error");

    // b stops renewing (crashed): a takes over after the lease duration.
    let started = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(10), a.acquire()).await?;
    // a first saw b's last renewal just before this wait began.
    assert!(started.elapsed() >= Duration::from_millis(1500), "not before the lease expired");
    assert_eq!(holder(&leases).await?.as_deref(), Some("replica-a"));
    let transitions = leases.get("sluice-operator").await?.spec.and_then(|s| s.lease_transitions);
    assert_eq!(transitions, Some(2));
    Ok(())
}
