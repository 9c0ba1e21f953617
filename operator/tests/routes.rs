//! Route kinds against a real apiserver: with `--route-kind httproute` the operator publishes
//! `/<project>/` with a Gateway API HTTPRoute attached to the configured Gateway, and removes it
//! with the Project.

mod common;

use std::time::Duration;

use common::{World, eventually};
use kube::api::{Api, DeleteParams, DynamicObject};
use sluice_crds::api::Project;
use sluice_operator::data_plane::http_route_resource;
use sluice_operator::settings::{ParentRef, RouteKind};

#[tokio::test]
async fn an_httproute_publishes_the_project_and_goes_with_it() -> anyhow::Result<()> {
    let world = World::start_with("routes", |settings| {
        settings.route.kind = RouteKind::HttpRoute;
        settings.route.gateway_parent =
            Some(ParentRef { namespace: "infra".into(), name: "public".into(), section_name: Some("https".into()) });
        settings.route.host = Some("llm.example.com".into());
    })
    .await?;
    let crds = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gateway-api");
    sluice_testenv::install_crds(&world.client, &crds).await?;
    world.apply_simulated_tenant("web").await?;

    let routes: Api<DynamicObject> =
        Api::namespaced_with(world.client.clone(), &world.dataplane, &http_route_resource());
    let route = eventually("the HTTPRoute", Duration::from_secs(60), || async {
        Ok(routes.get_opt("sluice-gw-web").await?.ok_or_else(|| "not yet".to_owned()))
    })
    .await?;
    let spec = &route.data["spec"];
    assert_eq!(spec["parentRefs"][0]["namespace"], "infra");
    assert_eq!(spec["parentRefs"][0]["name"], "public");
    assert_eq!(spec["parentRefs"][0]["sectionName"], "https");
    assert_eq!(spec["hostnames"][0], "llm.example.com");
    assert_eq!(spec["rules"][0]["matches"][0]["path"]["value"], "/web/");
    assert_eq!(spec["rules"][0]["backendRefs"][0]["name"], "sluice-gw-web");

    world.api::<Project>(&world.tenant).delete("web", &DeleteParams::default()).await?;
    eventually("the HTTPRoute to go with the Project", Duration::from_secs(60), || async {
        Ok(match routes.get_opt("sluice-gw-web").await? {
            None => Ok(()),
            Some(_) => Err("still there".to_owned()),
        })
    })
    .await?;
    Ok(())
}
