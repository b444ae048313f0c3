//! Field errors as the GraphQL spec handles them (§6.4.4, "Handling Field
//! Errors"): a field that errors is `null` in `data` and its error is in
//! `errors`; if the field is non-null, the null goes to its parent, and so on up
//! to the nearest nullable field (or `data` itself).
//!
//! async-graphql 7 does not: the resolver of an object's fields records a field's
//! error and leaves the field out of the object, whatever its type, so a client
//! that reads `data.environment.lastRun` finds nothing there instead of `null`,
//! and a non-null field's parent stays. This extension takes each field's
//! outcome as it resolves: an error becomes `null`, with the error kept for the
//! response; a non-null field's null is passed to its parent, which the parent
//! (resolved after its children) turns into its own null. Each event of a
//! subscription is resolved inside its own `execute`, so it gets the same
//! `null`s as a query.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextExecute, NextResolve, ResolveInfo};
use async_graphql::{Response, ServerError, ServerResult, Value};

/// The extension that gives field errors the spec's `null`s.
pub struct NullPropagation;

impl ExtensionFactory for NullPropagation {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(Propagation::default())
    }
}

/// One request's propagation.
#[derive(Default)]
struct Propagation {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Set while a query or mutation executes.
    active: bool,
    /// The errors of fields made `null`, in the order they happened.
    errors: Vec<ServerError>,
    /// Response paths (keys and list indices) whose value must become `null`
    /// because a non-null field under them is; the empty path is `data`.
    nulled: HashSet<Vec<String>>,
}

#[async_graphql::async_trait::async_trait]
impl Extension for Propagation {
    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> Response {
        self.state().active = true;
        let mut response = next.run(ctx, operation_name).await;
        let mut state = self.state();
        state.active = false;
        if state.nulled.remove(&Vec::new()) {
            response.data = Value::Null;
        }
        let mut errors = std::mem::take(&mut state.errors);
        errors.append(&mut response.errors);
        response.errors = errors;
        response
    }

    async fn resolve(
        &self,
        ctx: &ExtensionContext<'_>,
        info: ResolveInfo<'_>,
        next: NextResolve<'_>,
    ) -> ServerResult<Option<Value>> {
        if !self.state().active {
            return next.run(ctx, info).await;
        }
        let path = info.path_node.to_string_vec();
        let ty = info.return_type.to_owned();
        let outcome = next.run(ctx, info).await;
        let mut state = self.state();
        let value = match outcome {
            Err(error) => {
                state.errors.push(error);
                return Ok(Some(state.null(path, &ty)));
            }
            Ok(value) => value,
        };
        if state.nulled.remove(&path) {
            return Ok(Some(state.null(path, &ty)));
        }
        let Some(Value::List(mut items)) = value else { return Ok(value) };
        let items_nullable = item_type(&ty).is_some_and(|item| !item.ends_with('!'));
        for (index, item) in items.iter_mut().enumerate() {
            let mut item_path = path.clone();
            item_path.push(index.to_string());
            if state.nulled.remove(&item_path) {
                if !items_nullable {
                    return Ok(Some(state.null(path, &ty)));
                }
                *item = Value::Null;
            }
        }
        Ok(Some(Value::List(items)))
    }
}

impl Propagation {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl State {
    /// The value of the field at `path` of type `ty` that must be `null`: the
    /// null is its own if it may be null, its parent's otherwise.
    fn null(&mut self, mut path: Vec<String>, ty: &str) -> Value {
        if ty.ends_with('!') {
            path.pop();
            self.nulled.insert(path);
        }
        Value::Null
    }
}

/// The item type of a list type (`[Run!]!` → `Run!`); `None` for other types.
fn item_type(ty: &str) -> Option<&str> {
    ty.strip_suffix('!').unwrap_or(ty).strip_prefix('[')?.strip_suffix(']')
}

#[cfg(test)]
mod tests {
    use super::item_type;

    #[test]
    fn list_item_types_are_read_from_the_type_name() {
        assert_eq!(item_type("[Run!]!"), Some("Run!"));
        assert_eq!(item_type("[Run]"), Some("Run"));
        assert_eq!(item_type("Run!"), None);
    }
}
