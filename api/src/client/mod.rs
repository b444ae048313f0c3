//! The client commands of the `shiplog` binary (`apps`, `envs`, `deploy`, `logs`,
//! …): a GraphQL client of a running server, using only the public API and its
//! websocket, as every other frontend does.
//!
//! Owns: the client's connection settings and login file, its output formats and
//! the follow view. Must not: reach the database or the engine directly (a client
//! may run anywhere a server's URL is reachable).
//!
//! Exit status: 0 when the command (or the run it followed) succeeded, 1 when the
//! run failed or the server refused, 2 for usage (bad arguments, no server set).

mod connection;
mod follow;
mod graphql;
mod output;

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::{Value, json};
use shiplog_engine::secret::Secret;

use self::connection::Connection;
use self::follow::RUN_FIELDS;
use self::graphql::Client;
use self::output::{Format, Paint, cell, short_commit, table};

/// What went wrong talking to a server.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no server to talk to: run `shiplog login --url URL`, or set SHIPLOG_URL and SHIPLOG_TOKEN")]
    NotConfigured,
    #[error("`{0}` is not an http:// or https:// URL")]
    BadUrl(String),
    #[error("`{0}` is not APPLICATION/ENVIRONMENT")]
    BadEnvironment(String),
    #[error("the login file {}: {reason}", path.display())]
    ConfigFile { path: PathBuf, reason: String },
    #[error("the CA file {}: {reason}", path.display())]
    CaFile { path: PathBuf, reason: String },
    #[error("cannot reach {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// The server's own words and code (`UNAUTHENTICATED`, `FORBIDDEN`, a user error's code).
    #[error("the server refused: {message} ({code})")]
    Refused { code: String, message: String },
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Unexpected(String),
}

impl ClientError {
    fn exit_code(&self) -> ExitCode {
        match self {
            ClientError::NotConfigured
            | ClientError::BadUrl(_)
            | ClientError::BadEnvironment(_)
            | ClientError::CaFile { .. } => ExitCode::from(2),
            _ => ExitCode::FAILURE,
        }
    }
}

/// The options every client command takes.
#[derive(Args, Debug, Clone)]
pub struct Common {
    /// The server, e.g. `http://127.0.0.1:8080` (default: the one `shiplog login` saved).
    #[arg(long, env = "SHIPLOG_URL")]
    url: Option<String>,
    /// An API token (default: the one `shiplog login` saved). Prefer the
    /// environment variable: an argument is visible to every user of the machine.
    #[arg(long, env = "SHIPLOG_TOKEN", hide_env_values = true)]
    token: Option<Secret>,
    /// CA certificates (PEM) to trust besides the system's, for an https server
    /// whose certificate a private CA issued.
    #[arg(long, env = "SHIPLOG_CA_FILE", value_name = "PEM")]
    ca_file: Option<PathBuf>,
    /// Tables for people, or JSON for scripts.
    #[arg(long, short, value_enum, default_value_t = Format::Table)]
    output: Format,
}

/// An environment, as `APPLICATION/ENVIRONMENT`.
#[derive(Args, Debug, Clone)]
pub struct EnvArg {
    /// `APPLICATION/ENVIRONMENT`, e.g. `hello/staging`.
    #[arg(value_name = "APP/ENV")]
    environment: String,
}

#[derive(Args, Debug, Clone)]
pub struct FollowArg {
    /// Show the run's stages and log until it ends; the exit status is its result.
    #[arg(long, short)]
    follow: bool,
}

