//! ExternalName Services: the proxy resolves the name with hickory-resolver and balances over
//! the addresses it returns.

mod support;

use std::time::Duration;
use support::*;

#[tokio::test]
async fn external_name_to_localhost_reaches_its_target() {
    let up = Upstream::start("outside").await;
    let mesh = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: weather, namespace: rides}}\n\
         spec:\n  type: ExternalName\n  externalName: localhost\n  ports: [{{name: http, port: 80, targetPort: {}}}]\n",
        up.addr.port()
    );
    let h = start(&mesh, "").await;
    // The first answer waits for the first resolution, which runs in the background.
    let r = eventually(
        Duration::from_secs(10),
        "weather to answer through DNS",
        || async {
            let r = h.get("weather.rides", "/forecast").await;
            (r.status == 200).then_some(r)
        },
    )
    .await;
    assert_eq!(r.header("x-upstream"), "outside");
    assert_eq!(up.hits(), 1);
    // The resolved addresses are the cluster's endpoints, named after the DNS name.
    let c = h.cluster("weather.rides:80").await;
    let eps = c["endpoints"].as_array().expect("endpoints");
    assert!(
        eps.iter()
            .any(|e| e["address"] == up.addr.to_string() && e["workload"] == "dns:localhost"),
        "{c}"
    );
}

#[tokio::test]
async fn external_name_needs_a_dns_name() {
    let h = start(
        "apiVersion: v1\nkind: Service\nmetadata: {name: svc, namespace: rides}\n\
                   spec: {ports: [{port: 80}]}\n",
        "",
    )
    .await;
    let bad = "apiVersion: v1\nkind: Service\nmetadata: {name: weather, namespace: rides}\n\
               spec:\n  type: ExternalName\n  externalName: \"not a name\"\n  ports: [{port: 80}]\n";
    h.write_mesh(bad);
    let err = eventually(Duration::from_secs(10), "the refusal", || async {
        let dump = h.admin("/config_dump").await.body;
        dump.contains("spec.externalName").then_some(dump)
    })
    .await;
    assert!(err.contains("is not a DNS name"), "{err}");
}
