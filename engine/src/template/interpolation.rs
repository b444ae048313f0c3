//! `${NAME}` references inside values: variable names and how a value splits into
//! literal text and references. Resolving them is [`super::Variables::resolve`]'s
//! and [`super::Service::env_vars`]'s business.

/// Variable names: `[A-Z_][A-Z0-9_]*`, what every shell and runtime takes.
pub(super) fn is_variable_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_uppercase() || c == '_')
        && name.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

pub(super) fn variable_name_message(name: &str) -> String {
    format!("`{name}` is not a valid variable name: use A-Z, 0-9 and `_`, not starting with a digit")
}

/// A piece of a value with references: literal text, or the name inside `${…}`.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Piece<'a> {
    Text(&'a str),
    Reference(&'a str),
}

/// Splits `text` at its `${NAME}` references. `$${` stands for a literal `${`; any
/// other `$` is literal.
pub(super) fn split_references(text: &str) -> Result<Vec<Piece<'_>>, String> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while let Some(dollar) = rest.find('$') {
        let after = &rest[dollar + 1..];
        if let Some(escaped) = after.strip_prefix("${") {
            pieces.push(Piece::Text(&rest[..dollar]));
            pieces.push(Piece::Text("${"));
            rest = escaped;
        } else if let Some(inner) = after.strip_prefix('{') {
            let end = inner.find('}').ok_or("`${` is not closed by `}` (write `$${` for a literal `${`)")?;
            let name = &inner[..end];
            if !is_variable_name(name) {
                return Err(format!(
                    "`${{{name}}}`: `{name}` is not a variable name (A-Z, 0-9 and `_`; write `$${{` for a literal `${{`)"
                ));
            }
            pieces.push(Piece::Text(&rest[..dollar]));
            pieces.push(Piece::Reference(name));
            rest = &inner[end + 1..];
        } else {
            pieces.push(Piece::Text(&rest[..=dollar]));
            rest = after;
        }
    }
    pieces.push(Piece::Text(rest));
    pieces.retain(|piece| *piece != Piece::Text(""));
    Ok(pieces)
}
