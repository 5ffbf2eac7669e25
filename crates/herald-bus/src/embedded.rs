//! The embedded bus: a durable log in its own SQLite file, with the same contract as the
//! JetStream one. One consumer (the in-process matcher) reads it in order; unacked messages
//! come back after a restart; `nak`ed ones come back after their delay.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use herald_fhir::ChangeEvent;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::Row;
use tokio::sync::{broadcast, Notify};

use crate::{
    Acker, BusMessage, BusResult, ChangeEventBus, ChangeEventConsumer, ControlNotice, Published,
};

/// How long acked messages (and so their ids, for dedup) are kept.
const ACKED_RETENTION_MS: i64 = 24 * 3600 * 1000;

#[derive(Clone)]
pub struct EmbeddedBus {
    inner: Arc<Inner>,
}

struct Inner {
    pool: SqlitePool,
    published: Notify,
    /// Lowest sequence a consumer must look at again (after a nak), or i64::MAX.
    rewind: AtomicI64,
    notices: broadcast::Sender<ControlNotice>,
    subject_prefix: String,
}

impl std::fmt::Debug for EmbeddedBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EmbeddedBus")
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl EmbeddedBus {
    pub async fn open(path: &Path) -> BusResult<Self> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/embedded").run(&pool).await?;
        let (notices, _) = broadcast::channel(1024);
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                published: Notify::new(),
                rewind: AtomicI64::new(i64::MAX),
                notices,
                subject_prefix: "fhir.changes".into(),
            }),
        })
    }

    /// Dead-lettered messages with their reasons, oldest first (for operators and tests).
    pub async fn dead_letters(&self) -> BusResult<Vec<(String, Bytes, String)>> {
        let rows = sqlx::query("SELECT subject, payload, reason FROM bus_dead_letters ORDER BY id")
            .fetch_all(&self.inner.pool)
            .await?;
        rows.iter()
            .map(|r| {
                let payload: Vec<u8> = r.try_get("payload")?;
                Ok((
                    r.try_get("subject")?,
                    Bytes::from(payload),
                    r.try_get("reason")?,
                ))
            })
            .collect()
    }

    /// Publishes raw bytes, as an integration engine would; used by tests of poison input.
    pub async fn publish_raw(
        &self,
        subject: &str,
        msg_id: Option<&str>,
        payload: &[u8],
    ) -> BusResult<Published> {
        let mut connection = self.inner.pool.acquire().await?;
        let published = insert(&mut connection, subject, msg_id, payload).await?;
        drop(connection);
        self.wake_consumer();
        Ok(published)
    }

    fn wake_consumer(&self) {
        self.inner.published.notify_waiters();
        self.inner.published.notify_one();
    }

    /// Removes acked messages past retention.
    async fn prune(&self) -> BusResult<()> {
        sqlx::query("DELETE FROM bus_messages WHERE acked_at IS NOT NULL AND acked_at < $1")
            .bind(now_ms() - ACKED_RETENTION_MS)
            .execute(&self.inner.pool)
            .await?;
        Ok(())
    }
}

/// Appends one message to the log (a duplicate `msg_id` is dropped).
async fn insert(
    connection: &mut sqlx::SqliteConnection,
    subject: &str,
    msg_id: Option<&str>,
    payload: &[u8],
) -> BusResult<Published> {
    let done = sqlx::query(
        "INSERT INTO bus_messages (msg_id, subject, payload, published_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (msg_id) DO NOTHING RETURNING seq",
    )
    .bind(msg_id)
    .bind(subject)
    .bind(payload)
    .bind(now_ms())
    .fetch_optional(&mut *connection)
    .await?;
    Ok(match done {
        Some(row) => Published {
            duplicate: false,
            sequence: row.try_get::<i64, _>("seq")? as u64,
        },
        None => Published {
            duplicate: true,
            sequence: 0,
        },
    })
}

