-- API tokens: the bearer credentials of the GraphQL API.
-- Never edit this file once it has landed; add a new migration instead.
--
-- A token is shown once, when it is created; only its SHA-256 digest is stored,
-- so a leaked database does not leak working credentials. Tokens are not events:
-- they are credentials, not facts about environments. Rows are never deleted; a
-- revoked token keeps its row (who created and revoked it, and when) for audit.
CREATE TABLE api_tokens (
    id          uuid        PRIMARY KEY,
    name        text        NOT NULL,
    -- viewer: read; deployer: read and run (production only with `production`);
    -- admin: everything; auditor: read, the event history and audit verification.
    role        text        NOT NULL CHECK (role IN ('viewer', 'deployer', 'admin', 'auditor')),
    -- May this token change production environments? (admins always may.)
    production  boolean     NOT NULL DEFAULT false,
    -- Lowercase hex SHA-256 of the whole token string.
    digest      text        NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    created_by  text        NOT NULL,
    revoked_at  timestamptz,
    revoked_by  text
);
GRANT SELECT, INSERT, UPDATE ON api_tokens TO shiplog_runtime;
