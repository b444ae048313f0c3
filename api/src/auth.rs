//! Who may call the API: bearer tokens (stored as SHA-256 digests, shown once),
//! their roles, and what each role may do.
//!
//! | role | may |
//! |---|---|
//! | `viewer` | read applications, environments, runs and logs |
//! | `deployer` | what a viewer may, and deploy, set up, tear down, retry and cancel — on production only when the token was created with `production` |
//! | `auditor` | what a viewer may, and read the whole event history, verify it, see projection status |
//! | `admin` | everything, including applications, templates, variables and tokens |

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use shiplog_engine::notices::{self, Notices};
use shiplog_engine::secret::Secret;
use sqlx::{PgPool, Row};
use uuid::Uuid;

/// What a token's holder is; stored by its lowercase label (`viewer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr, strum::EnumString)]
#[strum(serialize_all = "lowercase")]
pub enum Role {
    Viewer,
    Deployer,
    Admin,
    Auditor,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// What an operation needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Applications, environments, runs, logs.
    Read,
    /// The raw event history, audit verification, projection status.
    Audit,
    /// Runs on environments: deploy, setup, teardown, retry, cancel, create.
    Deploy,
    /// Applications, templates, variables, tokens.
    Admin,
}

/// The caller of one request: the token it presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub token_id: Uuid,
    pub name: String,
    pub role: Role,
    /// May change production environments (admins always may).
    pub production: bool,
}

/// Why a caller may not do something. Sent as the top-level error's `extensions.code`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("authentication required: send `Authorization: Bearer <token>`")]
    Unauthenticated,
    #[error("this token's role ({role}) may not {what}")]
    Forbidden { role: &'static str, what: &'static str },
    #[error("this token may not change production environments; ask an admin for a token with production rights")]
    Production,
}

impl Denied {
    pub fn code(&self) -> &'static str {
        match self {
            Denied::Unauthenticated => "UNAUTHENTICATED",
            Denied::Forbidden { .. } | Denied::Production => "FORBIDDEN",
        }
    }
}

impl Principal {
    /// Checks that the caller may do what needs `permission`; `production` says
    /// whether the operation changes a production environment.
    pub fn may(&self, permission: Permission, production: bool) -> Result<(), Denied> {
        let allowed = match (self.role, permission) {
            (Role::Admin, _) => return Ok(()),
            (_, Permission::Read) => true,
            (Role::Auditor, Permission::Audit) => true,
            (Role::Deployer, Permission::Deploy) => {
                if production && !self.production {
                    return Err(Denied::Production);
                }
                true
            }
            _ => false,
        };
        if allowed {
            Ok(())
        } else {
            let what = match permission {
                Permission::Read => "read",
                Permission::Audit => "read the event history",
                Permission::Deploy => "change environments",
                Permission::Admin => "administer applications and tokens",
            };
            Err(Denied::Forbidden { role: self.role.as_str(), what })
        }
    }

    /// The actor recorded in the metadata of the events this caller causes.
    pub fn actor(&self) -> String {
        format!("token:{}", self.name)
    }
}

/// A token as listed: never its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiToken {
    pub id: Uuid,
    pub name: String,
    pub role: Role,
    pub production: bool,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    pub revoked_at: Option<DateTime<Utc>>,
    pub revoked_by: Option<String>,
}

/// Tokens start with this, so secret scanners (and people) recognise them.
const PREFIX: &str = "shiplog_";

fn digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A token's secret, shown once when it is created.
fn new_secret() -> Secret {
    // Two v4 UUIDs: 244 random bits from the operating system's generator.
    Secret::new(format!("{PREFIX}{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple()))
        .expect("a token starts with its prefix")
}

const COLUMNS: &str = "id, name, role, production, created_at, created_by, revoked_at, revoked_by";

fn token(row: &sqlx::postgres::PgRow) -> sqlx::Result<ApiToken> {
    let role: String = row.try_get("role")?;
    Ok(ApiToken {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        role: role.parse().map_err(|_| sqlx::Error::Decode(format!("unknown role {role:?}").into()))?,
        production: row.try_get("production")?,
        created_at: row.try_get("created_at")?,
        created_by: row.try_get("created_by")?,
        revoked_at: row.try_get("revoked_at")?,
        revoked_by: row.try_get("revoked_by")?,
    })
}

/// The caller a bearer token stands for; `None` for an unknown or revoked token.
pub async fn authenticate(pool: &PgPool, bearer: &str) -> sqlx::Result<Option<Principal>> {
    if !bearer.starts_with(PREFIX) {
        return Ok(None);
    }
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM api_tokens WHERE digest = $1 AND revoked_at IS NULL"
    )))
    .bind(digest(bearer))
    .fetch_optional(pool)
    .await?;
    let token = row.as_ref().map(token).transpose()?;
    Ok(token.map(|t| Principal { token_id: t.id, name: t.name, role: t.role, production: t.production }))
}

