-- eventsSinceSubscriptionStart moves to a table of its own. The matcher increments it for
-- every batch while delivery writes its progress (claim, delivered_through) on the
-- subscription row; sharing one row, each waited for the other's row lock.

CREATE TABLE subscription_counters (
    tenant              TEXT NOT NULL,
    id                  TEXT NOT NULL,
    -- Incremented in the same transaction (or statement) as the notification rows it numbers.
    events_since_start  BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, id),
    FOREIGN KEY (tenant, id) REFERENCES subscriptions (tenant, id) ON DELETE CASCADE
);

INSERT INTO subscription_counters (tenant, id, events_since_start)
SELECT tenant, id, events_since_start FROM subscriptions;

ALTER TABLE subscriptions DROP COLUMN events_since_start;
