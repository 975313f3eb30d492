//! YAML plumbing: split a stream into documents with their line offsets, and turn
//! serde-saphyr errors into `ConfigError`s that name the file and line.

use crate::error::ConfigError;
use serde::de::DeserializeOwned;

/// One YAML document of a stream, with the 1-based line where its text starts.
pub(crate) struct RawDoc<'a> {
    pub text: &'a str,
    pub first_line: u64,
}

/// Splits a multi-document stream at `---` lines. Empty and comment-only documents are dropped.
pub(crate) fn split_documents(src: &str) -> Vec<RawDoc<'_>> {
    let mut docs = Vec::new();
    let mut start = 0usize;
    let mut first_line = 1u64;
    let mut offset = 0usize;
    for (line_no, line) in (1u64..).zip(src.split_inclusive('\n')) {
        let trimmed = line.trim_end();
        let is_marker = trimmed == "---" || trimmed.starts_with("--- ") || trimmed == "...";
        if is_marker {
            push_doc(&mut docs, &src[start..offset], first_line);
            start = offset + line.len();
            first_line = line_no + 1;
        }
        offset += line.len();
    }
    push_doc(&mut docs, &src[start..], first_line);
    docs
}

fn push_doc<'a>(docs: &mut Vec<RawDoc<'a>>, text: &'a str, first_line: u64) {
    let has_content = text
        .lines()
        .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
    if has_content {
        docs.push(RawDoc { text, first_line });
    }
}

/// Parses one document into `T`, reporting errors at `file:line` of the whole stream, with
/// the dotted path of the field when serde knows it.
pub fn parse_document<T: DeserializeOwned>(
    file: &str,
    text: &str,
    first_line: u64,
) -> Result<T, ConfigError> {
    let mut path = String::new();
    serde_saphyr::with_deserializer_from_str(text, |de| {
        serde_path_to_error::deserialize::<_, T>(de).map_err(|e| {
            path = e.path().to_string();
            e.into_inner()
        })
    })
    .map_err(|e| {
        let mut err = to_config_error(file, first_line, &e);
        if path != "." && !path.is_empty() {
            err.field = path;
        }
        err
    })
}

pub(crate) fn to_config_error(file: &str, first_line: u64, e: &serde_saphyr::Error) -> ConfigError {
    let e = e.without_snippet();
    let line = match e.location() {
        Some(loc) if loc.line() > 0 => first_line + loc.line() - 1,
        _ => first_line,
    };
    ConfigError {
        file: file.to_string(),
        line,
        field: String::new(),
        message: strip_location(&e.to_string()),
    }
}

/// serde-saphyr appends " at line N column M"; we report the line ourselves, offset by document.
fn strip_location(msg: &str) -> String {
    let msg = msg.lines().next().unwrap_or(msg).trim();
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

/// The absolute line of a span inside a document that starts at `first_line`.
pub(crate) fn abs_line(first_line: u64, loc: &serde_saphyr::Location) -> u64 {
    if loc.line() > 0 {
        first_line + loc.line() - 1
    } else {
        first_line
    }
}

/// Why [`rewrite_document`] left a file as it was. Causes are part of each message, so none
/// is also a `source` (a chain printer would print it twice).
#[derive(Debug, thiserror::Error)]
pub enum RewriteError {
    #[error("cannot read {file}: {error}")]
    Read { file: String, error: std::io::Error },
    #[error("{file}:{line}: the document moved since it was loaded; retry")]
    Moved { file: String, line: u64 },
    #[error("{0}")]
    Parse(ConfigError),
    /// The edit's own refusal, in the caller's words.
    #[error("{0}")]
    Edit(String),
    #[error("cannot write YAML: {0}")]
    Serialize(serde_saphyr::SerializeError),
    #[error("cannot write {file}: {error}")]
    Write { file: String, error: std::io::Error },
    #[error("cannot replace {file}: {error}")]
    Replace { file: String, error: std::io::Error },
}

/// Rewrites the one document of `path` that starts at `first_line`, leaving every other
/// document byte-for-byte. `edit` changes the document as a JSON value; the document is then
/// written back as YAML (its own comments and layout are not kept). The file is replaced
/// atomically, by writing a sibling and renaming it over the original.
///
/// `edit` reports its refusal as a `String`: that text is the caller's own, and comes back
/// unchanged as [`RewriteError::Edit`].
pub fn rewrite_document(
    path: &std::path::Path,
    first_line: u64,
    edit: impl FnOnce(&mut serde_json::Value) -> Result<(), String>,
) -> Result<(), RewriteError> {
    let file = path.display().to_string();
    let src = std::fs::read_to_string(path).map_err(|error| RewriteError::Read {
        file: file.clone(),
        error,
    })?;
    let doc = split_documents(&src)
        .into_iter()
        .find(|d| d.first_line == first_line)
        .ok_or_else(|| RewriteError::Moved {
            file: file.clone(),
            line: first_line,
        })?;
    let mut value: serde_json::Value =
        parse_document(&file, doc.text, doc.first_line).map_err(RewriteError::Parse)?;
    edit(&mut value).map_err(RewriteError::Edit)?;
    let yaml = serde_saphyr::to_string(&value).map_err(RewriteError::Serialize)?;
    // The document's text is a slice of `src`; splice the new text in its place.
    let start = doc.text.as_ptr() as usize - src.as_ptr() as usize;
    let mut out = String::with_capacity(src.len() + yaml.len());
    out.push_str(&src[..start]);
    out.push_str(&yaml);
    if !yaml.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(&src[start + doc.text.len()..]);
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    std::fs::write(&tmp, out).map_err(|error| RewriteError::Write {
        file: tmp.display().to_string(),
        error,
    })?;
    std::fs::rename(&tmp, path).map_err(|error| RewriteError::Replace { file, error })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_documents_and_keeps_line_numbers() {
        let src = "# header\n---\na: 1\n---\n# only a comment\n---\nb: 2\nc: 3\n";
        let docs = split_documents(src);
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].first_line, 3);
        assert_eq!(docs[0].text, "a: 1\n");
        assert_eq!(docs[1].first_line, 7);
    }
}

#[cfg(test)]
mod rewrite_tests {
    use super::*;

    #[test]
    fn rewrites_one_document_and_keeps_the_others_byte_for_byte() {
        let dir = std::env::temp_dir().join(format!("trellis-rewrite-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("mesh.yaml");
        let first = "# keep me\na: 1   # odd spacing\n";
        let last = "c: [1,2]\n";
        std::fs::write(&path, format!("{first}---\nb: {{w: 1}}\n---\n{last}")).unwrap();
        rewrite_document(&path, 4, |v| {
            v["b"]["w"] = serde_json::json!(5);
            Ok(())
        })
        .unwrap();
        let out = std::fs::read_to_string(&path).unwrap();
        assert!(out.starts_with(&format!("{first}---\n")), "{out}");
        assert!(out.ends_with(&format!("---\n{last}")), "{out}");
        let docs = split_documents(&out);
        let b: serde_json::Value = parse_document("x", docs[1].text, 1).unwrap();
        assert_eq!(b["b"]["w"], 5);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
