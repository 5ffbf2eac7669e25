-- Herald schema. Times are Unix epoch milliseconds so the same SQL runs on SQLite and PostgreSQL.

CREATE TABLE subscriptions (
    tenant              TEXT NOT NULL,
    id                  TEXT NOT NULL,
    version_id          INTEGER NOT NULL,
    resource            TEXT NOT NULL,
    status              TEXT NOT NULL,
    error               TEXT,
    criteria            TEXT NOT NULL,
    channel_type        TEXT NOT NULL,
    heartbeat_period    INTEGER,
    -- 'handshake' until the handshake succeeded, then 'ready'.
    delivery_state      TEXT NOT NULL,
    -- eventsSinceSubscriptionStart: incremented in the same transaction as the notification row.
    events_since_start  INTEGER NOT NULL DEFAULT 0,
    -- Every event up to this number has been delivered (delivery is in order).
    delivered_through   INTEGER NOT NULL DEFAULT 0,
    attempts            INTEGER NOT NULL DEFAULT 0,
    next_attempt_at     INTEGER,
    last_sent_at        INTEGER,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL,
    PRIMARY KEY (tenant, id)
);
CREATE INDEX subscriptions_status ON subscriptions (status);
CREATE INDEX subscriptions_due ON subscriptions (channel_type, next_attempt_at);

CREATE TABLE topics (
    tenant      TEXT NOT NULL,
    id          TEXT NOT NULL,
    url         TEXT NOT NULL,
    version_id  INTEGER NOT NULL,
    resource    TEXT NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (tenant, id)
);
CREATE UNIQUE INDEX topics_url ON topics (tenant, url);

-- Latest version of every resource Herald has seen, so each event can carry 'previous'.
CREATE TABLE resources (
    tenant         TEXT NOT NULL,
    resource_type  TEXT NOT NULL,
    id             TEXT NOT NULL,
    seq            INTEGER NOT NULL,
    version_id     TEXT NOT NULL,
    deleted        INTEGER NOT NULL,
    resource       TEXT,
    updated_at     INTEGER NOT NULL,
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
    occurred_at    INTEGER NOT NULL,
    resource       TEXT,
    recorded_at    INTEGER NOT NULL,
    PRIMARY KEY (tenant, event_id)
);
-- One change is one event, whatever id it was re-sent under.
CREATE UNIQUE INDEX change_events_version ON change_events (tenant, resource_type, resource_id, version_id, action);

-- The per-subscription notification log: one row per (subscription, change event).
CREATE TABLE notifications (
    tenant           TEXT NOT NULL,
    subscription_id  TEXT NOT NULL,
    event_number     INTEGER NOT NULL,
    event_id         TEXT NOT NULL,
    created_at       INTEGER NOT NULL,
    PRIMARY KEY (tenant, subscription_id, event_number)
);
CREATE UNIQUE INDEX notifications_event ON notifications (tenant, subscription_id, event_id);