/// The client commands.
#[derive(Subcommand, Debug)]
pub enum ClientCommand {
    /// Check a server address and token, and save them for the other commands
    /// (the token from --token, SHIPLOG_TOKEN, or one line on standard input).
    Login(Common),
    /// Applications.
    Apps(Common),
    /// Environments, of every application or of one.
    Envs {
        /// Only this application's.
        application: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// One environment: status, health, drift, commit, last run.
    Env {
        #[command(flatten)]
        env: EnvArg,
        #[command(flatten)]
        common: Common,
    },
    /// Deploy new code to an environment (the head of what it tracks, or --commit).
    Deploy {
        #[command(flatten)]
        env: EnvArg,
        /// The commit to deploy.
        #[arg(long)]
        commit: Option<String>,
        /// Why, for the run's history.
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        follow: FollowArg,
        #[command(flatten)]
        common: Common,
    },
    /// Set an environment up again (after a template change, or to repair drift).
    Setup {
        #[command(flatten)]
        env: EnvArg,
        /// Why, for the run's history.
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        follow: FollowArg,
        #[command(flatten)]
        common: Common,
    },
    /// Tear an environment down.
    Teardown {
        #[command(flatten)]
        env: EnvArg,
        /// Why, for the run's history.
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        follow: FollowArg,
        #[command(flatten)]
        common: Common,
    },
    /// An environment's runs, newest first.
    Runs {
        #[command(flatten)]
        env: EnvArg,
        /// How many (at most 100, the API's page).
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=100))]
        limit: u32,
        #[command(flatten)]
        common: Common,
    },
    /// A run's log (its ID from `shiplog runs`).
    Logs {
        run: String,
        #[command(flatten)]
        follow: FollowArg,
        #[command(flatten)]
        common: Common,
    },
    /// Retry a failed run from its failed stage.
    Retry {
        run: String,
        #[command(flatten)]
        follow: FollowArg,
        #[command(flatten)]
        common: Common,
    },
    /// Cancel a queued or running run.
    Cancel {
        run: String,
        /// Why, for the run's history.
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Environments that drifted from what was deployed, with the reasons.
    Drift(Common),
}

impl ClientCommand {
    /// Runs the command; errors are printed and become the exit status.
    pub async fn run(self) -> ExitCode {
        match self.execute().await {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {e}");
                e.exit_code()
            }
        }
    }

    async fn execute(self) -> Result<ExitCode, ClientError> {
        let file = connection::default_file();
        if let ClientCommand::Login(common) = self {
            return login(common, &file).await;
        }
        let common = self.common().clone();
        let client = Client::new(Connection::resolve(common.url, common.token, &file)?, common.ca_file.as_deref())?;
        let format = common.output;
        match self {
            ClientCommand::Login(_) => unreachable!("handled above"),
            ClientCommand::Apps(_) => apps(&client, format).await,
            ClientCommand::Envs { application, .. } => envs(&client, application, None, format).await,
            ClientCommand::Drift(_) => envs(&client, None, Some("DRIFTED"), format).await,
            ClientCommand::Env { env, .. } => show_env(&client, &env.environment, format).await,
            ClientCommand::Runs { env, limit, .. } => runs(&client, &env.environment, limit, format).await,
            ClientCommand::Deploy { env, commit, reason, follow, .. } => {
                let id = environment_id(&client, &env.environment).await?;
                let input = json!({ "environmentId": id, "commit": commit, "reason": reason });
                request_run(&client, "environmentDeploy", "EnvironmentDeployInput", input, follow.follow, format).await
            }
            ClientCommand::Setup { env, reason, follow, .. } => {
                let id = environment_id(&client, &env.environment).await?;
                let input = json!({ "environmentId": id, "reason": reason });
                request_run(&client, "environmentSetup", "EnvironmentSetupInput", input, follow.follow, format).await
            }
            ClientCommand::Teardown { env, reason, follow, .. } => {
                let id = environment_id(&client, &env.environment).await?;
                let input = json!({ "environmentId": id, "reason": reason });
                request_run(&client, "environmentTeardown", "EnvironmentTeardownInput", input, follow.follow, format)
                    .await
            }
            ClientCommand::Retry { run, follow, .. } => {
                let input = json!({ "runId": run });
                request_run(&client, "runRetry", "RunRetryInput", input, follow.follow, format).await
            }
            ClientCommand::Cancel { run, reason, .. } => {
                let input = json!({ "runId": run, "reason": reason });
                request_run(&client, "runCancel", "RunCancelInput", input, false, format).await
            }
            ClientCommand::Logs { run, follow, .. } if follow.follow => {
                follow::logs(&client, &run, format).await?;
                Ok(ExitCode::SUCCESS)
            }
            ClientCommand::Logs { run, .. } => logs(&client, &run, format).await,
        }
    }

    fn common(&self) -> &Common {
        match self {
            ClientCommand::Login(common) | ClientCommand::Apps(common) | ClientCommand::Drift(common) => common,
            ClientCommand::Envs { common, .. }
            | ClientCommand::Env { common, .. }
            | ClientCommand::Deploy { common, .. }
            | ClientCommand::Setup { common, .. }
            | ClientCommand::Teardown { common, .. }
            | ClientCommand::Runs { common, .. }
            | ClientCommand::Logs { common, .. }
            | ClientCommand::Retry { common, .. }
            | ClientCommand::Cancel { common, .. } => common,
        }
    }
}

