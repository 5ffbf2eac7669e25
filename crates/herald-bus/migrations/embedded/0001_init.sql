-- The embedded bus log.
CREATE TABLE bus_messages (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    msg_id         TEXT UNIQUE,
    subject        TEXT NOT NULL,
    payload        BLOB NOT NULL,
    published_at   INTEGER NOT NULL,
    deliver_after  INTEGER NOT NULL DEFAULT 0,
    deliveries     INTEGER NOT NULL DEFAULT 0,
    acked_at       INTEGER
);
CREATE INDEX bus_messages_pending ON bus_messages (acked_at, seq);

CREATE TABLE bus_dead_letters (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    subject  TEXT NOT NULL,
    payload  BLOB NOT NULL,
    reason   TEXT NOT NULL,
    at       INTEGER NOT NULL
);
