//! Pods the injector cannot handle, and bodies that are not AdmissionReviews, are denied
//! with a message that says what to do.

use super::k8s;
use serde_json::{Value, json};
use trellis_control::inject::InjectConfig;
use trellis_control::inject::admission::review;

fn deny(edit: impl FnOnce(&mut Value)) -> String {
    let body = std::fs::read(k8s::fixture("admission/pod.json")).unwrap();
    let mut req: Value = serde_json::from_slice(&body).unwrap();
    edit(&mut req["request"]["object"]);
    let resp: Value = serde_json::from_slice(&review(
        &serde_json::to_vec(&req).unwrap(),
        &InjectConfig::default(),
    ))
    .unwrap();
    assert_eq!(resp["response"]["allowed"], false, "{resp}");
    assert_eq!(resp["response"]["status"]["code"], 403);
    assert!(resp["response"].get("patch").is_none());
    resp["response"]["status"]["message"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn pods_the_injector_cannot_handle_are_denied_with_what_to_do() {
    let msg = deny(|pod| {
        pod["metadata"]["annotations"]["trellis.dev/exclude-inbound-ports"] = json!("80,admin")
    });
    assert_eq!(
        msg,
        "trellis injector: annotation trellis.dev/exclude-inbound-ports: \"80,admin\" is not valid; use comma-separated port numbers 1-65535, e.g. 5432,6379, or remove the annotation"
    );
    let msg = deny(|pod| {
        pod["metadata"]["annotations"]["trellis.dev/proxy-memory-limit"] = json!("lots")
    });
    assert!(msg.contains("a Kubernetes quantity such as"), "{msg}");
    let msg = deny(|pod| pod["spec"]["hostNetwork"] = json!(true));
    assert!(
        msg.contains("hostNetwork: true") && msg.contains("trellis.dev/inject: disabled"),
        "{msg}"
    );
    let msg = deny(|pod| pod["spec"]["containers"][0]["ports"][0]["containerPort"] = json!(15001));
    assert!(
        msg.contains("port 15001") && msg.contains("billing"),
        "{msg}"
    );
    let msg = deny(|pod| pod["spec"]["containers"][0]["name"] = json!("trellis-proxy"));
    assert!(
        msg.contains("already has a container named \"trellis-proxy\""),
        "{msg}"
    );
}

#[test]
fn a_body_that_is_not_an_admission_review_gets_an_invalid_answer() {
    let resp: Value =
        serde_json::from_slice(&review(b"{\"kind\": \"Pod\"}", &InjectConfig::default())).unwrap();
    assert_eq!(resp["response"]["allowed"], false);
    assert!(
        resp["response"]["status"]["message"]
            .as_str()
            .unwrap()
            .contains("not an AdmissionReview"),
        "{resp}"
    );
}