async fn login(common: Common, file: &std::path::Path) -> Result<ExitCode, ClientError> {
    let url = common.url.ok_or(ClientError::NotConfigured)?;
    let token = match common.token {
        Some(token) => token,
        None => {
            eprintln!("token (one line):");
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .map_err(|e| ClientError::Unexpected(format!("reading the token from standard input: {e}")))?;
            Secret::new(line.trim().to_owned()).ok_or(ClientError::NotConfigured)?
        }
    };
    let connection = Connection::resolve(Some(url), Some(token), file)?;
    let client = Client::new(connection.clone(), common.ca_file.as_deref())?;
    // Saved only once the server has accepted the token.
    let viewer: Value = client.execute("{ viewer { name role production } }", json!({})).await?;
    connection.save(file)?;
    let viewer = &viewer["viewer"];
    let production = if viewer["production"] == true { ", with production rights" } else { "" };
    println!("logged in to {} as {} ({}{production})", connection.url, cell(&viewer["name"]), cell(&viewer["role"]));
    Ok(ExitCode::SUCCESS)
}

/// Every node of a connection, page by page.
async fn all_nodes(client: &Client, query: &str, variables: Value, path: &[&str]) -> Result<Vec<Value>, ClientError> {
    let mut nodes = Vec::new();
    let mut after = Value::Null;
    loop {
        let mut variables = variables.clone();
        variables["after"] = after;
        let data: Value = client.execute(query, variables).await?;
        let connection = path.iter().fold(&data, |value, key| &value[*key]);
        nodes.extend(connection["nodes"].as_array().cloned().unwrap_or_default());
        if connection["pageInfo"]["hasNextPage"] != true {
            return Ok(nodes);
        }
        after = connection["pageInfo"]["endCursor"].clone();
    }
}

/// A list as JSON, or as a table of the rows `row` makes of its items.
fn print_list(
    format: Format,
    items: Vec<Value>,
    headers: &[&str],
    row: impl Fn(&Value, Paint) -> Vec<String>,
) -> ExitCode {
    match format {
        Format::Json => print_json(&Value::Array(items)),
        Format::Table => {
            let paint = Paint::for_stream(&std::io::stdout());
            let rows: Vec<Vec<String>> = items.iter().map(|item| row(item, paint)).collect();
            print!("{}", table(headers, &rows));
        }
    }
    ExitCode::SUCCESS
}

fn print_json(value: &Value) {
    println!("{}", serde_json::to_string_pretty(value).expect("JSON serialises"));
}

async fn apps(client: &Client, format: Format) -> Result<ExitCode, ClientError> {
    let query = "query($after: String) { applications(first: 50, after: $after) {
        nodes { id name repository templateVersion createdAt } pageInfo { hasNextPage endCursor } } }";
    let apps = all_nodes(client, query, json!({}), &["applications"]).await?;
    Ok(print_list(format, apps, &["NAME", "TEMPLATE", "REPOSITORY"], |a, _| {
        vec![cell(&a["name"]), cell(&a["templateVersion"]), cell(&a["repository"])]
    }))
}

const ENVIRONMENT_FIELDS: &str = "id name application { name } kind status health syncStatus syncReasons
    drift { verdict reasons since } trackingBranch commit expiresAt lastRun { id kind status finishedAt }";

