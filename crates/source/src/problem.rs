//! Problems found while reading manifests: one line naming the file, the object and
//! the reason.

use std::fmt;

use kpr_model::Problem;

/// A problem with a manifest file, document or object. The named part is skipped;
/// everything else keeps being programmed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceProblem {
    /// The file (path as given).
    pub file: String,
    /// 1-based document number in a multi-document YAML file, when known.
    pub document: Option<usize>,
    /// What went wrong, naming kind, namespace/name and field where known.
    pub message: String,
}

impl SourceProblem {
    /// A problem with a document of `file`.
    pub fn new(file: &str, document: Option<usize>, message: impl Into<String>) -> Self {
        Self {
            file: file.to_string(),
            document,
            message: message.into(),
        }
    }

    /// A model problem found in an object of `file`.
    pub fn from_model(file: &str, document: Option<usize>, problem: &Problem) -> Self {
        Self::new(file, document, problem.to_string())
    }
}

impl fmt::Display for SourceProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.document {
            Some(doc) => write!(f, "{}: document {}: {}", self.file, doc, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}