#[async_trait]
impl ChangeEventBus for EmbeddedBus {
    async fn publish(&self, event: &ChangeEvent) -> BusResult<Published> {
        let payload = serde_json::to_vec(event)?;
        self.publish_raw(
            &event.subject(&self.inner.subject_prefix),
            Some(&crate::msg_id(event)),
            &payload,
        )
        .await
    }

    /// One transaction for the whole batch: one durable commit instead of one per event,
    /// and one multi-row statement per few hundred events instead of a statement each.
    /// Sequences follow the order of `events`; an event whose message id is already on the
    /// bus (or earlier in `events`) is a duplicate.
    async fn publish_batch(&self, events: &[ChangeEvent]) -> BusResult<Vec<Published>> {
        /// Rows per INSERT: 4 parameters each, well inside SQLite's 32,766.
        const ROWS_PER_INSERT: usize = 500;
        let mut rows = Vec::with_capacity(events.len());
        for event in events {
            rows.push((
                crate::msg_id(event),
                event.subject(&self.inner.subject_prefix),
                serde_json::to_vec(event)?,
            ));
        }
        let now = now_ms();
        let mut sequences: HashMap<String, u64> = HashMap::with_capacity(rows.len());
        let mut tx = self.inner.pool.begin().await?;
        for chunk in rows.chunks(ROWS_PER_INSERT) {
            let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                "INSERT INTO bus_messages (msg_id, subject, payload, published_at) ",
            );
            q.push_values(chunk, |mut row, (msg_id, subject, payload)| {
                row.push_bind(msg_id)
                    .push_bind(subject)
                    .push_bind(payload.as_slice())
                    .push_bind(now);
            });
            q.push(" ON CONFLICT (msg_id) DO NOTHING RETURNING seq, msg_id");
            for row in q.build().fetch_all(&mut *tx).await? {
                sequences.insert(row.try_get("msg_id")?, row.try_get::<i64, _>("seq")? as u64);
            }
        }
        tx.commit().await?;
        self.wake_consumer();
        Ok(rows
            .iter()
            .map(|(msg_id, _, _)| match sequences.remove(msg_id) {
                Some(sequence) => Published {
                    duplicate: false,
                    sequence,
                },
                None => Published {
                    duplicate: true,
                    sequence: 0,
                },
            })
            .collect())
    }

    async fn consumer(&self) -> BusResult<Box<dyn ChangeEventConsumer>> {
        self.prune().await?;
        Ok(Box::new(EmbeddedConsumer {
            bus: self.clone(),
            cursor: 0,
            buffer: Default::default(),
            idle_rounds: 0,
        }))
    }

    async fn announce(&self, notice: ControlNotice) -> BusResult<()> {
        // No receivers is fine: nothing is listening yet.
        let _ = self.inner.notices.send(notice);
        Ok(())
    }

    fn notices(&self) -> broadcast::Receiver<ControlNotice> {
        self.inner.notices.subscribe()
    }

    async fn ping(&self) -> BusResult<()> {
        sqlx::query("SELECT 1").execute(&self.inner.pool).await?;
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "embedded"
    }
}

struct EmbeddedConsumer {
    bus: EmbeddedBus,
    /// Highest sequence handed out in this pass.
    cursor: i64,
    buffer: std::collections::VecDeque<BusMessage>,
    idle_rounds: u32,
}

