//! Status conditions: their JSON, the times Kubernetes expects on them, and the message a
//! refusal becomes.

use crate::kubernetes::translate::HeldBack;
use serde_json::{Value, json};

/// A status condition before its times are known.
pub(super) struct Condition {
    kind: &'static str,
    status: bool,
    reason: &'static str,
    message: String,
}

impl Condition {
    pub(super) fn new(
        kind: &'static str,
        status: bool,
        reason: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Condition {
            kind,
            status,
            reason,
            message: message.into(),
        }
    }

    pub(super) fn untimed(&self) -> Value {
        json!({
            "type": self.kind,
            "status": if self.status { "True" } else { "False" },
            "reason": self.reason,
            "message": self.message,
        })
    }

    pub(super) fn to_json(&self, generation: Option<i64>, old: Option<&Value>, now: &str) -> Value {
        let mut c = self.untimed();
        stamp_condition(&mut c, old.unwrap_or(&Value::Null), generation, now);
        c
    }
}

pub(super) fn stamp_condition(c: &mut Value, old: &Value, generation: Option<i64>, now: &str) {
    if let Some(g) = generation {
        c["observedGeneration"] = json!(g);
    }
    let same = old
        .as_array()
        .into_iter()
        .flatten()
        .find(|o| o["type"] == c["type"] && o["status"] == c["status"]);
    c["lastTransitionTime"] = match same.and_then(|o| o.get("lastTransitionTime")) {
        Some(t) => t.clone(),
        None => json!(now),
    };
}

/// A refusal as a condition message: the loader's errors (those whose field contains
/// `only`, if given) and what serves meanwhile.
pub(super) fn refusal(h: &HeldBack, only: Option<&str>) -> String {
    let errors: Vec<String> = h
        .errors
        .iter()
        .filter(|e| only.is_none_or(|f| e.field.contains(f)))
        .map(|e| {
            if e.field.is_empty() {
                e.message.clone()
            } else {
                format!("{}: {}", e.field, e.message)
            }
        })
        .collect();
    let serves = if h.previous_serves {
        "the previous version of this object keeps serving"
    } else {
        "this object is not served"
    };
    let mut message = format!("refused: {}; {serves}", errors.join("; "));
    // The API server caps condition messages at 32,768 characters.
    if message.len() > 4096 {
        let mut end = 4096;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push_str(" ...");
    }
    message
}

/// Now, as Kubernetes writes times (RFC 3339, seconds).
pub(crate) fn now() -> String {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    let t = Time(k8s_openapi::jiff::Timestamp::now());
    serde_json::to_value(t)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}
