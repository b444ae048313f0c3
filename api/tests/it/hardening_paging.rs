//! Issue 17, defects 2 and 9: every connection of the schema lists its nodes in
//! the documented order, paging forwards (`first`/`after`) and, where offered,
//! backwards (`last`/`before`) reaches every node exactly once whatever the page
//! sizes, and a cursor is only taken by the list that issued it.

use serde_json::{Value, json};
use shiplog_engine::runtime::{LogSink, LogStream};
use shiplog_tests::example::ExampleRepo;

use crate::app::{PATIENCE, TestApp};
use crate::graphql::{APPLICATION_CREATE, ENVIRONMENT_CREATE, ENVIRONMENT_SETUP, TEMPLATE_UPDATE};
use crate::hardening::refusal;

/// A small deterministic generator (xorshift64*), so a failure names its seed
/// and can be replayed.
struct Seeded(u64);

impl Seeded {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

/// One connection of the schema: the query that pages it (taking `$first`,
/// `$after` and, when it pages backwards, `$last` and `$before`), where the
/// connection is in `data`, and what names a node.
struct Connection {
    name: &'static str,
    query: String,
    at: &'static [&'static str],
    backwards: bool,
    node: fn(&Value) -> String,
}

const PAGE_INFO: &str = "pageInfo { hasNextPage hasPreviousPage startCursor endCursor }";

fn name(node: &Value) -> String {
    node["name"].as_str().unwrap().to_owned()
}

fn environment_key(node: &Value) -> String {
    format!("{}/{}", node["application"]["name"].as_str().unwrap(), node["name"].as_str().unwrap())
}

fn id(node: &Value) -> String {
    node["id"].as_str().unwrap().to_owned()
}

fn number(node: &Value) -> String {
    node["number"].as_str().unwrap().to_owned()
}

fn tag(node: &Value) -> String {
    node["tag"].as_str().unwrap().to_owned()
}

fn position(node: &Value) -> String {
    node["position"].as_str().unwrap().to_owned()
}

fn version(node: &Value) -> String {
    node["version"].as_str().unwrap().to_owned()
}

/// The query of a connection at `field` (with the arguments before it) selecting `node`.
fn paged(outer: &str, field: &str, node: &str, backwards: bool) -> String {
    let (vars, args) = if backwards {
        (
            "$first: Int, $after: String, $last: Int, $before: String",
            "first: $first, after: $after, last: $last, before: $before",
        )
    } else {
        ("$first: Int, $after: String", "first: $first, after: $after")
    };
    let inner = format!("{field}({args}) {{ {PAGE_INFO} edges {{ cursor node {{ {node} }} }} }}");
    let body = outer.replace("CONNECTION", &inner);
    format!("query({vars}) {{ {body} }}")
}

