//! What is wrong with a template: every problem with its path, and the one problem
//! that stops reading a document that is not YAML of the right shape.

use std::fmt;

use serde::de::DeserializeOwned;
use serde_path_to_error::Segment;

/// One thing wrong with a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateProblem {
    /// Where: dotted keys and `[index]`, e.g. `services.web.ports[0]`, `release[1].timeout`
    /// or, for the variables template, the variable's name. Empty when the problem is
    /// about the document as a whole (most YAML syntax errors).
    pub path: String,
    /// What is wrong and, where it helps, how to fix it. Never quotes a value of the
    /// variables template, which may be a secret.
    pub message: String,
}

/// Every problem found in a template, in a stable order (sections as documented,
/// services and variables by name, list entries in order). Never empty when
/// returned as an error. `Display` prints one `path: message` line per problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateErrors(pub Vec<TemplateProblem>);

impl fmt::Display for TemplateProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() { f.write_str(&self.message) } else { write!(f, "{}: {}", self.path, self.message) }
    }
}

impl fmt::Display for TemplateErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for TemplateErrors {}

/// Collects problems while a template is checked.
#[derive(Default)]
pub(super) struct Problems(Vec<TemplateProblem>);

impl Problems {
    pub(super) fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(TemplateProblem { path: path.into(), message: message.into() });
    }

    pub(super) fn into_result<T>(self, value: T) -> Result<T, TemplateErrors> {
        if self.0.is_empty() { Ok(value) } else { Err(TemplateErrors(self.0)) }
    }
}

/// Reads `yaml` into its shape `T`, or returns the single problem that stopped it,
/// with its line and column and the path of the node it is about.
///
/// The path comes from `serde_path_to_error`, which follows the deserializer down to
/// the exact key or value that failed. A problem is about the node serde_norway names
/// at the start of its message: the map, for an unknown or repeated key (the key is
/// not a node of the template), and the document, for a syntax error. So the problem
/// takes the longest part of the exact path that the message starts with.
pub(super) fn parse_yaml<T: DeserializeOwned>(yaml: &str) -> Result<T, TemplateErrors> {
    serde_path_to_error::deserialize(serde_norway::Deserializer::from_str(yaml)).map_err(|error| {
        let segments: Vec<&Segment> = error.path().iter().collect();
        let text = error.inner().to_string();
        let (path, mut message) = (1..=segments.len())
            .rev()
            .map(|len| path_text(&segments[..len]))
            .find_map(|path| {
                let message = text.strip_prefix(&path)?.strip_prefix(": ")?.to_owned();
                Some((path, message))
            })
            .unwrap_or_else(|| (String::new(), text.clone()));
        if let Some(location) = error.inner().location()
            && !message.contains(" line ")
        {
            message.push_str(&format!(" at line {} column {}", location.line(), location.column()));
        }
        TemplateErrors(vec![TemplateProblem { path, message }])
    })
}

/// `services.web.ports[0]`: keys joined by `.`, list indexes in brackets.
fn path_text(segments: &[&Segment]) -> String {
    let mut text = String::new();
    for segment in segments {
        if !text.is_empty() && !matches!(segment, Segment::Seq { .. }) {
            text.push('.');
        }
        text.push_str(&segment.to_string());
    }
    text
}