impl EmbeddedConsumer {
    async fn fill(&mut self) -> BusResult<()> {
        let rewind = self.bus.inner.rewind.swap(i64::MAX, Ordering::AcqRel);
        if rewind != i64::MAX && rewind <= self.cursor {
            self.cursor = rewind - 1;
            self.buffer.clear();
        }
        let rows = sqlx::query(
            "SELECT seq, subject, payload, deliveries FROM bus_messages \
             WHERE acked_at IS NULL AND deliver_after <= $1 AND seq > $2 ORDER BY seq LIMIT 256",
        )
        .bind(now_ms())
        .bind(self.cursor)
        .fetch_all(&self.bus.inner.pool)
        .await?;
        for row in rows {
            let seq: i64 = row.try_get("seq")?;
            let payload: Vec<u8> = row.try_get("payload")?;
            let deliveries: i64 = row.try_get("deliveries")?;
            self.cursor = seq;
            self.buffer.push_back(BusMessage {
                subject: row.try_get("subject")?,
                payload: Bytes::from(payload),
                delivery_count: deliveries as u64 + 1,
                acker: Acker::Embedded(EmbeddedAcker {
                    bus: self.bus.clone(),
                    seq,
                }),
            });
        }
        Ok(())
    }
}

#[async_trait]
impl ChangeEventConsumer for EmbeddedConsumer {
    async fn next(&mut self, wait: Duration) -> BusResult<Option<BusMessage>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if self.bus.inner.rewind.load(Ordering::Acquire) <= self.cursor {
                self.fill().await?;
            }
            if let Some(message) = self.buffer.pop_front() {
                self.idle_rounds = 0;
                return Ok(Some(message));
            }
            let inner = Arc::clone(&self.bus.inner);
            let notified = inner.published.notified();
            self.fill().await?;
            if !self.buffer.is_empty() {
                continue;
            }
            // Nothing new: now and then rescan from the start for nak'ed messages now due.
            self.idle_rounds += 1;
            if self.idle_rounds % 4 == 0 {
                self.cursor = 0;
            }
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            if remaining.is_zero() {
                return Ok(None);
            }
            let _ = tokio::time::timeout(remaining.min(Duration::from_millis(250)), notified).await;
        }
    }
}

pub(crate) struct EmbeddedAcker {
    bus: EmbeddedBus,
    seq: i64,
}

impl EmbeddedAcker {
    pub(crate) async fn ack(self) -> BusResult<()> {
        sqlx::query("UPDATE bus_messages SET acked_at = $1 WHERE seq = $2")
            .bind(now_ms())
            .bind(self.seq)
            .execute(&self.bus.inner.pool)
            .await?;
        Ok(())
    }

    /// Marks several messages acked in one transaction.
    pub(crate) async fn ack_all(ackers: Vec<Self>) -> BusResult<()> {
        let Some(first) = ackers.first() else {
            return Ok(());
        };
        let pool = first.bus.inner.pool.clone();
        let now = now_ms();
        let mut tx = pool.begin().await?;
        for chunk in ackers.chunks(500) {
            let mut q =
                sqlx::QueryBuilder::<sqlx::Sqlite>::new("UPDATE bus_messages SET acked_at = ");
            q.push_bind(now).push(" WHERE seq IN (");
            let mut list = q.separated(", ");
            for acker in chunk {
                list.push_bind(acker.seq);
            }
            list.push_unseparated(")");
            q.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub(crate) async fn nak(self, delay: Duration) -> BusResult<()> {
        let delay_ms = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX / 2);
        sqlx::query("UPDATE bus_messages SET deliver_after = $1, deliveries = deliveries + 1 WHERE seq = $2")
            .bind(now_ms() + delay_ms)
            .bind(self.seq)
            .execute(&self.bus.inner.pool)
            .await?;
        self.bus.inner.rewind.fetch_min(self.seq, Ordering::AcqRel);
        Ok(())
    }

    pub(crate) async fn dead_letter(
        self,
        subject: &str,
        payload: &[u8],
        reason: &str,
    ) -> BusResult<()> {
        let mut tx = self.bus.inner.pool.begin().await?;
        sqlx::query(
            "INSERT INTO bus_dead_letters (subject, payload, reason, at) VALUES ($1, $2, $3, $4)",
        )
        .bind(subject)
        .bind(payload)
        .bind(reason)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE bus_messages SET acked_at = $1 WHERE seq = $2")
            .bind(now_ms())
            .bind(self.seq)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}