async fn envs(
    client: &Client,
    application: Option<String>,
    drift: Option<&str>,
    format: Format,
) -> Result<ExitCode, ClientError> {
    let query = format!(
        "query($after: String, $filter: EnvironmentFilter) {{ environments(first: 50, after: $after, filter: $filter) {{
        nodes {{ {ENVIRONMENT_FIELDS} }} pageInfo {{ hasNextPage endCursor }} }} }}"
    );
    let filter = json!({ "application": application, "drift": drift });
    let envs = all_nodes(client, &query, json!({ "filter": filter }), &["environments"]).await?;
    let last = if drift.is_some() { "REASONS" } else { "LAST RUN" };
    let headers = ["ENVIRONMENT", "KIND", "STATUS", "HEALTH", "DRIFT", "COMMIT", last];
    Ok(print_list(format, envs, &headers, |e, paint| {
        let mut row = vec![
            format!("{}/{}", cell(&e["application"]["name"]), cell(&e["name"])),
            cell(&e["kind"]),
            paint.status(&cell(&e["status"])),
            paint.status(&cell(&e["health"])),
            paint.status(&cell(&e["drift"]["verdict"])),
            short_commit(&e["commit"]),
        ];
        row.push(match drift {
            Some(_) => e["drift"]["reasons"].as_array().map(|r| join(r, "; ")).unwrap_or_default(),
            None => match &e["lastRun"] {
                Value::Null => "-".into(),
                run => format!("{} {}", cell(&run["kind"]), paint.status(&cell(&run["status"]))),
            },
        });
        row
    }))
}

fn join(values: &[Value], separator: &str) -> String {
    values.iter().map(cell).collect::<Vec<_>>().join(separator)
}

/// `APP/ENV` split in two.
fn split_environment(name: &str) -> Result<(&str, &str), ClientError> {
    match name.split_once('/') {
        Some((app, env)) if !app.is_empty() && !env.is_empty() && !env.contains('/') => Ok((app, env)),
        _ => Err(ClientError::BadEnvironment(name.to_owned())),
    }
}

async fn environment(client: &Client, name: &str, fields: &str) -> Result<Value, ClientError> {
    let (app, env) = split_environment(name)?;
    let query =
        format!("query($app: String!, $env: String!) {{ environment(application: $app, name: $env) {{ {fields} }} }}");
    let data: Value = client.execute(&query, json!({ "app": app, "env": env })).await?;
    match &data["environment"] {
        Value::Null => Err(ClientError::NotFound(format!("environment {name}"))),
        found => Ok(found.clone()),
    }
}

async fn environment_id(client: &Client, name: &str) -> Result<Value, ClientError> {
    Ok(environment(client, name, "id").await?["id"].clone())
}

async fn show_env(client: &Client, name: &str, format: Format) -> Result<ExitCode, ClientError> {
    let env = environment(client, name, ENVIRONMENT_FIELDS).await?;
    if format == Format::Json {
        print_json(&env);
        return Ok(ExitCode::SUCCESS);
    }
    let paint = Paint::for_stream(&std::io::stdout());
    let run = &env["lastRun"];
    let fields = [
        ("environment", name.to_owned()),
        ("kind", cell(&env["kind"])),
        ("status", paint.status(&cell(&env["status"]))),
        ("health", paint.status(&cell(&env["health"]))),
        ("sync", format!("{} {}", paint.status(&cell(&env["syncStatus"])), join_array(&env["syncReasons"]))),
        (
            "drift",
            format!("{} {}", paint.status(&cell(&env["drift"]["verdict"])), join_array(&env["drift"]["reasons"])),
        ),
        ("tracking", cell(&env["trackingBranch"])),
        ("commit", cell(&env["commit"])),
        ("expires", cell(&env["expiresAt"])),
        (
            "last run",
            match run {
                Value::Null => "-".into(),
                run => format!("{} {} {}", cell(&run["kind"]), paint.status(&cell(&run["status"])), cell(&run["id"])),
            },
        ),
    ];
    for (label, value) in fields {
        println!("{:<12}{}", format!("{label}:"), value.trim_end());
    }
    Ok(ExitCode::SUCCESS)
}