/// Creates a token; its secret is returned here and never again.
pub async fn create(
    pool: &PgPool,
    name: &str,
    role: Role,
    production: bool,
    created_by: &str,
) -> sqlx::Result<(ApiToken, Secret)> {
    let secret = new_secret();
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO api_tokens (id, name, role, production, digest, created_by) \
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING {COLUMNS}"
    )))
    .bind(Uuid::new_v4())
    .bind(name)
    .bind(role.as_str())
    .bind(production)
    .bind(digest(secret.expose_secret()))
    .bind(created_by)
    .fetch_one(pool)
    .await?;
    Ok((token(&row)?, secret))
}

/// Revokes a token at once; revoking a revoked token changes nothing. `None`
/// when no such token exists. Every server's [`Revocations`] hears of it when the
/// revocation commits.
pub async fn revoke(pool: &PgPool, id: Uuid, revoked_by: &str) -> sqlx::Result<Option<ApiToken>> {
    let mut tx = pool.begin().await?;
    let revoked = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE api_tokens SET revoked_at = coalesce(revoked_at, now()), revoked_by = coalesce(revoked_by, $2) \
         WHERE id = $1 RETURNING {COLUMNS}"
    )))
    .bind(id)
    .bind(revoked_by)
    .fetch_optional(&mut *tx)
    .await?
    .as_ref()
    .map(token)
    .transpose()?;
    if revoked.is_some() {
        // Delivered to listeners when the transaction commits, never before.
        sqlx::query("SELECT pg_notify($1, $2)").bind(REVOKED_CHANNEL).bind(id.to_string()).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(revoked)
}

/// The channel `revoke` notifies with the revoked token's id.
const REVOKED_CHANNEL: &str = "shiplog_api_token_revoked";

/// Revocations as they commit, from any server on the database: what ends the
/// websockets of a revoked token. A subscriber hears each revoked token's id, or
/// `Notice::Missed` when notices may have been lost: every holder of a token then
/// asks again whether it works. Stops listening when the last clone is dropped.
#[derive(Clone)]
pub struct Revocations(Notices<Uuid>);

impl Revocations {
    /// Starts listening for revocations.
    pub async fn listen(pool: &PgPool) -> sqlx::Result<Revocations> {
        Notices::listen(pool, REVOKED_CHANNEL, 64).await.map(Revocations)
    }

    /// Revocations committed from now on.
    pub fn subscribe(&self) -> notices::Receiver<Uuid> {
        self.0.subscribe()
    }
}

/// One token, revoked or not.
pub async fn find(pool: &PgPool, id: Uuid) -> sqlx::Result<Option<ApiToken>> {
    sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM api_tokens WHERE id = $1")))
        .bind(id)
        .fetch_optional(pool)
        .await?
        .as_ref()
        .map(token)
        .transpose()
}

/// Every token, oldest first.
pub async fn list(pool: &PgPool) -> sqlx::Result<Vec<ApiToken>> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM api_tokens ORDER BY created_at, id")))
        .fetch_all(pool)
        .await?;
    rows.iter().map(token).collect()
}

/// On a database without any token, creates the first admin token and returns
/// its secret; `None` when tokens exist. Safe when several servers start at once:
/// exactly one creates it.
pub async fn bootstrap(pool: &PgPool) -> sqlx::Result<Option<Secret>> {
    let mut tx = pool.begin().await?;
    // A transaction-scoped lock serialises concurrent first starts.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('shiplog api_tokens bootstrap'))").execute(&mut *tx).await?;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM api_tokens)").fetch_one(&mut *tx).await?;
    if exists {
        return Ok(None);
    }
    let secret = new_secret();
    sqlx::query(
        "INSERT INTO api_tokens (id, name, role, production, digest, created_by) \
         VALUES ($1, 'bootstrap', 'admin', true, $2, 'shiplog:bootstrap')",
    )
    .bind(Uuid::new_v4())
    .bind(digest(secret.expose_secret()))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some(secret))
}

/// The token of an `Authorization: Bearer …` header value (or of a websocket's
/// `connection_init` payload field).
pub fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(role: Role, production: bool) -> Principal {
        Principal { token_id: Uuid::nil(), name: "t".into(), role, production }
    }

    #[test]
    fn deployers_need_production_rights_for_production() {
        assert_eq!(principal(Role::Deployer, false).may(Permission::Deploy, false), Ok(()));
        assert_eq!(principal(Role::Deployer, false).may(Permission::Deploy, true), Err(Denied::Production));
        assert_eq!(principal(Role::Deployer, true).may(Permission::Deploy, true), Ok(()));
        assert_eq!(principal(Role::Admin, false).may(Permission::Deploy, true), Ok(()));
    }

    #[test]
    fn auditors_read_history_but_change_nothing() {
        let auditor = principal(Role::Auditor, false);
        assert_eq!(auditor.may(Permission::Audit, false), Ok(()));
        assert!(matches!(auditor.may(Permission::Deploy, false), Err(Denied::Forbidden { .. })));
        assert!(matches!(principal(Role::Viewer, false).may(Permission::Audit, false), Err(Denied::Forbidden { .. })));
    }

    #[test]
    fn bearer_headers_are_parsed() {
        assert_eq!(bearer("Bearer shiplog_x"), Some("shiplog_x"));
        assert_eq!(bearer("bearer  shiplog_x "), Some("shiplog_x"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("shiplog_x"), None);
    }
}
