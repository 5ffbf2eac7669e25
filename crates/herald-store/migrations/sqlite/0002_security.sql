-- Security and audit (issue 5): who owns each subscription, access revocations, and the audit trail.

-- The grant a subscription was created (or last updated) under, as JSON; delivery re-checks it
-- before every send. `owner_client` is kept apart for the per-client subscription limit.
ALTER TABLE subscriptions ADD COLUMN owner TEXT;
ALTER TABLE subscriptions ADD COLUMN owner_client TEXT;
CREATE INDEX subscriptions_owner_client ON subscriptions (tenant, owner_client);

-- Clients and tokens (by `jti`) whose access an administrator revoked.
CREATE TABLE access_revocations (
    tenant      TEXT NOT NULL,
    kind        TEXT NOT NULL,
    value       TEXT NOT NULL,
    reason      TEXT,
    revoked_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant, kind, value)
);

-- Append-only audit trail, served as FHIR AuditEvent resources.
CREATE TABLE audit_events (
    tenant          TEXT NOT NULL,
    id              TEXT NOT NULL,
    recorded_at     BIGINT NOT NULL,
    kind            TEXT NOT NULL,
    action          TEXT NOT NULL,
    outcome         TEXT NOT NULL,
    agent_client    TEXT,
    agent_subject   TEXT,
    entity          TEXT,
    detail          TEXT,
    PRIMARY KEY (tenant, id)
);
CREATE INDEX audit_events_recorded ON audit_events (tenant, recorded_at);
CREATE INDEX audit_events_entity ON audit_events (tenant, entity, recorded_at);
