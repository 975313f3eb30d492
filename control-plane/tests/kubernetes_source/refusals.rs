//! What the control plane refuses from a cluster, and what keeps serving meanwhile: a bad
//! change as a whole, or one bad object set aside while the rest applies.

use super::{AUTHZ, POLICIES, ROUTES, WAIT, cluster, condition, item, ours, weights};
use serde_json::json;
use testkit::eventually;

#[tokio::test]
async fn a_bad_new_authorization_policy_refuses_the_whole_change_and_the_last_good_config_keeps_serving()
 {
    // Leaving a refused AuthorizationPolicy out could open what it was written to deny, so
    // for it (and the Mesh) the cluster fails closed, as a file does.
    let c = cluster().await;
    let first = c
        .until("the first config", |w| w.config.services.len() == 4)
        .await;
    let mut bad = json!({"apiVersion": "trellis.dev/v1alpha1", "kind": "AuthorizationPolicy",
        "metadata": {"name": "billing", "namespace": "rides", "generation": 1},
        "spec": {"targetRef": {"kind": "Service", "name": "billing"}, "action": "ALOW",
                 "rules": [{"from": [{"serviceAccounts": ["rides/trip"]}]}]}});
    c.api.event(AUTHZ, "ADDED", bad.clone());
    let cp = c.running.cp.clone();
    let errors = eventually(WAIT, "the refusal", || {
        let e = cp.config_errors();
        async move { e }
    })
    .await
    .to_string();
    assert!(
        errors.contains("kubernetes:AuthorizationPolicy/rides/billing") && errors.contains("ALOW"),
        "{errors}"
    );
    // A change elsewhere does not get through either while the policy is refused.
    let mut route = item("httproutes.json", "billing");
    route["spec"]["rules"][0]["backendRefs"][0]["weight"] = json!(50);
    c.api.event(ROUTES, "MODIFIED", route);
    c.api.event(AUTHZ, "MODIFIED", bad.clone());
    eventually(WAIT, "the route change to be refused too", || {
        let n = c.running.cp.metrics.render();
        async move {
            let line = n
                .lines()
                .find(|l| l.starts_with("trellis_config_reloads_total{result=\"rejected\"}"))?;
            (line.rsplit(' ').next()?.parse::<u64>().ok()? >= 2).then_some(())
        }
    })
    .await;
    assert_eq!(
        cp.world().unwrap().generation,
        first.generation,
        "the last good config serves"
    );
    // Fixing it applies, with the route change.
    bad["spec"]["action"] = json!("ALLOW");
    c.api.event(AUTHZ, "MODIFIED", bad);
    let fixed = c
        .until("the fixed policy", |w| {
            w.config.authorization_policies.len() == 1
                && weights(w, "rides/billing")[0] == ("billing-v1".into(), Some(50))
        })
        .await;
    assert!(fixed.generation > first.generation);
    assert!(cp.config_errors().is_none());
}

#[tokio::test]
async fn a_refused_object_is_set_aside_and_the_rest_of_the_cluster_applies() {
    // In a shared cluster one team's mistake must not freeze everyone's endpoints.
    let c = cluster().await;
    let cp = c.running.cp.clone();
    c.until("the first config", |w| w.config.services.len() == 4)
        .await;

    // A new ResiliencePolicy that does not load is left out...
    let mut typo = item("resiliencepolicies.json", "billing");
    typo["metadata"]["name"] = json!("billing-typo");
    typo["spec"]["targetRef"]["name"] = json!("billing-v2");
    typo["spec"]["timeout"] = json!("2 seconds");
    c.api.event(POLICIES, "ADDED", typo.clone());
    // ...and a change made after it applies.
    let mut route = item("httproutes.json", "billing");
    route["spec"]["rules"][0]["backendRefs"][0]["weight"] = json!(50);
    c.api.event(ROUTES, "MODIFIED", route.clone());
    let w = c
        .until("the route change beside the refused policy", |w| {
            weights(w, "rides/billing")[0] == ("billing-v1".into(), Some(50))
        })
        .await;
    assert_eq!(
        w.config.resilience_policies.len(),
        1,
        "the refused policy is left out"
    );
    let errors = cp
        .config_errors()
        .expect("the refusal is reported")
        .to_string();
    assert!(
        errors.contains("kubernetes:ResiliencePolicy/rides/billing-typo")
            && errors.contains("2 seconds"),
        "{errors}"
    );
    assert!(
        cp.metrics
            .render()
            .contains("trellis_config_refused_objects 1")
    );

    // A bad change to an object that loaded before: its last good version keeps serving.
    let mut billing = item("resiliencepolicies.json", "billing");
    billing["spec"]["timeout"] = json!("soon");
    c.api.event(POLICIES, "MODIFIED", billing.clone());
    let errors = eventually(WAIT, "the second refusal", || {
        let e = cp.config_errors().map(|e| e.to_string());
        async move { e.filter(|e| e.contains("kubernetes:ResiliencePolicy/rides/billing:")) }
    })
    .await;
    assert!(errors.contains("soon"), "{errors}");
    let w = cp.world().unwrap();
    let p = &w.config.resilience_policies[0];
    assert_eq!(p.object.metadata.name, "billing");
    assert_eq!(
        p.object.spec.timeout.map(|t| t.as_secs()),
        Some(2),
        "the last good version (timeout 2s) serves"
    );

    // A route whose backend does not exist is refused too, and says so in its status.
    let mut broken = route.clone();
    broken["metadata"]["name"] = json!("broken");
    broken["metadata"]["generation"] = json!(3);
    broken["spec"]["rules"][0]["backendRefs"][1]["name"] = json!("billing-v3");
    c.api.event(ROUTES, "ADDED", broken);
    let status = c
        .route_status(ROUTES, "broken", |s| s.contains("BackendNotFound"))
        .await;
    let parent = ours(&status);
    assert_eq!(parent["parentRef"]["name"], "billing");
    let accepted = condition(parent, "Accepted");
    assert_eq!(accepted["status"], "False");
    assert_eq!(accepted["observedGeneration"], 3);
    let resolved = condition(parent, "ResolvedRefs");
    assert_eq!(resolved["status"], "False");
    assert!(
        resolved["message"]
            .as_str()
            .unwrap()
            .contains("no Service \"billing-v3\"")
            && resolved["message"].as_str().unwrap().contains("not served"),
        "{resolved}"
    );
    assert!(
        c.running
            .cp
            .world()
            .unwrap()
            .config
            .http_routes
            .iter()
            .all(|r| r.object.metadata.name != "broken")
    );

    // Fixed, everything applies and nothing is reported.
    typo["spec"]["timeout"] = json!("2s");
    c.api.event(POLICIES, "MODIFIED", typo);
    billing["spec"]["timeout"] = json!("3s");
    c.api.event(POLICIES, "MODIFIED", billing);
    c.api.event(
        ROUTES,
        "DELETED",
        c.api.object(ROUTES, "rides", "broken").unwrap(),
    );
    c.until("everything applied", |w| {
        w.config.resilience_policies.len() == 2
            && w.config
                .resilience_policies
                .iter()
                .all(|p| p.object.spec.timeout.is_some_and(|t| t.as_secs() >= 2))
            && w.config.http_routes.len() == 2
    })
    .await;
    eventually(WAIT, "no refusal left", || {
        let e = cp.config_errors();
        async move { e.is_none().then_some(()) }
    })
    .await;
    assert!(
        cp.metrics
            .render()
            .contains("trellis_config_refused_objects 0")
    );
}