fn join_array(value: &Value) -> String {
    value.as_array().map(|values| join(values, "; ")).unwrap_or_default()
}

async fn runs(client: &Client, name: &str, limit: u32, format: Format) -> Result<ExitCode, ClientError> {
    let fields = format!("runs(first: {limit}) {{ nodes {{ {RUN_FIELDS} }} }}");
    let env = environment(client, name, &fields).await?;
    let runs = env["runs"]["nodes"].as_array().cloned().unwrap_or_default();
    let headers = ["RUN", "KIND", "STATUS", "COMMIT", "QUEUED", "TOOK", "BY", "REASON"];
    Ok(print_list(format, runs, &headers, |r, paint| {
        vec![
            cell(&r["id"]),
            cell(&r["kind"]),
            paint.status(&cell(&r["status"])),
            short_commit(&r["commit"]),
            cell(&r["queuedAt"]),
            output::duration(&r["durationMs"]),
            cell(&r["triggeredBy"]),
            cell(&r["reason"]),
        ]
    }))
}

/// Requests a run with `mutation`, prints it (or follows it), and returns the
/// exit status: the run's result when followed.
async fn request_run(
    client: &Client,
    mutation: &str,
    input_type: &str,
    input: Value,
    follow: bool,
    format: Format,
) -> Result<ExitCode, ClientError> {
    let query = format!(
        "mutation($input: {input_type}!) {{ {mutation}(input: $input) {{ run {{ {RUN_FIELDS} }}
        userErrors {{ field message code }} }} }}"
    );
    let data: Value = client.execute(&query, json!({ "input": input })).await?;
    let payload = &data[mutation];
    if let Some(error) = payload["userErrors"].as_array().and_then(|errors| errors.first()) {
        let field = error["field"].as_array().map(|f| join(f, ".")).unwrap_or_default();
        let message =
            if field.is_empty() { cell(&error["message"]) } else { format!("{field}: {}", cell(&error["message"])) };
        return Err(ClientError::Refused { code: cell(&error["code"]), message });
    }
    let run = &payload["run"];
    let id = run["id"].as_str().ok_or_else(|| ClientError::Unexpected(format!("{mutation} returned no run")))?;
    if !follow {
        match format {
            Format::Json => print_json(run),
            Format::Table => println!("{} run {} {}", cell(&run["kind"]), id, cell(&run["status"])),
        }
        return Ok(ExitCode::SUCCESS);
    }
    if format == Format::Table {
        eprintln!("{} run {id} requested; following it (Ctrl-C stops following, not the run)", cell(&run["kind"]));
    }
    let last = follow::run(client, id, format).await?;
    if format == Format::Json {
        print_json(&last);
    }
    Ok(if last["status"] == "SUCCEEDED" { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

async fn logs(client: &Client, run_id: &str, format: Format) -> Result<ExitCode, ClientError> {
    let query = "query($id: ID!, $after: String) { node(id: $id) { ... on Run {
        logs(first: 100, after: $after) { nodes { cursor number job stream text } pageInfo { hasNextPage endCursor } } } } }";
    let data: Value =
        client.execute("query($id: ID!) { node(id: $id) { __typename } }", json!({ "id": run_id })).await?;
    if data["node"]["__typename"] != "Run" {
        return Err(ClientError::NotFound(format!("run {run_id}")));
    }
    let lines = all_nodes(client, query, json!({ "id": run_id }), &["node", "logs"]).await?;
    match format {
        Format::Json => print_json(&Value::Array(lines)),
        Format::Table => follow::LogPrinter::new(format).print(&lines),
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_environment_is_application_slash_name() {
        assert_eq!(split_environment("hello/staging").unwrap(), ("hello", "staging"));
        for bad in ["hello", "/staging", "hello/", "a/b/c"] {
            assert_eq!(
                split_environment(bad).unwrap_err().to_string(),
                format!("`{bad}` is not APPLICATION/ENVIRONMENT")
            );
        }
    }
}
