-- Herald schema. Times are Unix epoch milliseconds so the same SQL runs on SQLite and PostgreSQL.

CREATE TABLE subscriptions (
    tenant              TEXT NOT NULL,
    id                  TEXT NOT NULL,
    version_id          BIGINT NOT NULL,
    resource            TEXT NOT NULL,
    status              TEXT NOT NULL,
    error               TEXT,
    criteria            TEXT NOT NULL,
    channel_type        TEXT NOT NULL,
    heartbeat_period    BIGINT,
    -- 'handshake' until the handshake succeeded, then 'ready'.
    delivery_state      TEXT NOT NULL,
    -- eventsSinceSubscriptionStart: incremented in the same transaction as the notification row.
    events_since_start  BIGINT NOT NULL DEFAULT 0,
    -- Every event up to this number has been delivered (delivery is in order).
    delivered_through   BIGINT NOT NULL DEFAULT 0,
    attempts            BIGINT NOT NULL DEFAULT 0,
    next_attempt_at     BIGINT,
    last_sent_at        BIGINT,
    created_at          BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL,
    PRIMARY KEY (tenant, id)
);
CREATE INDEX subscriptions_status ON subscriptions (status);
CREATE INDEX subscriptions_due ON subscriptions (channel_type, next_attempt_at);

CREATE TABLE topics (
    tenant      TEXT NOT NULL,
    id          TEXT NOT NULL,
    url         TEXT NOT NULL,
    version_id  BIGINT NOT NULL,
    resource    TEXT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant, id)
);
CREATE UNIQUE INDEX topics_url ON topics (tenant, url);

-- Latest version of every resource Herald has seen, so each event can carry 'previous'.
CREATE TABLE resources (
    tenant         TEXT NOT NULL,
    resource_type  TEXT NOT NULL,
    id             TEXT NOT NULL,
    seq            BIGINT NOT NULL,
    version_id     TEXT NOT NULL,
    deleted        BIGINT NOT NULL,
    resource       TEXT,
    updated_at     BIGINT NOT NULL,
    -- The change event of a write whose publish is not yet confirmed; republished before the
    -- next write of this resource and at start, so a crash between the two loses nothing.
    pending_event  TEXT,
    PRIMARY KEY (tenant, resource_type, id)
);

-- Change events that produced at least one notification.
CREATE TABLE change_events (
    tenant         TEXT NOT NULL,
    event_id       TEXT NOT NULL,
    action         TEXT NOT NULL,
    resource_type  TEXT NOT NULL,
    resource_id    TEXT NOT NULL,
    version_id     TEXT NOT NULL,
    occurred_at    BIGINT NOT NULL,
    resource       TEXT,
    recorded_at    BIGINT NOT NULL,
    PRIMARY KEY (tenant, event_id)
);
-- One change is one event, whatever id it was re-sent under.
CREATE UNIQUE INDEX change_events_version ON change_events (tenant, resource_type, resource_id, version_id, action);

-- The per-subscription notification log: one row per (subscription, change event).
CREATE TABLE notifications (
    tenant           TEXT NOT NULL,
    subscription_id  TEXT NOT NULL,
    event_number     BIGINT NOT NULL,
    event_id         TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    PRIMARY KEY (tenant, subscription_id, event_number)
);
CREATE UNIQUE INDEX notifications_event ON notifications (tenant, subscription_id, event_id);
