//! The SQL behind [`Store`](crate::Store), written once and instantiated for SQLite and
//! PostgreSQL by `impl_store!`. Placeholders are `$n`, first used in ascending order (SQLite
//! numbers `$n` parameters by first appearance), and only types both engines share are used.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use futures::future::BoxFuture;
use herald_fhir::SubscriptionStatus;
use serde_json::Value;
use sqlx::pool::PoolOptions;
use sqlx::postgres::{PgConnectOptions, PgPool};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqliteSynchronous};
use sqlx::{Connection, Row};

use crate::records::*;
use crate::{Store, StoreError, StoreResult};

mod batch;

/// A pooled connection idle at least this long is pinged before it is handed out.
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);

/// Pool settings of both databases. By default sqlx pings every connection before handing
/// it out: one more round trip in front of every statement, five or so on the way from a
/// change event to its notification. sqlx also pings a connection when it is released, so
/// one in steady use is known good; only a connection that sat idle is pinged first (the
/// server may have gone away meanwhile), as sqlx's documentation suggests.
fn pool_options<DB: sqlx::Database>() -> PoolOptions<DB> {
    PoolOptions::new()
        .test_before_acquire(false)
        .before_acquire(|conn: &mut DB::Connection, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_IF_IDLE_FOR {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
}

/// The embedded default: one SQLite file, WAL, `synchronous=FULL` so an acknowledged
/// write survives a crash. One writing connection: SQLite has one writer anyway, and a
/// single writer never meets `SQLITE_BUSY` on lock upgrades. Reads that stand alone go to
/// a few read-only connections: in WAL mode they run beside the writer and see every
/// committed write, instead of queueing behind its disk flushes (a reader waited up to
/// the several milliseconds of a flush for each row it needed).
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    reader: SqlitePool,
}

/// Read-only connections beside the SQLite writer.
const SQLITE_READERS: u32 = 2;

impl SqliteStore {
    pub async fn open(path: &Path) -> StoreResult<Self> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let pool = pool_options()
            .max_connections(1)
            .connect_with(options)
            .await?;
        // Opened after the writer, which created the file and set WAL mode (persistent).
        let reader_options = SqliteConnectOptions::new()
            .filename(path)
            .read_only(true)
            .busy_timeout(Duration::from_secs(10));
        let reader = pool_options()
            .max_connections(SQLITE_READERS)
            .connect_with(reader_options)
            .await?;
        Ok(Self { pool, reader })
    }

    /// An in-memory database, for tests.
    pub async fn in_memory() -> StoreResult<Self> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:")?;
        let pool = pool_options()
            .max_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await?;
        // An in-memory database exists only on its one connection.
        Ok(Self {
            reader: pool.clone(),
            pool,
        })
    }
}

/// Production storage on PostgreSQL. Reads and writes share one pool (`reader` is the same
/// pool: the server runs them side by side).
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    reader: PgPool,
    /// The matcher's one-statement batches (`sql/batch/postgres.rs`), on connections of their
    /// own that always use the statement's generic plan. Left to choose, PostgreSQL plans
    /// the statement again for every batch (custom plans, 0.4 ms of bind each, about a
    /// quarter of the statement's time); its shape never changes (arrays in, primary-key
    /// joins), so one plan per connection serves every batch. Other statements keep the
    /// default choice.
    batches: PgPool,
}

/// Connections for the matcher's batches: one matcher per instance records one batch at a
/// time, and the second is there while sqlx pings the first on its way back to the pool.
const BATCH_CONNECTIONS: u32 = 2;

impl PostgresStore {
    pub async fn connect(url: &str, max_connections: u32) -> StoreResult<Self> {
        let options = PgConnectOptions::from_str(url)?;
        let pool = pool_options()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.clone())
            .await?;
        let batches = pool_options()
            .max_connections(BATCH_CONNECTIONS)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.options([("plan_cache_mode", "force_generic_plan")]))
            .await?;
        Ok(Self {
            reader: pool.clone(),
            pool,
            batches,
        })
    }
}

/// A bookkeeping write: one statement on a connection, made by [`SqliteStore::bookkeeping`]
/// or [`PostgresStore::bookkeeping`].
type BookkeepingWrite<C, T> =
    Box<dyn for<'c> FnOnce(&'c mut C) -> BoxFuture<'c, Result<T, sqlx::Error>> + Send>;

