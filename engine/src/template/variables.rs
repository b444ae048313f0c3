//! The environment-variable template: names to plain values and secrets, references
//! between them checked for cycles, and resolution against the built-ins of a run.

use std::collections::{BTreeMap, BTreeSet};

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};

use super::interpolation::{Piece, is_variable_name, split_references, variable_name_message};
use super::problems::{Problems, TemplateErrors, parse_yaml};
use super::yaml::{UniqueMap, Yaml, scalar_text};
use crate::canonical::{NUL_REFUSED, storable};
use crate::secret::Secret;

/// One value of the environment-variable template, as written (references unresolved).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VariableValue {
    /// May contain `${NAME}` references and `$${` escapes.
    Plain(String),
    /// Taken literally: no references are resolved inside a secret.
    Secret(Secret),
}

/// A checked environment-variable template: names to values, with no reference
/// cycles. Not serialisable on purpose (it holds secrets in clear): events carry
/// [`Variables::redacted`] and [`Variables::digest`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Variables {
    pub(super) values: BTreeMap<String, VariableValue>,
}

/// The variables template with every secret replaced by a marker: safe for events,
/// logs and API responses. Serialises as a map of name to the value as written, or to
/// `{"secret": true}` for a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RedactedVariables(pub BTreeMap<String, RedactedValue>);

/// A value of [`RedactedVariables`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RedactedValue {
    Plain(String),
    Secret { secret: SecretMarker },
}

/// Stands where a secret value was; serialises as `true` and carries nothing of the
/// value, not even a hash (a short secret's hash can be brute-forced).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SecretMarker;

impl Serialize for SecretMarker {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bool(true)
    }
}

impl<'de> Deserialize<'de> for SecretMarker {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if bool::deserialize(deserializer)? {
            Ok(SecretMarker)
        } else {
            Err(de::Error::custom("a secret marker is `true`"))
        }
    }
}

/// Parses and checks an environment-variable template: a YAML map of names
/// (`[A-Z_][A-Z0-9_]*`) to strings (unquoted integers and booleans are taken in their
/// text form) or `{ secret: "…" }`. An empty document is an empty template.
///
/// References between the template's own variables are checked here: a cycle is a
/// problem at its first variable. A reference to a name the template does not define
/// is taken to be a built-in and only checked by [`Variables::resolve`], because the
/// built-ins are only known when a run starts.
pub fn parse_variables(yaml: &str) -> Result<Variables, TemplateErrors> {
    let raw: Option<UniqueMap<Yaml>> = parse_yaml(yaml)?;
    let mut problems = Problems::default();
    let mut values = BTreeMap::new();
    for (name, value) in raw.map(|m| m.0).unwrap_or_default() {
        if !is_variable_name(&name) {
            problems.add(&name, variable_name_message(&name));
        }
        match variable_value(&value) {
            // A YAML escape (`"\0"`) writes U+0000 without the byte being in the text.
            Ok(VariableValue::Plain(text)) if storable(&text).is_err() => problems.add(&name, NUL_REFUSED),
            Ok(VariableValue::Secret(secret)) if storable(secret.expose_secret()).is_err() => {
                problems.add(&name, NUL_REFUSED)
            }
            Ok(value) => {
                if let VariableValue::Plain(text) = &value
                    && let Err(message) = split_references(text)
                {
                    problems.add(&name, message);
                }
                values.insert(name, value);
            }
            Err(message) => problems.add(&name, message),
        }
    }

    let variables = Variables { values };
    for cycle in variables.cycles() {
        problems.add(cycle[0], format!("refers to itself: {}", cycle.join(" -> ")));
    }
    problems.into_result(variables)
}

/// The value at a variable's key. Messages never quote the value: it may be a secret.
fn variable_value(value: &Yaml) -> Result<VariableValue, String> {
    match value {
        Yaml::Mapping(map) => match (map.len(), map.get("secret")) {
            (1, Some(secret)) => match scalar_text(secret) {
                Ok(secret) => Secret::new(secret)
                    .map(VariableValue::Secret)
                    .ok_or_else(|| "a secret must not be empty".to_owned()),
                Err(message) => Err(format!("secret: {message}")),
            },
            _ => Err("a map value must be `{ secret: \"…\" }`".to_owned()),
        },
        other => scalar_text(other).map(VariableValue::Plain),
    }
}

