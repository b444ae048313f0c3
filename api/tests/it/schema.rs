//! `schema.graphql` is generated from code; this fails when the committed file is
//! stale. Regenerate with `UPDATE_SCHEMA=1 cargo test -p shiplog --test it schema`.

#[test]
fn schema_graphql_is_current() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../schema.graphql");
    let generated = shiplog::graphql::sdl();
    if std::env::var_os("UPDATE_SCHEMA").is_some() {
        std::fs::write(path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed == generated,
        "schema.graphql is stale; run `UPDATE_SCHEMA=1 cargo test -p shiplog --test it schema` and commit it"
    );
}
