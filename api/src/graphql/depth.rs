//! The depth limit: how deeply a request's selections may nest, checked once the
//! document is parsed and before anything runs.
//!
//! One rule differs from counting every field: inside introspection (`__schema`,
//! `__type`), `ofType` does not deepen a selection. A type reference is a chain
//! of wrappers (`[Run!]!` is three links) that ends at a named type, so nesting
//! `ofType` costs one object per link, never a fan-out; the complexity limit
//! still counts every one of them. The standard introspection query of
//! graphql-js and graphql-core nests `ofType` seven times, which GraphiQL, Apollo
//! and code generators send, and would otherwise exceed the default limit.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextParseQuery};
use async_graphql::parser::types::{ExecutableDocument, FragmentDefinition, Selection, SelectionSet};
use async_graphql::{Name, Positioned, ServerError, ServerResult, Variables};

/// What a request nested deeper than the limit gets.
pub const TOO_DEEP: &str = "Query is nested too deep.";

/// The extension that refuses a request nested deeper than its limit.
pub struct DepthLimit(pub usize);

impl ExtensionFactory for DepthLimit {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(DepthLimit(self.0))
    }
}

#[async_graphql::async_trait::async_trait]
impl Extension for DepthLimit {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let document = next.run(ctx, query, variables).await?;
        let deepest = document.operations.iter().map(|(_, op)| depth(&document, &op.node.selection_set)).max();
        if deepest.unwrap_or(0) > self.0 {
            return Err(ServerError::new(TOO_DEEP, None));
        }
        Ok(document)
    }
}

/// How deeply `set` nests, fragments counted where they are spread.
pub fn depth(document: &ExecutableDocument, set: &Positioned<SelectionSet>) -> usize {
    Walk { fragments: &document.fragments, known: HashMap::new(), open: Vec::new() }.set(set, false)
}

/// One walk of a document. Each fragment's depth is computed once per context
/// (so fragments spreading fragments cannot make the walk exponential), and a
/// fragment spread inside itself counts nothing: validation refuses the cycle.
struct Walk<'a> {
    fragments: &'a HashMap<Name, Positioned<FragmentDefinition>>,
    known: HashMap<(&'a str, bool), usize>,
    open: Vec<&'a str>,
}

impl<'a> Walk<'a> {
    fn set(&mut self, set: &'a Positioned<SelectionSet>, introspection: bool) -> usize {
        let mut deepest = 0;
        for item in &set.node.items {
            let depth = match &item.node {
                Selection::Field(field) => {
                    let name = field.node.name.node.as_str();
                    let inner = introspection || name == "__schema" || name == "__type";
                    let own = usize::from(!(introspection && name == "ofType"));
                    own + self.set(&field.node.selection_set, inner)
                }
                Selection::InlineFragment(inline) => self.set(&inline.node.selection_set, introspection),
                Selection::FragmentSpread(spread) => {
                    self.fragment(spread.node.fragment_name.node.as_str(), introspection)
                }
            };
            deepest = deepest.max(depth);
        }
        deepest
    }

    fn fragment(&mut self, name: &'a str, introspection: bool) -> usize {
        if let Some(depth) = self.known.get(&(name, introspection)) {
            return *depth;
        }
        let Some(fragment) = self.fragments.get(name) else { return 0 };
        if self.open.contains(&name) {
            return 0;
        }
        self.open.push(name);
        let depth = self.set(&fragment.node.selection_set, introspection);
        self.open.pop();
        self.known.insert((name, introspection), depth);
        depth
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deepest(query: &str) -> usize {
        let document = async_graphql::parser::parse_query(query).unwrap();
        document.operations.iter().map(|(_, op)| depth(&document, &op.node.selection_set)).max().unwrap()
    }

    #[test]
    fn fields_nest_fragments_count_where_spread_and_of_type_is_free_only_in_introspection() {
        assert_eq!(deepest("{ a { b { c } } }"), 3);
        assert_eq!(deepest("{ a { ...F } } fragment F on T { b { c } }"), 3);
        assert_eq!(deepest("{ a { ... on T { b } } }"), 2);
        assert_eq!(deepest("{ __type(name: \"Run\") { ofType { ofType { ofType { name } } } } }"), 2);
        assert_eq!(deepest("{ a { ofType { ofType { name } } } }"), 4);
        // Fields under introspection still nest.
        assert_eq!(deepest("{ __schema { types { fields { type { fields { name } } } } } }"), 6);
        // A cycle ends (validation refuses it), and a fragment spread many times
        // is walked once.
        assert_eq!(deepest("{ ...A } fragment A on Query { a { ...A } }"), 1);
        assert_eq!(
            deepest("{ ...A } fragment A on Q { ...B ...B } fragment B on Q { ...C ...C } fragment C on Q { x }"),
            1
        );
    }
}