impl Variables {
    /// The value of `name` as written, if the template defines it.
    pub fn get(&self, name: &str) -> Option<&VariableValue> {
        self.values.get(name)
    }

    /// The variables a run's processes get: `builtins` (what shiplog provides for the
    /// run, e.g. `APPLICATION`, `ENVIRONMENT`, `COMMIT`, `PORT`) plus every template
    /// variable with its references resolved and secrets in clear. Fails with every
    /// reference to a name that is neither a template variable nor a built-in, and
    /// every template variable that redefines a built-in.
    pub fn resolve(&self, builtins: &BTreeMap<String, String>) -> Result<BTreeMap<String, String>, TemplateErrors> {
        let mut problems = Problems::default();
        for name in self.values.keys() {
            if builtins.contains_key(name) {
                problems.add(name, format!("`{name}` is provided by shiplog; choose another name"));
            }
        }
        let mut resolver = Resolver { variables: self, builtins, done: BTreeMap::new(), problems };
        for name in self.values.keys() {
            resolver.resolve(name, &mut Vec::new());
        }
        let Resolver { done, problems, .. } = resolver;
        let mut env = builtins.clone();
        env.extend(done.into_iter().filter_map(|(name, value)| Some((name.to_owned(), value?))));
        problems.into_result(env)
    }

    /// Every secret value in clear, so that run logs can mask them wherever a
    /// process prints one. For that only: never store, log or return them.
    pub fn secret_values(&self) -> Vec<String> {
        self.values
            .values()
            .filter_map(|value| match value {
                VariableValue::Secret(secret) => Some(secret.expose_secret().to_owned()),
                VariableValue::Plain(_) => None,
            })
            .collect()
    }

    /// The template with secrets replaced by [`SecretMarker`]; plain values as written.
    pub fn redacted(&self) -> RedactedVariables {
        RedactedVariables(
            self.values
                .iter()
                .map(|(name, value)| {
                    let value = match value {
                        VariableValue::Plain(text) => RedactedValue::Plain(text.clone()),
                        VariableValue::Secret(_) => RedactedValue::Secret { secret: SecretMarker },
                    };
                    (name.clone(), value)
                })
                .collect(),
        )
    }

    /// Every cycle of references between template variables, each listed from its
    /// first variable in name order back to it (`A -> B -> A`).
    fn cycles(&self) -> Vec<Vec<&str>> {
        fn visit<'a>(
            variables: &'a Variables,
            name: &'a str,
            stack: &mut Vec<&'a str>,
            finished: &mut BTreeSet<&'a str>,
            cycles: &mut Vec<Vec<&'a str>>,
        ) {
            if finished.contains(name) {
                return;
            }
            if let Some(start) = stack.iter().position(|n| *n == name) {
                let mut cycle = stack[start..].to_vec();
                cycle.push(name);
                cycles.push(cycle);
                return;
            }
            stack.push(name);
            for reference in variables.references(name) {
                visit(variables, reference, stack, finished, cycles);
            }
            stack.pop();
            finished.insert(name);
        }

        let mut finished = BTreeSet::new();
        let mut cycles = Vec::new();
        for name in self.values.keys() {
            visit(self, name, &mut Vec::new(), &mut finished, &mut cycles);
        }
        cycles
    }

    /// The template variables that `name`'s value refers to (built-ins left out).
    fn references<'a>(&'a self, name: &str) -> Vec<&'a str> {
        let Some(VariableValue::Plain(text)) = self.values.get(name) else {
            return Vec::new();
        };
        split_references(text)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|piece| match piece {
                Piece::Reference(reference) => self.values.get_key_value(reference).map(|(key, _)| key.as_str()),
                Piece::Text(_) => None,
            })
            .collect()
    }
}

/// Resolves template variables depth-first, each once. A variable that cannot be
/// resolved is remembered as `None`, so a problem is reported once, at the variable
/// that has it, and not again at every variable that refers to it.
struct Resolver<'a> {
    variables: &'a Variables,
    builtins: &'a BTreeMap<String, String>,
    done: BTreeMap<&'a str, Option<String>>,
    problems: Problems,
}

