//! `trellis inject -f FILE`: the webhook's code applied offline to a YAML stream. Pods and
//! the pod templates of Deployments, StatefulSets, DaemonSets, ReplicaSets, Jobs and CronJobs
//! are injected; every other document passes through unchanged.

use super::admission::pod_patch;
use super::{InjectConfig, InjectError, Outcome, inject_pod};
use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;

/// What happened to one document, for the summary the CLI prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// `kind/namespace/name` as in the document.
    pub object: String,
    /// `None` for kinds without pods.
    pub outcome: Option<Outcome>,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{file}: not a YAML stream: {message}")]
    Yaml { file: String, message: String },
    #[error("{file}: document {index} ({object}): {message}")]
    Document {
        file: String,
        index: usize,
        object: String,
        message: String,
    },
    #[error("{file}: document {index} ({object}): {source}")]
    Inject {
        file: String,
        index: usize,
        object: String,
        source: Box<InjectError>,
    },
}

/// Injects every pod-bearing document of `text` and renders the stream back as YAML.
pub fn inject_stream(
    file: &str,
    text: &str,
    cfg: &InjectConfig,
) -> Result<(String, Vec<Report>), ManifestError> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(text).map_err(|e| ManifestError::Yaml {
        file: file.into(),
        message: e.to_string(),
    })?;
    let mut out = Vec::new();
    let mut reports = Vec::new();
    for (i, mut doc) in docs.into_iter().enumerate() {
        if doc.is_null() {
            continue; // an empty document between two `---`
        }
        let index = i + 1;
        inject_document(&mut doc, cfg, &mut reports).map_err(|(object, e)| match e {
            DocError::Inject(source) => ManifestError::Inject {
                file: file.into(),
                index,
                object,
                source: Box::new(source),
            },
            DocError::Shape(message) => ManifestError::Document {
                file: file.into(),
                index,
                object,
                message,
            },
        })?;
        let yaml = serde_saphyr::to_string(&doc).map_err(|e| ManifestError::Yaml {
            file: file.into(),
            message: e.to_string(),
        })?;
        out.push(yaml);
    }
    Ok((out.join("---\n"), reports))
}

enum DocError {
    Inject(InjectError),
    Shape(String),
}

fn inject_document(
    doc: &mut Value,
    cfg: &InjectConfig,
    reports: &mut Vec<Report>,
) -> Result<(), (String, DocError)> {
    let kind = doc["kind"].as_str().unwrap_or("").to_string();
    let object = format!(
        "{kind}/{}/{}",
        doc["metadata"]["namespace"].as_str().unwrap_or("default"),
        doc["metadata"]["name"].as_str().unwrap_or("")
    );
    if kind == "List" {
        if let Some(items) = doc.get_mut("items").and_then(Value::as_array_mut) {
            for item in items {
                inject_document(item, cfg, reports)?;
            }
        }
        return Ok(());
    }
    let template = match kind.as_str() {
        "Pod" => Some(&mut *doc),
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => {
            doc.pointer_mut("/spec/template")
        }
        "CronJob" => doc.pointer_mut("/spec/jobTemplate/spec/template"),
        _ => {
            reports.push(Report {
                object,
                outcome: None,
            });
            return Ok(());
        }
    };
    let Some(template) = template else {
        let msg = "has no pod template (spec.template); is it a complete manifest?".to_string();
        return Err((object, DocError::Shape(msg)));
    };
    let outcome = inject_template(template, cfg).map_err(|e| (object.clone(), e))?;
    reports.push(Report {
        object,
        outcome: Some(outcome),
    });
    Ok(())
}

/// Injects a `{metadata, spec}` object in place. The typed pod is only used to compute the
/// patch, so fields this build does not know survive untouched.
fn inject_template(template: &mut Value, cfg: &InjectConfig) -> Result<Outcome, DocError> {
    let pod_view = serde_json::json!({
        "metadata": template.get("metadata").cloned().unwrap_or(Value::Object(Default::default())),
        "spec": template.get("spec").cloned().unwrap_or(Value::Null),
    });
    let before: Pod = serde_json::from_value(pod_view)
        .map_err(|e| DocError::Shape(format!("not a valid pod template: {e}")))?;
    let mut after = before.clone();
    let spec = after
        .spec
        .as_mut()
        .ok_or_else(|| DocError::Shape("the pod template has no spec".into()))?;
    let outcome = inject_pod(&mut after.metadata, spec, cfg).map_err(DocError::Inject)?;
    if outcome == Outcome::Injected {
        if template.get("metadata").is_none() {
            template["metadata"] = Value::Object(Default::default());
        }
        json_patch::patch(template, &pod_patch(&before, &after))
            .map_err(|e| DocError::Shape(format!("cannot apply the injection patch: {e}")))?;
    }
    Ok(outcome)
}