/// Walks `connection` with pages of `size` in one direction; the nodes in the
/// list's order. Panics on a page that breaks the Relay conventions.
async fn walk(app: &TestApp, connection: &Connection, size: i64, backwards: bool, total: usize) -> Vec<String> {
    let mut nodes = Vec::new();
    let mut cursor: Option<Value> = None;
    for _ in 0..=total + 1 {
        let variables = if backwards {
            json!({ "last": size, "before": cursor })
        } else {
            json!({ "first": size, "after": cursor })
        };
        let data = app.data(&app.admin, &connection.query, variables).await;
        let mut page = &data;
        for step in connection.at {
            page = &page[step];
        }
        let edges = page["edges"].as_array().unwrap_or_else(|| panic!("{}: {data:#}", connection.name));
        assert!(edges.len() <= size as usize, "{}: a page larger than asked: {data:#}", connection.name);
        let mut names: Vec<String> = edges.iter().map(|e| (connection.node)(&e["node"])).collect();
        let info = &page["pageInfo"];
        if let (Some(first), Some(last)) = (edges.first(), edges.last()) {
            assert_eq!(info["startCursor"], first["cursor"], "{}", connection.name);
            assert_eq!(info["endCursor"], last["cursor"], "{}", connection.name);
        }
        let more = if backwards {
            names.extend(nodes);
            nodes = names;
            cursor = Some(info["startCursor"].clone());
            info["hasPreviousPage"] == true
        } else {
            nodes.extend(names);
            cursor = Some(info["endCursor"].clone());
            info["hasNextPage"] == true
        };
        if !more {
            return nodes;
        }
        assert!(!edges.is_empty(), "{}: an empty page that says more follow", connection.name);
    }
    panic!("{}: paging with {size} never ended; reached {nodes:?}", connection.name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_connection_pages_forwards_and_backwards_through_every_node_once_in_its_order() {
    let app = TestApp::start().await;
    let repo = ExampleRepo::create(&app.scratch);

    // Names whose bytewise order differs from a naive one: `-` sorts before `/`,
    // so a key `a-b/x` compared as text would come before `a/x`.
    let mut application_ids = Vec::new();
    for application in ["a", "a-b", "ab", "a0", "b"] {
        let created = app
            .data(&app.admin, APPLICATION_CREATE, json!({ "input": { "name": application, "repository": repo.dir } }))
            .await;
        let app_id = created["applicationCreate"]["application"]["id"].clone();
        let input = json!({ "applicationId": app_id, "template": repo.template() });
        app.data(&app.admin, TEMPLATE_UPDATE, json!({ "input": input })).await;
        application_ids.push(app_id);
        // The first run of `a/x` is queued early, at a one-digit position, the
        // later ones at two-digit positions: sorted as text, they would interleave.
        if application == "a" {
            let input =
                json!({ "applicationId": application_ids[0], "name": "x", "kind": "STAGING", "branch": "main" });
            app.data(&app.admin, ENVIRONMENT_CREATE, json!({ "input": input })).await;
        }
    }
    for (app_id, env) in [(0, "x-y"), (0, "x1"), (1, "x"), (1, "y"), (3, "x"), (4, "z")] {
        let input = json!({ "applicationId": application_ids[app_id], "name": env, "kind": "PREVIEW", "branch": "main", "setup": false });
        app.data(&app.admin, ENVIRONMENT_CREATE, json!({ "input": input })).await;
    }
    let environment =
        app.data(&app.admin, "{ environment(application: \"a\", name: \"x\") { id lastRun { id } } }", json!({})).await;
    let env_id = environment["environment"]["id"].clone();
    let mut runs = vec![id(&environment["environment"]["lastRun"])];
    for i in 0..9 {
        let input = json!({ "environmentId": env_id, "reason": format!("setup {i}") });
        let set_up = app.data(&app.admin, ENVIRONMENT_SETUP, json!({ "input": input })).await;
        assert_eq!(set_up["environmentSetup"]["userErrors"], json!([]), "{set_up:#}");
        runs.push(id(&set_up["environmentSetup"]["run"]));
    }
    // Releases of `a`, newest first; tags that are not CalVer are recorded as
    // rejected releases, which is all a list needs.
    shiplog_tests::example::git(&repo.dir, &["branch", "production"]);
    let mut releases = Vec::new();
    for tag in ["r1", "r2", "r3", "r4", "r5"] {
        let input = json!({ "applicationId": application_ids[0], "tag": tag, "components": [] });
        let created = app
            .data(&app.admin, "mutation($input: ReleaseCreateInput!) { releaseCreate(input: $input) { release { tag status } userErrors { message } } }", json!({ "input": input }))
            .await;
        assert_eq!(created["releaseCreate"]["release"]["status"], "REJECTED", "{created:#}");
        releases.insert(0, tag.to_owned());
    }
    // A log written as a worker writes it, through the engine's log writer.
    let first_run = match shiplog_tests_node_id(&runs[0]) {
        Some(run) => run,
        None => panic!("not a run ID: {}", runs[0]),
    };
    let log = shiplog_engine::logs::RunLog::open(app.db.runtime.clone(), first_run, vec![]).await.unwrap();
    let job = log.job("build");
    for line in 0..23 {
        job.line(LogStream::Stdout, &format!("line {line}"));
    }
    log.flush().await;
    shiplog_tests::eventually("every projection caught up", PATIENCE, || async {
        let data = app.data(&app.admin, "{ projections { lagEvents } }", json!({})).await;
        data["projections"].as_array().unwrap().iter().all(|p| p["lagEvents"] == "0").then_some(())
    })
    .await;

    // What each list must hold, in its documented order.
    let applications: Vec<String> = ["a", "a-b", "a0", "ab", "b"].map(String::from).to_vec();
    let environments: Vec<String> =
        ["a/x", "a/x-y", "a/x1", "a-b/x", "a-b/y", "a0/x", "b/z"].map(String::from).to_vec();
    let newest_first: Vec<String> = runs.iter().rev().cloned().collect();
    let lines: Vec<String> = (1..=23).map(|n: i64| n.to_string()).collect();
    let all_events: Vec<String> =
        sqlx::query_scalar::<_, i64>("SELECT global_position FROM events ORDER BY tx_id, global_position")
            .fetch_all(&app.db.runtime)
            .await
            .unwrap()
            .into_iter()
            .map(|p| p.to_string())
            .collect();
    let versions: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE stream_id = 'environment-a.x'")
        .fetch_one(&app.db.runtime)
        .await
        .unwrap();
    let versions: Vec<String> = (1..=versions).map(|v| v.to_string()).collect();
    let run_query = format!("run: node(id: \"{}\") {{ ... on Run {{ CONNECTION }} }}", runs[0]);
    let env_query = "environment(application: \"a\", name: \"x\") { CONNECTION }";
    let connections = [
        (
            Connection {
                name: "applications",
                query: paged("CONNECTION", "applications", "name", true),
                at: &["applications"],
                backwards: true,
                node: name,
            },
            applications,
        ),
        (
            Connection {
                name: "environments",
                query: paged("CONNECTION", "environments", "name application { name }", true),
                at: &["environments"],
                backwards: true,
                node: environment_key,
            },
            environments.clone(),
        ),
        (
            Connection {
                name: "Application.environments",
                query: paged(
                    "application(name: \"a\") { CONNECTION }",
                    "environments",
                    "name application { name }",
                    true,
                ),
                at: &["application", "environments"],
                backwards: true,
                node: environment_key,
            },
            environments[..3].to_vec(),
        ),
        (
            Connection {
                name: "Environment.runs",
                query: paged(env_query, "runs", "id", true),
                at: &["environment", "runs"],
                backwards: true,
                node: id,
            },
            newest_first,
        ),
        (
            Connection {
                name: "Environment.events",
                query: paged(env_query, "events", "version", false),
                at: &["environment", "events"],
                backwards: false,
                node: version,
            },
            versions,
        ),
        (
            Connection {
                name: "events",
                query: paged("CONNECTION", "events", "position", false),
                at: &["events"],
                backwards: false,
                node: position,
            },
            all_events,
        ),
        (
            Connection {
                name: "Application.releases",
                query: paged("application(name: \"a\") { CONNECTION }", "releases", "tag", true),
                at: &["application", "releases"],
                backwards: true,
                node: tag,
            },
            releases,
        ),
        (
            Connection {
                name: "Run.logs",
                query: paged(&run_query, "logs", "number", false),
                at: &["run", "logs"],
                backwards: false,
                node: number,
            },
            lines,
        ),
    ];
    // Every connection the schema has is walked here: a new one must be added.
    let sdl = shiplog::graphql::sdl();
    let in_schema = sdl.lines().filter(|l| l.contains("Connection!")).count();
    assert_eq!(in_schema, connections.len(), "a connection of the schema is not walked here:\n{sdl}");

    let seed = 17;
    let mut random = Seeded(seed);
    for (connection, expected) in &connections {
        let mut sizes: Vec<i64> = vec![1, expected.len() as i64, expected.len() as i64 + 1];
        sizes.extend((0..6).map(|_| 1 + random.below(expected.len() as u64 + 2) as i64));
        for size in sizes {
            let forwards = walk(&app, connection, size, false, expected.len()).await;
            assert_eq!(&forwards, expected, "{} forwards, pages of {size} (seed {seed})", connection.name);
            if connection.backwards {
                let backwards = walk(&app, connection, size, true, expected.len()).await;
                assert_eq!(&backwards, expected, "{} backwards, pages of {size} (seed {seed})", connection.name);
            }
        }
    }
}

/// The run a global ID names.
fn shiplog_tests_node_id(id: &str) -> Option<uuid::Uuid> {
    use base64::Engine;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(id).ok()?;
    String::from_utf8(raw).ok()?.strip_prefix("Run:")?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_is_taken_only_by_the_list_that_issued_it_and_page_sizes_are_checked() {
    let app = TestApp::start().await;
    let repo = ExampleRepo::create(&app.scratch);
    let created =
        app.data(&app.admin, APPLICATION_CREATE, json!({ "input": { "name": "a", "repository": repo.dir } })).await;
    let app_id = created["applicationCreate"]["application"]["id"].clone();
    app.data(&app.admin, TEMPLATE_UPDATE, json!({ "input": { "applicationId": app_id, "template": repo.template() } }))
        .await;
    let input = json!({ "applicationId": app_id, "name": "x", "kind": "STAGING", "branch": "main" });
    let created = app.data(&app.admin, ENVIRONMENT_CREATE, json!({ "input": input })).await;
    let first_run = created["environmentCreate"]["run"]["id"].as_str().unwrap().to_owned();
    let input = json!({ "environmentId": created["environmentCreate"]["environment"]["id"], "reason": "again" });
    let set_up = app.data(&app.admin, ENVIRONMENT_SETUP, json!({ "input": input })).await;
    let second_run = set_up["environmentSetup"]["run"]["id"].as_str().unwrap().to_owned();
    let log =
        shiplog_engine::logs::RunLog::open(app.db.runtime.clone(), shiplog_tests_node_id(&first_run).unwrap(), vec![])
            .await
            .unwrap();
    log.job("build").line(LogStream::Stdout, "built");
    log.flush().await;
    let environments = shiplog_tests::eventually("the environment listed", PATIENCE, || async {
        let data = app.data(&app.admin, "{ environments { edges { cursor } } }", json!({})).await;
        let edges = data["environments"]["edges"].as_array().unwrap().clone();
        (!edges.is_empty()).then_some(edges)
    })
    .await;
    let not_this_list = ("BAD_USER_INPUT".to_owned(), "`after` is not a cursor of this list".to_owned());

    // A log line's cursor of one run, given to another run's log.
    let logs =
        "query($id: ID!, $after: String) { node(id: $id) { ... on Run { logs(after: $after) { edges { cursor } } } } }";
    let data = app.data(&app.admin, logs, json!({ "id": first_run })).await;
    let line_cursor = data["node"]["logs"]["edges"][0]["cursor"].clone();
    let body = app.graphql(&app.admin, logs, json!({ "id": second_run, "after": line_cursor })).await;
    assert_eq!(refusal(&body), not_this_list);
    let same = app.data(&app.admin, logs, json!({ "id": first_run, "after": line_cursor })).await;
    assert_eq!(same["node"]["logs"]["edges"], json!([]), "its own run takes it");

    // An environments cursor given to runs.
    let runs =
        "query($after: String) { environment(application: \"a\", name: \"x\") { runs(after: $after) { totalCount } } }";
    let body = app.graphql(&app.admin, runs, json!({ "after": environments[0]["cursor"] })).await;
    assert_eq!(refusal(&body), not_this_list);

    // A page size out of range is the caller's mistake, not a complex query.
    for (size, message) in
        [(-1, "`first` must be between 0 and 100, not -1"), (101, "`first` must be between 0 and 100, not 101")]
    {
        let body = app
            .graphql(&app.admin, "query($n: Int) { applications(first: $n) { totalCount } }", json!({ "n": size }))
            .await;
        assert_eq!(refusal(&body), ("BAD_USER_INPUT".to_owned(), message.to_owned()));
    }
    let body = app.graphql(&app.admin, "{ environments(last: -5) { totalCount } }", json!({})).await;
    assert_eq!(refusal(&body), ("BAD_USER_INPUT".to_owned(), "`last` must be between 0 and 100, not -5".to_owned()));
}