impl<'a> Resolver<'a> {
    fn resolve(&mut self, name: &'a str, stack: &mut Vec<&'a str>) -> Option<String> {
        if let Some(value) = self.done.get(name) {
            return value.clone();
        }
        let (name, value) = self.variables.values.get_key_value(name)?;
        let name = name.as_str();
        if stack.contains(&name) {
            // `parse_variables` refuses cycles; kept so resolving can never recurse forever.
            self.problems.add(name, "refers to itself");
            return None;
        }
        let resolved = match value {
            VariableValue::Secret(secret) => Some(secret.expose_secret().to_owned()),
            VariableValue::Plain(text) => {
                stack.push(name);
                let resolved = self.interpolate(name, text, stack);
                stack.pop();
                resolved
            }
        };
        self.done.insert(name, resolved.clone());
        resolved
    }

    fn interpolate(&mut self, name: &'a str, text: &'a str, stack: &mut Vec<&'a str>) -> Option<String> {
        let pieces = match split_references(text) {
            Ok(pieces) => pieces,
            Err(message) => {
                self.problems.add(name, message);
                return None;
            }
        };
        let mut out = String::new();
        let mut complete = true;
        for piece in pieces {
            match piece {
                Piece::Text(text) => out.push_str(text),
                Piece::Reference(reference) if self.variables.values.contains_key(reference) => {
                    match self.resolve(reference, stack) {
                        Some(value) => out.push_str(&value),
                        None => complete = false,
                    }
                }
                Piece::Reference(reference) => {
                    match self.builtins.get(reference) {
                        Some(value) => out.push_str(value),
                        None => {
                            let builtins: Vec<&str> = self.builtins.keys().map(String::as_str).collect();
                            let builtins = if builtins.is_empty() {
                                "this run has none".to_owned()
                            } else {
                                format!("this run has {}", builtins.join(", "))
                            };
                            self.problems.add(
                            name,
                            format!("`${{{reference}}}` is neither a variable of this template nor a built-in ({builtins})"),
                        );
                            complete = false;
                        }
                    }
                }
            }
        }
        complete.then_some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{SECRET, builtins, problems, variables_err, variables_yaml};
    use super::*;

    #[test]
    fn variables_resolve_chains_builtins_escapes_and_secrets() {
        let variables = parse_variables(&variables_yaml()).unwrap();
        assert_eq!(variables.get("WORKERS"), Some(&VariableValue::Plain("4".into())));
        assert_eq!(variables.get("VERBOSE"), Some(&VariableValue::Plain("true".into())));
        let env = variables.resolve(&builtins()).unwrap();
        let expected: BTreeMap<String, String> = [
            ("APPLICATION", "shop"),
            ("COMMIT", "abc123"),
            ("ENVIRONMENT", "staging"),
            ("DATABASE_URL", "postgres://app:hunter2-very-secret@db/staging"),
            ("DB_PASSWORD", SECRET),
            ("LOG_LEVEL", "info"),
            ("WORKERS", "4"),
            ("VERBOSE", "true"),
            ("GREETING", "hello, world"),
            ("PREFIX", "hello,"),
            ("SALUTATION", "hello"),
            ("PRICE", "costs $5, $$ and ${NOT_A_REFERENCE}"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(env, expected);
        assert_eq!(variables.secret_values(), [SECRET]);
    }

    #[test]
    fn secrets_are_taken_literally() {
        let variables = parse_variables("TOKEN: { secret: \"a${B}c$${d\" }").unwrap();
        assert_eq!(variables.resolve(&BTreeMap::new()).unwrap()["TOKEN"], "a${B}c$${d");
    }

    #[test]
    fn reference_cycles_are_rejected_at_parse_time() {
        let errors = variables_err(
            r#"
A: "${B}"
B: "x${C}"
C: "${A}y"
SELF: "${SELF}"
OUTSIDE: "${A}"
FINE: "${ENVIRONMENT}"
"#,
        );
        assert_eq!(
            problems(&errors),
            [("A", "refers to itself: A -> B -> C -> A"), ("SELF", "refers to itself: SELF -> SELF"),]
        );
    }

    #[test]
    fn unknown_references_and_redefined_builtins_are_rejected_at_resolve_time() {
        let variables = parse_variables(
            r#"
URL: "https://${HOST}/${ENVIRONMNET}"
HOST: "${REGION}.example.com"
USES_HOST: "${HOST}"
COMMIT: "mine"
"#,
        )
        .unwrap();
        let errors = variables.resolve(&builtins()).unwrap_err();
        assert_eq!(
            problems(&errors),
            [
                ("COMMIT", "`COMMIT` is provided by shiplog; choose another name"),
                (
                    "HOST",
                    "`${REGION}` is neither a variable of this template nor a built-in (this run has APPLICATION, COMMIT, ENVIRONMENT)"
                ),
                (
                    "URL",
                    "`${ENVIRONMNET}` is neither a variable of this template nor a built-in (this run has APPLICATION, COMMIT, ENVIRONMENT)"
                ),
            ]
        );
    }

    #[test]
    fn every_variables_problem_is_reported_together() {
        let errors = variables_err(
            r#"
lower_case: x
1ST: x
OPEN: "${NAME"
BAD_REF: "${lower}"
EMPTY:
RATIO: 0.5
LIST: [a]
EMPTY_SECRET: { secret: "" }
OTHER_MAP: { secret: x, note: y }
"#,
        );
        assert_eq!(
            problems(&errors),
            [
                ("1ST", "`1ST` is not a valid variable name: use A-Z, 0-9 and `_`, not starting with a digit"),
                (
                    "BAD_REF",
                    "`${lower}`: `lower` is not a variable name (A-Z, 0-9 and `_`; write `$${` for a literal `${`)"
                ),
                ("EMPTY", "a value is required (write \"\" for an empty string)"),
                ("EMPTY_SECRET", "a secret must not be empty"),
                ("LIST", "expected a string, found a list"),
                ("OPEN", "`${` is not closed by `}` (write `$${` for a literal `${`)"),
                ("OTHER_MAP", "a map value must be `{ secret: \"…\" }`"),
                ("RATIO", "quote decimal numbers (e.g. \"1.10\") so their exact text is kept"),
                (
                    "lower_case",
                    "`lower_case` is not a valid variable name: use A-Z, 0-9 and `_`, not starting with a digit"
                ),
            ]
        );

        let errors = variables_err("A: 1\nA: 2\n");
        assert_eq!(problems(&errors), [("", "`A` is defined twice at line 1 column 1")]);
        assert!(parse_variables("").unwrap().resolve(&builtins()).unwrap() == builtins());
    }

    #[test]
    fn redacted_variables_hold_no_secret() {
        let variables = parse_variables(&variables_yaml()).unwrap();
        let redacted = variables.redacted();
        let json = serde_json::to_string(&redacted).unwrap();
        assert!(!json.contains(SECRET), "{json}");
        assert!(!json.contains("hunter2"), "{json}");

        let value = serde_json::to_value(&redacted).unwrap();
        assert_eq!(value["DB_PASSWORD"], serde_json::json!({ "secret": true }));
        // Plain values stay as written, references unresolved.
        assert_eq!(value["DATABASE_URL"], "postgres://app:${DB_PASSWORD}@db/${ENVIRONMENT}");
        assert_eq!(value["WORKERS"], "4");
        assert_eq!(serde_json::from_value::<RedactedVariables>(value).unwrap(), redacted);
        assert!(serde_json::from_str::<RedactedVariables>(r#"{"A":{"secret":false}}"#).is_err());
    }

    #[test]
    fn debug_output_holds_no_secret() {
        let variables = parse_variables(&variables_yaml()).unwrap();
        let debug = format!("{variables:?}");
        assert!(!debug.contains(SECRET), "{debug}");
        assert!(debug.contains("Secret(***)"), "{debug}");
        assert!(debug.contains("LOG_LEVEL"), "{debug}");
        let pretty = format!("{variables:#?}");
        assert!(!pretty.contains(SECRET), "{pretty}");
    }
}
