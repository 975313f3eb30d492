//! Where a document came from, so each check reports at its file and line.

use crate::error::ConfigErrors;
use crate::mesh_config::Doc;
use crate::yaml::abs_line;
use serde_saphyr::Spanned;

/// A document's file and first line: `at` reports at a field's own line, `doc` at the
/// document's start.
pub(super) struct Origin<'a> {
    file: &'a str,
    line: u64,
}

impl<'a> Origin<'a> {
    pub(super) fn new<S>(d: &'a Doc<S>) -> Self {
        Origin {
            file: &d.file,
            line: d.line,
        }
    }

    pub(super) fn at<T>(
        &self,
        errs: &mut ConfigErrors,
        span: &Spanned<T>,
        field: impl Into<String>,
        msg: impl Into<String>,
    ) {
        errs.push(self.file, abs_line(self.line, &span.referenced), field, msg);
    }

    pub(super) fn doc(
        &self,
        errs: &mut ConfigErrors,
        field: impl Into<String>,
        msg: impl Into<String>,
    ) {
        errs.push(self.file, self.line, field, msg);
    }
}
