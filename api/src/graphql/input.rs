//! Checks every string a request carries, before anything runs: the engine's one
//! rule for storable text (`canonical::storable`: no U+0000) applied at the edge,
//! so a bad reason, name or template is refused with `BAD_USER_INPUT` instead of
//! failing deep inside (or, worse, being stored and stalling the read models).

use std::sync::Arc;

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextParseQuery};
use async_graphql::parser::types::{Directive, ExecutableDocument, Selection, SelectionSet};
use async_graphql::{ErrorExtensionValues, Name, Positioned, ServerError, ServerResult, Value, Variables};
use async_graphql_value::Value as DocumentValue;
use shiplog_engine::canonical;

/// The extension that refuses a request holding unstorable text anywhere.
pub struct StorableText;

impl ExtensionFactory for StorableText {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(StorableText)
    }
}

#[async_graphql::async_trait::async_trait]
impl Extension for StorableText {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        for (name, value) in variables.iter() {
            if !const_storable(value) {
                return Err(refused(&format!("variable `{name}`"), None));
            }
        }
        let document = next.run(ctx, query, variables).await?;
        let operations = document.operations.iter().map(|(_, op)| op);
        for op in operations {
            for variable in &op.node.variable_definitions {
                if let Some(default) = &variable.node.default_value
                    && !const_storable(&default.node)
                {
                    return Err(refused(&format!("variable `{}`", variable.node.name.node), Some(default.pos)));
                }
            }
            directives(&op.node.directives)?;
            selections(&op.node.selection_set)?;
        }
        for fragment in document.fragments.values() {
            directives(&fragment.node.directives)?;
            selections(&fragment.node.selection_set)?;
        }
        Ok(document)
    }
}

fn refused(what: &str, pos: Option<async_graphql::Pos>) -> ServerError {
    let mut error = ServerError::new(format!("{what}: {}", canonical::NUL_REFUSED), pos);
    let mut extensions = ErrorExtensionValues::default();
    extensions.set("code", "BAD_USER_INPUT");
    error.extensions = Some(extensions);
    error
}

fn selections(set: &Positioned<SelectionSet>) -> ServerResult<()> {
    for item in &set.node.items {
        match &item.node {
            Selection::Field(field) => {
                arguments(&field.node.arguments)?;
                directives(&field.node.directives)?;
                selections(&field.node.selection_set)?;
            }
            Selection::FragmentSpread(spread) => directives(&spread.node.directives)?,
            Selection::InlineFragment(inline) => {
                directives(&inline.node.directives)?;
                selections(&inline.node.selection_set)?;
            }
        }
    }
    Ok(())
}

fn directives(directives: &[Positioned<Directive>]) -> ServerResult<()> {
    directives.iter().try_for_each(|d| arguments(&d.node.arguments))
}

fn arguments(arguments: &[(Positioned<Name>, Positioned<DocumentValue>)]) -> ServerResult<()> {
    for (name, value) in arguments {
        if !document_storable(&value.node) {
            return Err(refused(&format!("argument `{}`", name.node), Some(value.pos)));
        }
    }
    Ok(())
}

fn const_storable(value: &Value) -> bool {
    match value {
        Value::String(s) => canonical::storable(s).is_ok(),
        Value::List(items) => items.iter().all(const_storable),
        Value::Object(fields) => fields.values().all(const_storable),
        _ => true,
    }
}

fn document_storable(value: &DocumentValue) -> bool {
    match value {
        DocumentValue::String(s) => canonical::storable(s).is_ok(),
        DocumentValue::List(items) => items.iter().all(document_storable),
        DocumentValue::Object(fields) => fields.values().all(document_storable),
        _ => true,
    }
}
