//! Fuzz targets of the engine's readers of outside input (see the README,
//! "Fuzzing"): canonical JSON, the templates, the pure parts of what a push and a
//! merge request do, cursors and names. None may panic, whatever the input; each
//! answer is a value or the error of its own kind.

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::Value;
use shiplog_engine::canonical::{CanonicalError, NUL_REFUSED, canonicalize, canonicalize_str};
use shiplog_engine::domain::merge_request::not_ready;
use shiplog_engine::domain::{CommitId, Name};
use shiplog_engine::push::{preview_names, pushed_ref, repository_key};
use shiplog_engine::store::Cursor;
use shiplog_engine::template::{TemplateProblem, parse_application_template, parse_duration, parse_variables};
use shiplog_tests::fuzz::{self, api_text, awkward_text, json_value, mutated, mutated_text, yaml_quoted};

const TEMPLATE: &str = include_str!("../../../examples/hello/shiplog.yaml");
const VARIABLES: &str = include_str!("../../../examples/hello/variables.yaml");
const PUSH: &str = include_str!("../../../api/tests/it/fixtures/github-push.json");

/// A YAML document as JSON, for [`mutated`].
fn yaml_value(yaml: &str) -> Value {
    serde_norway::from_str(yaml).expect("a fixture is valid YAML")
}

fn has_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(members) => members.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

/// Canonical text is a fixed point: read back and encoded again, it is the same
/// bytes (what the hash chain relies on).
fn assert_canonical_fixed_point(text: &str) {
    let back: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("canonical text {text:?} is not JSON: {e}"));
    assert_eq!(canonicalize(&back).as_deref(), Ok(text));
}

proptest! {
    #![proptest_config(fuzz::config())]

    #[test]
    fn canonical_json_encodes_any_value_or_says_why_not(value in json_value()) {
        match canonicalize(&value) {
            Ok(text) => assert_canonical_fixed_point(&text),
            Err(CanonicalError::Nul) => prop_assert!(has_nul(&value)),
            Err(CanonicalError::InexactNumber(n)) => prop_assert!(n.parse::<i128>().is_ok_and(|n| n.unsigned_abs() > 1 << 53)),
            Err(other) => prop_assert!(false, "{other:?} for a value"),
        }
    }

    #[test]
    fn canonical_json_reads_any_text(text in mutated_text(PUSH.to_owned())) {
        if let Ok(canonical) = canonicalize_str(&text) {
            assert_canonical_fixed_point(&canonical);
        }
    }

    #[test]
    fn the_application_template_parser_answers_any_text(text in mutated_text(TEMPLATE.to_owned())) {
        check_template(&text);
    }

    #[test]
    fn the_application_template_parser_answers_any_document(value in mutated(yaml_value(TEMPLATE))) {
        check_template(&serde_norway::to_string(&value).unwrap());
    }

    #[test]
    fn the_variables_parser_answers_any_text(
        text in mutated_text(VARIABLES.to_owned()),
        builtins in prop::collection::btree_map(awkward_text(), awkward_text(), 0..4),
    ) {
        check_variables(&text, &builtins);
    }

    #[test]
    fn the_variables_parser_answers_any_document(
        value in mutated(yaml_value(VARIABLES)),
        builtins in prop::collection::btree_map(awkward_text(), awkward_text(), 0..4),
    ) {
        check_variables(&serde_norway::to_string(&value).unwrap(), &builtins);
    }

    #[test]
    fn any_text_written_as_a_quoted_yaml_scalar_reads_back_as_itself(text in api_text()) {
        let back: String = serde_norway::from_str(&yaml_quoted(&text)).unwrap();
        prop_assert_eq!(back, text);
    }

    #[test]
    fn what_a_push_or_merge_request_names_is_read_from_any_text(text in awkward_text(), draft in any::<bool>()) {
        let _ = pushed_ref(&text);
        let _ = repository_key(&text);
        for name in preview_names(&text) {
            prop_assert!(name.as_str().starts_with("preview-") && name.as_str().len() <= 40, "{name}");
        }
        let _ = not_ready(&text, draft);
    }

    #[test]
    fn names_commit_ids_cursors_and_durations_parse_or_are_refused(text in awkward_text()) {
        if let Ok(name) = text.parse::<Name>() {
            prop_assert_eq!(name.as_str(), text.as_str());
        }
        if let Ok(commit) = text.parse::<CommitId>() {
            prop_assert_eq!(commit.short().len(), 12);
        }
        if let Ok(cursor) = text.parse::<Cursor>() {
            prop_assert_eq!(cursor.to_string().parse::<Cursor>().ok(), Some(cursor));
        }
        let _ = parse_duration(&text);
    }
}

/// Parses an application template; a template that parses can be digested and
/// every problem of one that does not can be told.
fn check_template(text: &str) {
    match parse_application_template(text) {
        Ok(template) => {
            let _ = (template.digest(), template.volume_names(), template.production_branch());
        }
        Err(errors) => assert!(!errors.to_string().is_empty()),
    }
}

/// Parses a variables template and resolves it against `builtins`.
fn check_variables(text: &str, builtins: &BTreeMap<String, String>) {
    match parse_variables(text) {
        Ok(variables) => {
            let _ = (variables.resolve(builtins), variables.redacted(), variables.secret_values());
        }
        Err(errors) => assert!(!errors.to_string().is_empty()),
    }
}

// What the fuzz targets found, each fixed at its cause.

/// The canonical text of a large double (beyond 2^53) is integer digits; read
/// back, they were refused as an inexact integer, so canonical text was not
/// always canonical.
#[test]
fn the_canonical_text_of_a_large_double_reads_back_as_itself() {
    let text = canonicalize(&serde_json::json!({ "": 5.579602594407416e17 })).unwrap();
    assert_eq!(text, r#"{"":557960259440741600}"#);
    assert_eq!(canonicalize_str(&text).as_deref(), Ok(text.as_str()));
    assert_eq!(canonicalize_str("[-557960259440741600]").as_deref(), Ok("[-557960259440741600]"));
    assert_eq!(
        canonicalize_str("[9007199254740993]"),
        Err(CanonicalError::InexactNumber("9007199254740993".into())),
        "an integer a double would round is still refused"
    );
}

/// A YAML escape writes U+0000 without the byte in the text: the digest of such
/// a template panicked; it is a problem of the template now.
#[test]
fn a_nul_written_as_a_yaml_escape_is_a_template_problem() {
    let template = TEMPLATE.replace("[\"sh\", \"./teardown.sh\"]", "\"\\0\"");
    assert_ne!(template, TEMPLATE);
    let problems = parse_application_template(&template).unwrap_err().0;
    assert_eq!(problems, vec![TemplateProblem { path: String::new(), message: NUL_REFUSED.into() }]);
    let problems = parse_variables("GREETING: \"a\\0b\"\nTOKEN: { secret: \"\\0\" }\n").unwrap_err().0;
    let names: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(names, ["GREETING", "TOKEN"]);
    assert!(problems.iter().all(|p| p.message == NUL_REFUSED), "{problems:?}");
}