impl SqliteStore {
    /// Runs a delivery bookkeeping write (a claim, its release, progress) without its own
    /// disk flush: `synchronous=NORMAL` for this commit only. In WAL mode the commit is
    /// written to the log in order, and the next `FULL` commit's flush (the matcher's next
    /// batch, any API write) makes it durable with everything before it; only a power or OS
    /// failure before then can undo it. Undoing one is harmless by design: a lost claim or
    /// release is moot, since the embedded mode is one instance and releases every claim at
    /// start; lost progress sends those notifications again, which at-least-once delivery
    /// allows (event numbers come from the matcher's `FULL` commits and are never reused).
    ///
    /// The write runs in its own task, so a caller that gives up cannot leave the shared
    /// writer at `NORMAL`; if the setting cannot be restored, the connection is closed.
    async fn bookkeeping<T: Send + 'static>(
        &self,
        write: BookkeepingWrite<sqlx::SqliteConnection, T>,
    ) -> StoreResult<T> {
        let pool = self.pool.clone();
        let task = tokio::spawn(async move {
            let mut conn = pool.acquire().await?;
            sqlx::query("PRAGMA synchronous = NORMAL")
                .execute(&mut *conn)
                .await?;
            let result = write(&mut conn).await;
            if let Err(e) = sqlx::query("PRAGMA synchronous = FULL")
                .execute(&mut *conn)
                .await
            {
                conn.close_on_drop();
                return Err(e);
            }
            result
        });
        match task.await {
            Ok(result) => result.map_err(convert),
            Err(e) => Err(StoreError::Corrupt(format!(
                "bookkeeping write aborted: {e}"
            ))),
        }
    }
}

impl PostgresStore {
    /// Runs a delivery bookkeeping write. PostgreSQL commits it durably: instances share
    /// claims, and a claim undone by a server crash could let a second instance deliver a
    /// subscription that the first is still sending.
    async fn bookkeeping<T: Send + 'static>(
        &self,
        write: BookkeepingWrite<sqlx::PgConnection, T>,
    ) -> StoreResult<T> {
        let mut conn = self.pool.acquire().await?;
        write(&mut conn).await.map_err(convert)
    }
}

fn convert(err: sqlx::Error) -> StoreError {
    match &err {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            StoreError::Conflict(db.message().to_owned())
        }
        _ => StoreError::Database(err),
    }
}

fn parse_json(text: &str, what: &str) -> StoreResult<Value> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

fn owner_from_row(text: Option<String>) -> StoreResult<Option<SubscriptionOwner>> {
    text.map(|t| {
        serde_json::from_str(&t)
            .map_err(|e| StoreError::Corrupt(format!("subscription owner: {e}")))
    })
    .transpose()
}

fn owner_columns(owner: Option<&SubscriptionOwner>) -> (Option<String>, Option<String>) {
    (
        owner.and_then(|o| serde_json::to_string(o).ok()),
        owner.map(|o| o.client_id.clone()),
    )
}

fn parse_status(code: &str) -> StoreResult<SubscriptionStatus> {
    SubscriptionStatus::parse(code)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown status '{code}'")))
}

