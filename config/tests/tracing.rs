//! The Mesh's `tracing` settings and the sampling annotations: what is refused, with its file,
//! line and field, and what each proxy's snapshot carries.

use trellis_config::model::OtlpProtocol;
use trellis_config::{NodeIdentity, compile, load_str};

fn mesh(tracing: &str) -> String {
    format!(
        "apiVersion: trellis.dev/v1alpha1\nkind: Mesh\nmetadata: {{name: default}}\n\
         spec:\n  tracing: {tracing}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {{name: trip, namespace: rides, annotations: {{trellis.dev/trace-sampling-percentage: \"25\"}}}}\n\
         spec:\n  selector: {{app: trip}}\n  ports: [{{name: http, port: 80}}]\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {{name: billing, namespace: rides}}\n\
         spec:\n  selector: {{app: billing}}\n  ports: [{{name: http, port: 80}}]\n"
    )
}

fn node(app: &str) -> NodeIdentity {
    NodeIdentity {
        name: format!("{app}-0"),
        namespace: "rides".into(),
        labels: [("app".to_string(), app.to_string())].into(),
        ..Default::default()
    }
}

#[test]
fn each_proxy_gets_the_collector_and_the_percentage_of_the_services_it_serves() {
    let cfg = load_str(
        "mesh.yaml",
        &mesh("{collector: {address: \"otel.observability:4318\", protocol: HTTP}, samplingPercentage: 5}"),
    )
    .unwrap();
    let trip = compile(&cfg, &node("trip")).mesh.tracing;
    let billing = compile(&cfg, &node("billing")).mesh.tracing;
    assert_eq!(
        trip.sampling_percentage, 25.0,
        "the Service's annotation wins"
    );
    assert_eq!(billing.sampling_percentage, 5.0, "else the Mesh's");
    let c = billing.collector.expect("a collector");
    assert_eq!(c.address, "otel.observability:4318");
    assert_eq!(c.protocol, OtlpProtocol::Http);

    // A Gateway's own percentage travels with the Gateway.
    let with_gateway = format!(
        "{}---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
         metadata: {{name: edge, namespace: rides, annotations: {{trellis.dev/trace-sampling-percentage: \"0.5\"}}}}\n\
         spec:\n  gatewayClassName: trellis\n  listeners:\n  - {{name: http, port: 80, protocol: HTTP}}\n",
        mesh("{samplingPercentage: 5}")
    );
    let cfg = load_str("mesh.yaml", &with_gateway).unwrap();
    let snap = compile(&cfg, &node("billing"));
    assert_eq!(snap.gateways["rides/edge"].sampling_percentage, Some(0.5));

    // Without a tracing block: no collector, Istio's 1%.
    let none = load_str("mesh.yaml", &mesh("{}")).unwrap();
    let t = compile(&none, &node("billing")).mesh.tracing;
    assert_eq!((t.collector, t.sampling_percentage), (None, 1.0));
}

#[test]
fn bad_tracing_settings_are_refused_at_their_field() {
    for (tracing, field, says) in [
        (
            "{samplingPercentage: 150}",
            "mesh.yaml:1: spec.tracing.samplingPercentage",
            "0 to 100",
        ),
        (
            "{collector: {address: \"http://otel:4317\"}}",
            "mesh.yaml:1: spec.tracing.collector.address",
            "is a URL",
        ),
        (
            "{collector: {address: otel}}",
            "mesh.yaml:1: spec.tracing.collector.address",
            "has no port",
        ),
        (
            "{collector: {address: \"otel:4317\", protocol: ZIPKIN}}",
            "mesh.yaml:5: spec.tracing.collector.protocol",
            "GRPC",
        ),
    ] {
        let errs = load_str("mesh.yaml", &mesh(tracing)).expect_err(tracing);
        let all = errs.to_string();
        assert!(
            all.contains(field) && all.contains(says),
            "{tracing}: {all}"
        );
    }
    let bad = mesh("{}").replace("\"25\"", "\"most\"");
    let all = load_str("mesh.yaml", &bad)
        .expect_err("refused")
        .to_string();
    assert!(
        all.contains("mesh.yaml:7: metadata.annotations.trellis.dev/trace-sampling-percentage")
            && all.contains("\"most\" is not a percentage"),
        "{all}"
    );
}