/// A `LIKE` pattern matching any text that contains `text` (escape character `\`).
fn like_pattern(text: &str) -> String {
    let mut pattern = String::with_capacity(text.len() + 2);
    pattern.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// A subscription row with its counter, for `SELECT ... FROM subscriptions` and for
/// `RETURNING` of statements on `subscriptions` (the counter is read by subselect, which
/// both allow; a row being created has no counter yet and reads 0).
const SUBSCRIPTION_COLUMNS: &str = "tenant, id, version_id, resource, status, error, criteria, channel_type, \
     heartbeat_period, delivery_state, \
     COALESCE((SELECT c.events_since_start FROM subscription_counters c \
               WHERE c.tenant = subscriptions.tenant AND c.id = subscriptions.id), 0) AS events_since_start, \
     delivered_through, attempts, next_attempt_at, last_sent_at, created_at, updated_at, owner";

const RESOURCE_COLUMNS: &str =
    "tenant, resource_type, id, seq, version_id, deleted, resource, updated_at, pending_event";

/// Delivery progress: `delivered_through` moves from `$5` to `$1` if still `$5`; an
/// `error` status becomes `active` again.
const ADVANCE_DELIVERY: &str =
    "UPDATE subscriptions SET delivered_through = $1, attempts = 0, last_sent_at = $2, \
     error = NULL, status = CASE WHEN status = 'error' THEN 'active' ELSE status END \
     WHERE tenant = $3 AND id = $4 AND delivered_through = $5";

/// [`ADVANCE_DELIVERY`] that also ends the claim.
const FINISH_DELIVERY: &str = "UPDATE subscriptions SET delivered_through = $1, attempts = 0, last_sent_at = $2, \
     error = NULL, status = CASE WHEN status = 'error' THEN 'active' ELSE status END, next_attempt_at = NULL \
     WHERE tenant = $3 AND id = $4 AND delivered_through = $5";

const AUDIT_COLUMNS: &str =
    "tenant, id, recorded_at, kind, action, outcome, agent_client, agent_subject, entity, detail";

macro_rules! impl_store {
    ($store:ty, $db:ty, $migrations:literal) => {
        impl $store {
            /// Progress of a claimed delivery, compare-and-set on `delivered_through`
            /// (`sql`: [`ADVANCE_DELIVERY`] or [`FINISH_DELIVERY`]).
            async fn record_progress(&self, key: &SubscriptionKey, from: i64, through: i64, now_ms: i64, sql: &'static str) -> StoreResult<bool> {
                let (tenant, id) = (key.tenant.clone(), key.id.clone());
                let done = self.bookkeeping(Box::new(move |conn| Box::pin(async move {
                    sqlx::query(sql)
                        .bind(through).bind(now_ms).bind(tenant).bind(id).bind(from)
                        .execute(&mut *conn)
                        .await
                }))).await?;
                Ok(done.rows_affected() == 1)
            }

            fn audit(row: &<$db as sqlx::Database>::Row) -> StoreResult<AuditRecord> {
                Ok(AuditRecord {
                    tenant: row.try_get("tenant")?,
                    id: row.try_get("id")?,
                    recorded_at: row.try_get("recorded_at")?,
                    kind: row.try_get("kind")?,
                    action: row.try_get("action")?,
                    outcome: row.try_get("outcome")?,
                    agent_client: row.try_get("agent_client")?,
                    agent_subject: row.try_get("agent_subject")?,
                    entity: row.try_get("entity")?,
                    detail: row.try_get("detail")?,
                })
            }

            fn subscription(row: &<$db as sqlx::Database>::Row) -> StoreResult<SubscriptionRecord> {
                let status: String = row.try_get("status")?;
                let state: String = row.try_get("delivery_state")?;
                let resource: String = row.try_get("resource")?;
                Ok(SubscriptionRecord {
                    key: SubscriptionKey { tenant: row.try_get("tenant")?, id: row.try_get("id")? },
                    version_id: row.try_get("version_id")?,
                    resource: parse_json(&resource, "subscription resource")?,
                    status: parse_status(&status)?,
                    error: row.try_get("error")?,
                    criteria: row.try_get("criteria")?,
                    channel_type: row.try_get("channel_type")?,
                    heartbeat_period: row.try_get("heartbeat_period")?,
                    delivery_state: if state == "ready" { DeliveryState::Ready } else { DeliveryState::Handshake },
                    events_since_start: row.try_get("events_since_start")?,
                    delivered_through: row.try_get("delivered_through")?,
                    attempts: row.try_get("attempts")?,
                    next_attempt_at: row.try_get("next_attempt_at")?,
                    last_sent_at: row.try_get("last_sent_at")?,
                    created_at: row.try_get("created_at")?,
                    updated_at: row.try_get("updated_at")?,
                    owner: owner_from_row(row.try_get("owner")?)?,
                })
            }

            fn stored_resource(row: &<$db as sqlx::Database>::Row) -> StoreResult<StoredResource> {
                let text: Option<String> = row.try_get("resource")?;
                let deleted: i64 = row.try_get("deleted")?;
                Ok(StoredResource {
                    tenant: row.try_get("tenant")?,
                    resource_type: row.try_get("resource_type")?,
                    id: row.try_get("id")?,
                    seq: row.try_get("seq")?,
                    version_id: row.try_get("version_id")?,
                    deleted: deleted != 0,
                    resource: text.as_deref().map(|t| parse_json(t, "resource")).transpose()?,
                    updated_at: row.try_get("updated_at")?,
                    pending_event: row.try_get("pending_event")?,
                })
            }

            fn topic(row: &<$db as sqlx::Database>::Row) -> StoreResult<TopicRecord> {
                let resource: String = row.try_get("resource")?;
                Ok(TopicRecord {
                    tenant: row.try_get("tenant")?,
                    id: row.try_get("id")?,
                    url: row.try_get("url")?,
                    version_id: row.try_get("version_id")?,
                    resource: parse_json(&resource, "topic resource")?,
                    updated_at: row.try_get("updated_at")?,
                })
            }
        }

        #[async_trait]
        impl Store for $store {
            async fn migrate(&self) -> StoreResult<()> {
                sqlx::migrate!($migrations).run(&self.pool).await?;
                Ok(())
            }

            async fn ping(&self) -> StoreResult<()> {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }

            async fn create_subscription(&self, new: NewSubscription<'_>) -> StoreResult<SubscriptionRecord> {
                let state = if new.status == SubscriptionStatus::Active { "ready" } else { "handshake" };
                let sql = format!(
                    "INSERT INTO subscriptions (tenant, id, version_id, resource, status, error, criteria, channel_type, \
                     heartbeat_period, delivery_state, created_at, updated_at, owner, owner_client) \
                     VALUES ($1, $2, 1, $3, $4, NULL, $5, $6, $7, $8, $9, $9, $10, $11) RETURNING {SUBSCRIPTION_COLUMNS}"
                );
                let (owner, owner_client) = owner_columns(new.owner);
                let mut tx = self.pool.begin().await?;
                let row = sqlx::query(&sql)
                    .bind(new.tenant)
                    .bind(new.id)
                    .bind(new.resource.to_string())
                    .bind(new.status.as_str())
                    .bind(new.criteria)
                    .bind(new.channel_type)
                    .bind(new.heartbeat_period.map(i64::from))
                    .bind(state)
                    .bind(new.now_ms)
                    .bind(owner)
                    .bind(owner_client)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(convert)?;
                sqlx::query("INSERT INTO subscription_counters (tenant, id, events_since_start) VALUES ($1, $2, 0)")
                    .bind(new.tenant).bind(new.id).execute(&mut *tx).await?;
                tx.commit().await?;
                Self::subscription(&row)
            }

            async fn get_subscription(&self, tenant: &str, id: &str) -> StoreResult<Option<SubscriptionRecord>> {
                let sql = format!("SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE tenant = $1 AND id = $2");
                let row = sqlx::query(&sql).bind(tenant).bind(id).fetch_optional(&self.reader).await?;
                row.as_ref().map(Self::subscription).transpose()
            }

            async fn update_subscription(&self, new: NewSubscription<'_>) -> StoreResult<Option<SubscriptionRecord>> {
                // A client setting requested (or active after an error) restarts delivery from
                // the first undelivered event: attempts and backoff are cleared. Status
                // 'requested' also asks for a new handshake.
                let state = if new.status == SubscriptionStatus::Requested { Some("handshake") } else { None };
                let sql = format!(
                    "UPDATE subscriptions SET version_id = version_id + 1, resource = $1, status = $2, error = NULL, \
                     criteria = $3, channel_type = $4, heartbeat_period = $5, \
                     delivery_state = COALESCE($6, delivery_state), attempts = 0, next_attempt_at = NULL, updated_at = $7, \
                     owner = $8, owner_client = $9 \
                     WHERE tenant = $10 AND id = $11 RETURNING {SUBSCRIPTION_COLUMNS}"
                );
                let (owner, owner_client) = owner_columns(new.owner);
                let row = sqlx::query(&sql)
                    .bind(new.resource.to_string())
                    .bind(new.status.as_str())
                    .bind(new.criteria)
                    .bind(new.channel_type)
                    .bind(new.heartbeat_period.map(i64::from))
                    .bind(state)
                    .bind(new.now_ms)
                    .bind(owner)
                    .bind(owner_client)
                    .bind(new.tenant)
                    .bind(new.id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(convert)?;
                row.as_ref().map(Self::subscription).transpose()
            }

            async fn delete_subscription(&self, tenant: &str, id: &str) -> StoreResult<bool> {
                let mut tx = self.pool.begin().await?;
                sqlx::query("DELETE FROM notifications WHERE tenant = $1 AND subscription_id = $2")
                    .bind(tenant).bind(id).execute(&mut *tx).await?;
                sqlx::query("DELETE FROM subscription_counters WHERE tenant = $1 AND id = $2")
                    .bind(tenant).bind(id).execute(&mut *tx).await?;
                let done = sqlx::query("DELETE FROM subscriptions WHERE tenant = $1 AND id = $2")
                    .bind(tenant).bind(id).execute(&mut *tx).await?;
                tx.commit().await?;
                Ok(done.rows_affected() > 0)
            }

            async fn search_subscriptions(&self, tenant: &str, query: &SubscriptionQuery) -> StoreResult<Vec<SubscriptionRecord>> {
                let mut sql = format!("SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE tenant = $1");
                let mut n = 1;
                let mut binds: Vec<&str> = Vec::new();
                for (column, values) in [("id", &query.ids), ("status", &query.statuses), ("criteria", &query.criteria)] {
                    if values.is_empty() {
                        continue;
                    }
                    let placeholders: Vec<String> = values.iter().map(|_| { n += 1; format!("${n}") }).collect();
                    sql.push_str(&format!(" AND {column} IN ({})", placeholders.join(", ")));
                    binds.extend(values.iter().map(String::as_str));
                }
                sql.push_str(&format!(" ORDER BY created_at, id LIMIT {}", query.limit.unwrap_or(1000).clamp(0, 10_000)));
                let mut q = sqlx::query(&sql).bind(tenant);
                for b in binds {
                    q = q.bind(b);
                }
                let rows = q.fetch_all(&self.reader).await?;
                rows.iter().map(Self::subscription).collect()
            }

            async fn counting_subscriptions(&self) -> StoreResult<Vec<SubscriptionRecord>> {
                let sql = format!(
                    "SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE status IN ('requested', 'active', 'error')"
                );
                let rows = sqlx::query(&sql).fetch_all(&self.reader).await?;
                rows.iter().map(Self::subscription).collect()
            }

            async fn count_subscriptions_with_criteria(&self, tenant: &str, criteria: &str) -> StoreResult<i64> {
                let row = sqlx::query("SELECT COUNT(*) AS n FROM subscriptions WHERE tenant = $1 AND criteria = $2")
                    .bind(tenant).bind(criteria).fetch_one(&self.reader).await?;
                Ok(row.try_get("n")?)
            }

            async fn put_topic(&self, tenant: &str, id: &str, url: &str, resource: &Value) -> StoreResult<TopicRecord> {
                let now = chrono::Utc::now().timestamp_millis();
                let row = sqlx::query(
                    "INSERT INTO topics (tenant, id, url, version_id, resource, updated_at) VALUES ($1, $2, $3, 1, $4, $5) \
                     ON CONFLICT (tenant, id) DO UPDATE SET url = excluded.url, resource = excluded.resource, \
                     version_id = topics.version_id + 1, updated_at = excluded.updated_at \
                     RETURNING tenant, id, url, version_id, resource, updated_at",
                )
                .bind(tenant).bind(id).bind(url).bind(resource.to_string()).bind(now)
                .fetch_one(&self.pool)
                .await
                .map_err(convert)?;
                Self::topic(&row)
            }

            async fn get_topic(&self, tenant: &str, id: &str) -> StoreResult<Option<TopicRecord>> {
                let row = sqlx::query("SELECT tenant, id, url, version_id, resource, updated_at FROM topics WHERE tenant = $1 AND id = $2")
                    .bind(tenant).bind(id).fetch_optional(&self.reader).await?;
                row.as_ref().map(Self::topic).transpose()
            }

            async fn get_topic_by_url(&self, tenant: &str, url: &str) -> StoreResult<Option<TopicRecord>> {
                let row = sqlx::query("SELECT tenant, id, url, version_id, resource, updated_at FROM topics WHERE tenant = $1 AND url = $2")
                    .bind(tenant).bind(url).fetch_optional(&self.reader).await?;
                row.as_ref().map(Self::topic).transpose()
            }

            async fn list_topics(&self, tenant: &str) -> StoreResult<Vec<TopicRecord>> {
                let rows = sqlx::query("SELECT tenant, id, url, version_id, resource, updated_at FROM topics WHERE tenant = $1 ORDER BY url")
                    .bind(tenant).fetch_all(&self.reader).await?;
                rows.iter().map(Self::topic).collect()
            }

            async fn delete_topic(&self, tenant: &str, id: &str) -> StoreResult<bool> {
                let done = sqlx::query("DELETE FROM topics WHERE tenant = $1 AND id = $2")
                    .bind(tenant).bind(id).execute(&self.pool).await?;
                Ok(done.rows_affected() > 0)
            }

            async fn get_resource(&self, tenant: &str, resource_type: &str, id: &str) -> StoreResult<Option<StoredResource>> {
                let row = sqlx::query(&format!("SELECT {RESOURCE_COLUMNS} FROM resources WHERE tenant = $1 AND resource_type = $2 AND id = $3"))
                    .bind(tenant).bind(resource_type).bind(id)
                    .fetch_optional(&self.reader)
                    .await?;
                row.as_ref().map(Self::stored_resource).transpose()
            }

            async fn resources_containing(&self, tenant: &str, resource_type: &str, text: &str, limit: i64) -> StoreResult<Vec<StoredResource>> {
                let rows = sqlx::query(&format!(
                    "SELECT {RESOURCE_COLUMNS} FROM resources \
                     WHERE tenant = $1 AND resource_type = $2 AND deleted = 0 AND resource LIKE $3 ESCAPE '\\' \
                     ORDER BY id LIMIT $4"
                ))
                .bind(tenant).bind(resource_type).bind(like_pattern(text)).bind(limit)
                .fetch_all(&self.reader)
                .await?;
                rows.iter().map(Self::stored_resource).collect()
            }

            async fn put_resource(&self, new: &StoredResource, expected_seq: Option<i64>) -> StoreResult<bool> {
                let text = new.resource.as_ref().map(Value::to_string);
                let deleted = i64::from(new.deleted);
                let done = match expected_seq {
                    None => sqlx::query(
                        "INSERT INTO resources (tenant, resource_type, id, seq, version_id, deleted, resource, updated_at, pending_event) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
                    )
                    .bind(&new.tenant).bind(&new.resource_type).bind(&new.id).bind(new.seq)
                    .bind(&new.version_id).bind(deleted).bind(text).bind(new.updated_at).bind(&new.pending_event)
                    .execute(&self.pool)
                    .await?,
                    Some(expected) => sqlx::query(
                        "UPDATE resources SET seq = $1, version_id = $2, deleted = $3, resource = $4, updated_at = $5, pending_event = $6 \
                         WHERE tenant = $7 AND resource_type = $8 AND id = $9 AND seq = $10",
                    )
                    .bind(new.seq).bind(&new.version_id).bind(deleted).bind(text).bind(new.updated_at).bind(&new.pending_event)
                    .bind(&new.tenant).bind(&new.resource_type).bind(&new.id).bind(expected)
                    .execute(&self.pool)
                    .await?,
                };
                Ok(done.rows_affected() == 1)
            }

            async fn clear_pending_event(&self, tenant: &str, resource_type: &str, id: &str, seq: i64) -> StoreResult<()> {
                sqlx::query(
                    "UPDATE resources SET pending_event = NULL WHERE tenant = $1 AND resource_type = $2 AND id = $3 AND seq = $4",
                )
                .bind(tenant).bind(resource_type).bind(id).bind(seq)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn get_resources(&self, keys: &[ResourceKey]) -> StoreResult<Vec<StoredResource>> {
                self.get_resources_batched(keys).await
            }

            async fn pending_events(&self, limit: i64) -> StoreResult<Vec<StoredResource>> {
                let rows = sqlx::query(&format!("SELECT {RESOURCE_COLUMNS} FROM resources WHERE pending_event IS NOT NULL ORDER BY updated_at LIMIT $1"))
                    .bind(limit)
                    .fetch_all(&self.reader)
                    .await?;
                rows.iter().map(Self::stored_resource).collect()
            }

            async fn record_notifications(&self, event: &EventRecord, subscriptions: &[SubscriptionKey]) -> StoreResult<Vec<(SubscriptionKey, i64)>> {
                let batch = [MatchedEvent { event: event.clone(), subscriptions: subscriptions.to_vec() }];
                Ok(self.record_batch(&batch, &[], None).await?.numbered.pop().unwrap_or_default())
            }

            async fn record_notifications_batch(&self, events: &[MatchedEvent], versions: &[VersionWrite]) -> StoreResult<Vec<Vec<(SubscriptionKey, i64)>>> {
                Ok(self.record_batch(events, versions, None).await?.numbered)
            }

            async fn record_notifications_batch_claiming(&self, events: &[MatchedEvent], versions: &[VersionWrite], claim: Option<BatchClaim>) -> StoreResult<RecordedBatch> {
                self.record_batch(events, versions, claim).await
            }

            async fn notifications(&self, tenant: &str, subscription_id: &str, from: i64, to: i64, limit: i64) -> StoreResult<Vec<NotificationRecord>> {
                let rows = sqlx::query(
                    "SELECT n.event_number, e.event_id, e.tenant, e.action, e.resource_type, e.resource_id, e.version_id, \
                     e.occurred_at, e.resource, e.recorded_at \
                     FROM notifications n JOIN change_events e ON e.tenant = n.tenant AND e.event_id = n.event_id \
                     WHERE n.tenant = $1 AND n.subscription_id = $2 AND n.event_number >= $3 AND n.event_number <= $4 \
                     ORDER BY n.event_number LIMIT $5",
                )
                .bind(tenant).bind(subscription_id).bind(from).bind(to).bind(limit)
                .fetch_all(&self.reader)
                .await?;
                rows.iter()
                    .map(|row| {
                        let resource: Option<String> = row.try_get("resource")?;
                        Ok(NotificationRecord {
                            event_number: row.try_get("event_number")?,
                            event: EventRecord {
                                event_id: row.try_get("event_id")?,
                                tenant: row.try_get("tenant")?,
                                action: row.try_get("action")?,
                                resource_type: row.try_get("resource_type")?,
                                resource_id: row.try_get("resource_id")?,
                                version_id: row.try_get("version_id")?,
                                occurred_at: row.try_get("occurred_at")?,
                                resource: resource.as_deref().map(|t| parse_json(t, "event resource")).transpose()?,
                                recorded_at: row.try_get("recorded_at")?,
                            },
                        })
                    })
                    .collect()
            }

            async fn claim_due(&self, now_ms: i64, lease_until_ms: i64, limit: i64) -> StoreResult<Vec<SubscriptionRecord>> {
                // The outer condition repeats "not claimed": when two instances race, the
                // second re-checks the row after the first committed and skips it.
                let sql = format!(
                    "UPDATE subscriptions SET next_attempt_at = $1 \
                     WHERE (next_attempt_at IS NULL OR next_attempt_at <= $2) \
                     AND (tenant, id) IN (SELECT s.tenant, s.id FROM subscriptions s \
                     JOIN subscription_counters c ON c.tenant = s.tenant AND c.id = s.id \
                     WHERE s.channel_type IN ('rest-hook', 'nats') \
                     AND (s.next_attempt_at IS NULL OR s.next_attempt_at <= $2) \
                     AND ( (s.status = 'requested' AND s.delivery_state = 'handshake') \
                        OR (s.status IN ('requested', 'active', 'error') AND s.delivery_state = 'ready' \
                            AND (c.events_since_start > s.delivered_through \
                                 OR (s.heartbeat_period IS NOT NULL AND COALESCE(s.last_sent_at, s.created_at) + s.heartbeat_period * 1000 <= $2))) ) \
                     ORDER BY COALESCE(s.next_attempt_at, 0), s.tenant, s.id LIMIT $3) \
                     RETURNING {SUBSCRIPTION_COLUMNS}"
                );
                let rows = self.bookkeeping(Box::new(move |conn| Box::pin(async move {
                    sqlx::query(&sql).bind(lease_until_ms).bind(now_ms).bind(limit).fetch_all(&mut *conn).await
                }))).await?;
                rows.iter().map(Self::subscription).collect()
            }

            async fn rewind_delivery(&self, key: &SubscriptionKey, from: i64) -> StoreResult<bool> {
                let done = sqlx::query(
                    "UPDATE subscriptions SET delivered_through = $1, attempts = 0, next_attempt_at = NULL \
                     WHERE tenant = $2 AND id = $3 AND delivered_through > $1",
                )
                .bind(from - 1).bind(&key.tenant).bind(&key.id)
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn prune_notifications(&self, before_ms: i64, keep_per_subscription: i64) -> StoreResult<u64> {
                let mut tx = self.pool.begin().await?;
                let notifications = sqlx::query(
                    "DELETE FROM notifications WHERE EXISTS (SELECT 1 FROM subscriptions s \
                     JOIN subscription_counters c ON c.tenant = s.tenant AND c.id = s.id \
                     WHERE s.tenant = notifications.tenant AND s.id = notifications.subscription_id \
                     AND notifications.event_number <= s.delivered_through \
                     AND (notifications.created_at < $1 OR notifications.event_number <= c.events_since_start - $2))",
                )
                .bind(before_ms).bind(keep_per_subscription)
                .execute(&mut *tx)
                .await?;
                let events = sqlx::query(
                    "DELETE FROM change_events WHERE recorded_at < $1 AND NOT EXISTS (SELECT 1 FROM notifications n \
                     WHERE n.tenant = change_events.tenant AND n.event_id = change_events.event_id)",
                )
                .bind(before_ms)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(notifications.rows_affected() + events.rows_affected())
            }

            async fn advance_delivery(&self, key: &SubscriptionKey, from: i64, through: i64, now_ms: i64) -> StoreResult<bool> {
                self.record_progress(key, from, through, now_ms, ADVANCE_DELIVERY).await
            }

            async fn finish_delivery(&self, key: &SubscriptionKey, from: i64, through: i64, now_ms: i64) -> StoreResult<bool> {
                self.record_progress(key, from, through, now_ms, FINISH_DELIVERY).await
            }

            async fn release_claim(&self, key: &SubscriptionKey) -> StoreResult<()> {
                let (tenant, id) = (key.tenant.clone(), key.id.clone());
                self.bookkeeping(Box::new(move |conn| Box::pin(async move {
                    sqlx::query("UPDATE subscriptions SET next_attempt_at = NULL WHERE tenant = $1 AND id = $2")
                        .bind(tenant).bind(id).execute(&mut *conn).await
                }))).await?;
                Ok(())
            }

            async fn release_all_claims(&self) -> StoreResult<()> {
                // Claims are leases on rows without failures (failures set attempts >= 1 with
                // their own retry time, which is kept).
                sqlx::query("UPDATE subscriptions SET next_attempt_at = NULL WHERE attempts = 0")
                    .execute(&self.pool).await?;
                Ok(())
            }

            async fn handshake_result(&self, key: &SubscriptionKey, version_id: i64, outcome: Result<(), &str>, now_ms: i64) -> StoreResult<()> {
                // Only the version that was handshaken is changed: a client update in between wins.
                let (status, state, error) = match outcome {
                    Ok(()) => ("active", "ready", None),
                    Err(e) => ("error", "handshake", Some(e)),
                };
                sqlx::query(
                    "UPDATE subscriptions SET status = $1, delivery_state = $2, error = $3, last_sent_at = $4, \
                     attempts = 0, next_attempt_at = NULL WHERE tenant = $5 AND id = $6 AND version_id = $7",
                )
                .bind(status).bind(state).bind(error).bind(now_ms).bind(&key.tenant).bind(&key.id).bind(version_id)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn mark_delivered(&self, key: &SubscriptionKey, through: i64, now_ms: i64) -> StoreResult<()> {
                sqlx::query(
                    "UPDATE subscriptions SET delivered_through = CASE WHEN delivered_through > $1 THEN delivered_through ELSE $1 END, \
                     attempts = 0, next_attempt_at = NULL, last_sent_at = $2, error = NULL, \
                     status = CASE WHEN status = 'error' THEN 'active' ELSE status END \
                     WHERE tenant = $3 AND id = $4",
                )
                .bind(through).bind(now_ms).bind(&key.tenant).bind(&key.id)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn mark_heartbeat(&self, key: &SubscriptionKey, now_ms: i64) -> StoreResult<()> {
                sqlx::query("UPDATE subscriptions SET last_sent_at = $1, next_attempt_at = NULL WHERE tenant = $2 AND id = $3")
                    .bind(now_ms).bind(&key.tenant).bind(&key.id).execute(&self.pool).await?;
                Ok(())
            }

            async fn record_delivery_failure(&self, key: &SubscriptionKey, failure: &DeliveryFailure<'_>) -> StoreResult<()> {
                sqlx::query(
                    "UPDATE subscriptions SET attempts = $1, next_attempt_at = $2, status = $3, error = $4, updated_at = $5 \
                     WHERE tenant = $6 AND id = $7 AND version_id = $8 AND status <> 'off'",
                )
                .bind(failure.attempts).bind(failure.next_attempt_at).bind(failure.status.as_str()).bind(failure.error)
                .bind(failure.now_ms).bind(&key.tenant).bind(&key.id).bind(failure.version_id)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn set_status(&self, key: &SubscriptionKey, status: SubscriptionStatus, error: Option<&str>) -> StoreResult<()> {
                sqlx::query("UPDATE subscriptions SET status = $1, error = $2 WHERE tenant = $3 AND id = $4")
                    .bind(status.as_str()).bind(error).bind(&key.tenant).bind(&key.id)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn count_subscriptions_by_owner(&self, tenant: &str, client_id: &str) -> StoreResult<i64> {
                let row = sqlx::query("SELECT COUNT(*) AS n FROM subscriptions WHERE tenant = $1 AND owner_client = $2")
                    .bind(tenant).bind(client_id).fetch_one(&self.reader).await?;
                Ok(row.try_get("n")?)
            }

            async fn revoke_access(
                &self,
                tenant: &str,
                kind: RevocationKind,
                value: &str,
                reason: Option<&str>,
                now_ms: i64,
            ) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO access_revocations (tenant, kind, value, reason, revoked_at) VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (tenant, kind, value) DO NOTHING",
                )
                .bind(tenant).bind(kind.as_str()).bind(value).bind(reason).bind(now_ms)
                .execute(&self.pool).await?;
                Ok(())
            }

            async fn is_revoked(&self, tenant: &str, client_id: &str, token_id: Option<&str>) -> StoreResult<bool> {
                let row = sqlx::query(
                    "SELECT COUNT(*) AS n FROM access_revocations WHERE tenant = $1 AND \
                     ((kind = 'client' AND value = $2) OR (kind = 'token' AND value = $3))",
                )
                .bind(tenant).bind(client_id).bind(token_id)
                .fetch_one(&self.reader).await?;
                let n: i64 = row.try_get("n")?;
                Ok(n > 0)
            }

            async fn append_audit(&self, records: &[AuditRecord]) -> StoreResult<()> {
                if records.is_empty() {
                    return Ok(());
                }
                // Multi-row inserts: one statement per 100 records (10 parameters each)
                // instead of one each, since every delivery attempt writes a record. One
                // statement is atomic by itself: it needs no BEGIN and COMMIT round trips.
                const PER_STATEMENT: usize = 100;
                fn insert(chunk: &[AuditRecord]) -> sqlx::QueryBuilder<'_, $db> {
                    let mut q = sqlx::QueryBuilder::<$db>::new(
                        "INSERT INTO audit_events (tenant, id, recorded_at, kind, action, outcome, agent_client, \
                         agent_subject, entity, detail) ",
                    );
                    q.push_values(chunk, |mut row, r| {
                        row.push_bind(&r.tenant).push_bind(&r.id).push_bind(r.recorded_at).push_bind(&r.kind)
                            .push_bind(&r.action).push_bind(&r.outcome).push_bind(&r.agent_client)
                            .push_bind(&r.agent_subject).push_bind(&r.entity).push_bind(&r.detail);
                    });
                    q.push(" ON CONFLICT (tenant, id) DO NOTHING");
                    q
                }
                if records.len() <= PER_STATEMENT {
                    insert(records).build().execute(&self.pool).await?;
                    return Ok(());
                }
                let mut tx = self.pool.begin().await?;
                for chunk in records.chunks(PER_STATEMENT) {
                    insert(chunk).build().execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn search_audit(&self, tenant: &str, query: &AuditQuery) -> StoreResult<Vec<AuditRecord>> {
                let mut sql = format!("SELECT {AUDIT_COLUMNS} FROM audit_events WHERE tenant = $1");
                let mut n = 1;
                let mut numbers: Vec<i64> = Vec::new();
                let mut texts: Vec<&str> = Vec::new();
                // Numbers are bound first, then texts: placeholders ascend in that order.
                for (column, op, value) in [("recorded_at", ">=", query.since_ms), ("recorded_at", "<=", query.until_ms)] {
                    if let Some(v) = value {
                        n += 1;
                        sql.push_str(&format!(" AND {column} {op} ${n}"));
                        numbers.push(v);
                    }
                }
                if !query.kinds.is_empty() {
                    let placeholders: Vec<String> = query.kinds.iter().map(|_| { n += 1; format!("${n}") }).collect();
                    sql.push_str(&format!(" AND kind IN ({})", placeholders.join(", ")));
                    texts.extend(query.kinds.iter().map(String::as_str));
                }
                for (column, value) in [("entity", &query.entity), ("agent_client", &query.agent_client), ("outcome", &query.outcome)] {
                    if let Some(v) = value {
                        n += 1;
                        sql.push_str(&format!(" AND {column} = ${n}"));
                        texts.push(v);
                    }
                }
                sql.push_str(&format!(
                    " ORDER BY recorded_at DESC, id DESC LIMIT {}",
                    query.limit.unwrap_or(100).clamp(0, 1_000)
                ));
                let mut q = sqlx::query(&sql).bind(tenant);
                for v in numbers {
                    q = q.bind(v);
                }
                for t in texts {
                    q = q.bind(t);
                }
                let rows = q.fetch_all(&self.reader).await?;
                rows.iter().map(Self::audit).collect()
            }

            async fn get_audit(&self, tenant: &str, id: &str) -> StoreResult<Option<AuditRecord>> {
                let sql = format!("SELECT {AUDIT_COLUMNS} FROM audit_events WHERE tenant = $1 AND id = $2");
                let row = sqlx::query(&sql).bind(tenant).bind(id).fetch_optional(&self.reader).await?;
                row.as_ref().map(Self::audit).transpose()
            }
        }
    };
}

impl_store!(SqliteStore, sqlx::Sqlite, "./migrations/sqlite");
impl_store!(PostgresStore, sqlx::Postgres, "./migrations/postgres");
