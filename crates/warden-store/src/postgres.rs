//! The PostgreSQL backend, for several gateway replicas that share one
//! state.
//!
//! Every replica opens a connection pool to the same database. Tasks,
//! approvals, counters and checkpoints are rows that any replica reads and
//! writes in transactions, so a task started on one replica is usable on
//! another at once. Revocations and approval decisions are also announced
//! with `NOTIFY` in the transaction that makes them, and a listener in
//! every replica turns them into [`StoreEvent`]s ([`events`]).
//!
//! Audit records go through an asynchronous writer per replica
//! ([`writer`]) that commits batches (group commit). Each batch locks the
//! single row of `audit_head`, so batches of all replicas form one hash
//! chain without gaps or forks.
//!
//! When the database is unreachable, operations fail with
//! [`StoreError::Unavailable`] after the pool's acquire timeout. During an
//! outage one operation per [`PROBE_INTERVAL`] tries the database again and
//! the others fail at once, so callers deny quickly instead of waiting.
//! Queued audit records stay queued and are retried until the database
//! returns. Schema migrations are in [`schema`], and every other SQL
//! statement in [`sql`] and [`approval`].

mod approval;
mod events;
mod schema;
mod sql;
mod writer;

use std::collections::BTreeMap;
use std::str::FromStr as _;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use sqlx::ConnectOptions as _;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use tokio::sync::{OnceCell, broadcast};
use tokio::task::JoinHandle;
use tracing::info;

use self::approval::ApprovalDecision;
use self::schema::SchemaState;
use self::sql::{CheckpointInsert, DbError, TaskInsert};
use self::writer::{AuditWriter, BatchSettings};
use crate::check::check_new_approval;
use crate::lost::LostRecords;
use crate::{
    ApprovalRecord, ApprovalStatus, AuditObserver, AuditRecord, Checkpoint, NewAuditRecord, Store,
    StoreError, StoreEvent, TaskRecord, TraceSummary,
};

/// Time during an outage between two operations that try the database;
/// operations in between fail at once.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(500);

/// Capacity of the event channel of one store. A subscriber that falls
/// further behind receives `Lagged` and resynchronises.
const EVENT_CAPACITY: usize = 1024;

/// Tuning of a [`PostgresStore`]. `PostgresOptions::default()` suits a
/// gateway replica.
#[derive(Clone)]
pub struct PostgresOptions {
    /// Capacity of the audit queue, in records; appends beyond it are
    /// dropped and counted. Default 65536.
    pub queue_capacity: usize,
    /// Maximum number of audit records committed in one transaction.
    /// Default 1024.
    pub batch_max_records: usize,
    /// Time the audit writer keeps gathering records after the first
    /// record of a batch arrives. Default 5 ms.
    pub batch_window: Duration,
    /// Maximum number of connections in the pool, the event listener's
    /// included. Default 10.
    pub max_connections: u32,
    /// Time an operation waits for a connection, including connecting,
    /// before it fails. Default 2 s.
    pub acquire_timeout: Duration,
    /// Receiver of committed audit records and stored checkpoints. It is
    /// called on the audit writer's task, and by the caller of
    /// [`Store::insert_checkpoint`]. Default none.
    pub observer: Option<Arc<dyn AuditObserver>>,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions {
            queue_capacity: 65_536,
            batch_max_records: 1024,
            batch_window: Duration::from_millis(5),
            max_connections: 10,
            acquire_timeout: Duration::from_secs(2),
            observer: None,
        }
    }
}

impl std::fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresOptions")
            .field("queue_capacity", &self.queue_capacity)
            .field("batch_max_records", &self.batch_max_records)
            .field("batch_window", &self.batch_window)
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("observer", &self.observer.as_ref().map(|_| "AuditObserver"))
            .finish()
    }
}

/// A [`Store`] in a PostgreSQL database that several gateway replicas
/// share.
///
/// Open it with [`PostgresStore::connect`] inside a Tokio runtime: the
/// audit writer and the event listener run as tasks on that runtime.
/// Dropping the store stops the listener; the writer commits what is
/// queued and then stops, as long as the runtime runs. Call
/// [`Store::close`] to wait for that.
pub struct PostgresStore {
    db: Arc<Db>,
    /// The audit writer, absent in a read-only store.
    audit: Option<AuditWriter>,
    lost: Arc<LostRecords>,
    observer: Option<Arc<dyn AuditObserver>>,
    /// The sending side of [`Store::events`], absent in a read-only store.
    events: Option<broadcast::Sender<StoreEvent>>,
    listener: Option<JoinHandle<()>>,
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        if let Some(listener) = &self.listener {
            listener.abort();
        }
    }
}

impl PostgresStore {
    /// Connects to the database at `url`, applies the schema migrations it
    /// lacks, and starts the audit writer and the event listener.
    ///
    /// Fails when the URL is invalid, the database cannot be reached, or
    /// its schema is newer than this build. Error messages and logs show
    /// the URL without its password.
    pub async fn connect(
        url: &str,
        options: &PostgresOptions,
    ) -> Result<PostgresStore, StoreError> {
        let label = store_label(url);
        let pool = pool_options(options)
            .connect_with(connect_options(url, &label)?)
            .await
            .map_err(|source| StoreError::Connect {
                store: label.clone(),
                source: Box::new(source),
            })?;
        match schema::migrate(&pool).await {
            Ok(SchemaState::Current) => {}
            Ok(SchemaState::Newer(found)) => {
                return Err(StoreError::SchemaVersion {
                    store: label,
                    found,
                    expected: schema::SCHEMA_VERSION,
                    fix: "upgrade Warden on every replica, or set [store] url to another database",
                });
            }
            Ok(SchemaState::Older(found)) => {
                return Err(StoreError::SchemaVersion {
                    store: label,
                    found,
                    expected: schema::SCHEMA_VERSION,
                    fix: "the migration did not complete; restart Warden",
                });
            }
            Err((version, source)) => {
                return Err(StoreError::MigrateDatabase {
                    store: label,
                    version,
                    source: Box::new(source),
                });
            }
        }

        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        let listener = events::start_listener(pool.clone(), events.clone(), label.clone())
            .await
            .map_err(|source| StoreError::Connect {
                store: label.clone(),
                source: Box::new(source),
            })?;
        let lost = Arc::new(LostRecords::new());
        let audit = AuditWriter::start(
            pool.clone(),
            options.queue_capacity,
            BatchSettings {
                max_records: options.batch_max_records.max(1),
                window: options.batch_window,
            },
            label.clone(),
            Arc::clone(&lost),
            options.observer.clone(),
        );

        info!(store = %label, schema.version = schema::SCHEMA_VERSION, "store opened");
        Ok(PostgresStore {
            db: Arc::new(Db::new(pool, label, false)),
            audit: Some(audit),
            lost,
            observer: options.observer.clone(),
            events: Some(events),
            listener: Some(listener),
        })
    }

    /// Opens the database at `url` for reading only, for CLI readers while
    /// gateways run on it. It connects on the first operation, migrates
    /// nothing and starts no writer: writes fail with
    /// [`StoreError::ReadOnly`], appended records are counted as lost, and
    /// reads fail with [`StoreError::SchemaVersion`] when the schema is not
    /// the one this build uses.
    pub fn open_read_only(url: &str) -> Result<PostgresStore, StoreError> {
        let label = store_label(url);
        let options = PostgresOptions {
            max_connections: 2,
            acquire_timeout: Duration::from_secs(5),
            ..PostgresOptions::default()
        };
        let pool = pool_options(&options).connect_lazy_with(connect_options(url, &label)?);
        Ok(PostgresStore {
            db: Arc::new(Db::new(pool, label, true)),
            audit: None,
            lost: Arc::new(LostRecords::new()),
            observer: None,
            events: None,
            listener: None,
        })
    }

    /// Returns the description of the store used in messages and logs,
    /// e.g. `PostgreSQL store at postgres://warden@db:5432/warden`.
    pub fn label(&self) -> &str {
        &self.db.label
    }

    /// Fails with [`StoreError::Unstorable`] when a text field of
    /// `approval` contains NUL.
    fn check_approval_text(&self, approval: &ApprovalRecord) -> Result<(), StoreError> {
        let Some(field) = sql::nul_field_of_approval(approval) else {
            return Ok(());
        };
        Err(StoreError::Unstorable {
            store: self.db.label.clone(),
            value: format!("approval {:?}", approval.approval_id),
            message: format!(
                "its {field} contains a NUL character, which PostgreSQL text cannot hold; remove it"
            ),
        })
    }

    /// Fails with [`StoreError::ReadOnly`] in a read-only store.
    fn writable(&self, operation: impl FnOnce() -> String) -> Result<(), StoreError> {
        if self.db.read_only {
            return Err(StoreError::ReadOnly {
                store: self.db.label.clone(),
                operation: operation(),
            });
        }
        Ok(())
    }
}

/// Returns `url` without its password and query, for messages and logs;
/// a URL that does not parse is not shown at all.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            // Setting these fails only for URLs that cannot have them, and
            // then there is nothing to remove.
            parsed.set_password(None).ok();
            parsed.set_query(None);
            parsed.set_fragment(None);
            parsed.to_string()
        }
        Err(_) => "(an invalid URL)".to_owned(),
    }
}

fn store_label(url: &str) -> String {
    format!("PostgreSQL store at {}", redact_url(url))
}

fn connect_options(url: &str, label: &str) -> Result<PgConnectOptions, StoreError> {
    let options = PgConnectOptions::from_str(url).map_err(|source| StoreError::Connect {
        store: label.to_owned(),
        source: Box::new(source),
    })?;
    Ok(options
        .application_name("warden")
        .disable_statement_logging())
}

fn pool_options(options: &PostgresOptions) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(options.max_connections.max(2))
        .min_connections(0)
        .acquire_timeout(options.acquire_timeout)
        .test_before_acquire(true)
}

/// The pool of one store, its description and its outage state.
struct Db {
    pool: PgPool,
    /// `PostgreSQL store at {url without password}`.
    label: String,
    read_only: bool,
    /// Set once a read-only store found the schema it reads.
    schema_checked: OnceCell<()>,
    /// Start of the last attempt to reach the database during an outage,
    /// and the error that started the outage; `None` while it is reachable.
    outage: Mutex<Option<(Instant, String)>>,
}

impl Db {
    fn new(pool: PgPool, label: String, read_only: bool) -> Db {
        Db {
            pool,
            label,
            read_only,
            schema_checked: OnceCell::new(),
            outage: Mutex::new(None),
        }
    }

    /// Fails at once during an outage, unless this operation is due to try
    /// the database again; in a read-only store, checks the schema first.
    async fn ready(&self, operation: impl FnOnce() -> String) -> Result<(), StoreError> {
        {
            let mut outage = self.outage.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some((last_attempt, message)) = outage.as_mut() {
                if last_attempt.elapsed() < PROBE_INTERVAL {
                    return Err(StoreError::Unavailable {
                        store: self.label.clone(),
                        operation: operation(),
                        source: message.clone().into(),
                    });
                }
                *last_attempt = Instant::now();
            }
        }
        if self.read_only {
            self.schema_checked
                .get_or_try_init(|| async {
                    let found = schema::version(&self.pool).await;
                    let found = self.settle(found, || "read the schema version".to_owned())?;
                    if found != schema::SCHEMA_VERSION {
                        return Err(StoreError::SchemaVersion {
                            store: self.label.clone(),
                            found,
                            expected: schema::SCHEMA_VERSION,
                            fix: if found < schema::SCHEMA_VERSION {
                                "start the gateway once with this [store] url to migrate the database"
                            } else {
                                "upgrade this Warden to the version the gateways run"
                            },
                        });
                    }
                    Ok(())
                })
                .await?;
        }
        Ok(())
    }

    /// Converts the result of an operation, and starts or ends an outage
    /// by whether the database was reachable.
    fn settle<T>(
        &self,
        result: Result<T, DbError>,
        operation: impl FnOnce() -> String,
    ) -> Result<T, StoreError> {
        match result {
            Ok(value) => {
                self.set_reachable();
                Ok(value)
            }
            Err(error) => {
                let unreachable = error.is_connection_error();
                let error = error.into_store_error(&self.label, operation());
                if unreachable {
                    self.set_unreachable(&error);
                } else {
                    self.set_reachable();
                }
                Err(error)
            }
        }
    }

    fn set_reachable(&self) {
        let mut outage = self.outage.lock().unwrap_or_else(PoisonError::into_inner);
        if outage.take().is_some() {
            info!(store = %self.label, "database reachable again");
        }
    }

    fn set_unreachable(&self, error: &StoreError) {
        let mut outage = self.outage.lock().unwrap_or_else(PoisonError::into_inner);
        if outage.is_none() {
            tracing::error!(store = %self.label, %error, "database unreachable; store operations fail until it returns");
        }
        let message = match error {
            StoreError::Unavailable { source, .. } => source.to_string(),
            other => other.to_string(),
        };
        *outage = Some((Instant::now(), message));
    }
}

#[async_trait::async_trait]
impl Store for PostgresStore {
    async fn insert_task(&self, task: &TaskRecord) -> Result<(), StoreError> {
        let operation = || format!("insert task {:?}", task.task_id);
        self.writable(operation)?;
        if let Some(field) = sql::nul_field_of_task(task) {
            return Err(StoreError::Unstorable {
                store: self.db.label.clone(),
                value: format!("task {:?}", task.task_id),
                message: format!(
                    "its {field} contains a NUL character, which PostgreSQL text cannot hold; remove it"
                ),
            });
        }
        self.db.ready(operation).await?;
        let outcome = sql::insert_task(&self.db.pool, task).await;
        let parent_task_id = || task.parent_task_id.clone().unwrap_or_default();
        match self.db.settle(outcome, operation)? {
            TaskInsert::Inserted => Ok(()),
            TaskInsert::Exists => Err(StoreError::TaskExists {
                task_id: task.task_id.clone(),
            }),
            TaskInsert::ParentNotFound => Err(StoreError::ParentNotFound {
                task_id: task.task_id.clone(),
                parent_task_id: parent_task_id(),
            }),
            TaskInsert::ParentRevoked { revoked_at } => Err(StoreError::ParentRevoked {
                task_id: task.task_id.clone(),
                parent_task_id: parent_task_id(),
                revoked_at,
            }),
        }
    }

    async fn task(&self, task_id: &str) -> Result<Option<TaskRecord>, StoreError> {
        let operation = || format!("load task {task_id:?}");
        self.db.ready(operation).await?;
        let result = sql::select_task(&self.db.pool, task_id).await;
        self.db.settle(result, operation)
    }

    async fn revoke_task(&self, task_id: &str, at: i64) -> Result<Vec<String>, StoreError> {
        let operation = || format!("revoke task {task_id:?}");
        self.writable(operation)?;
        self.db.ready(operation).await?;
        let result = sql::revoke_task(&self.db.pool, task_id, at).await;
        let revoked = self.db.settle(result, operation)?;
        if !revoked.is_empty() {
            info!(
                store = %self.db.label,
                task.id = %task_id,
                tasks.revoked = revoked.len(),
                "tasks revoked"
            );
        }
        Ok(revoked)
    }

    async fn tasks(&self, limit: usize) -> Result<Vec<TaskRecord>, StoreError> {
        let operation = || "list tasks".to_owned();
        self.db.ready(operation).await?;
        let result = sql::select_tasks(&self.db.pool, limit).await;
        self.db.settle(result, operation)
    }

    fn append(&self, record: NewAuditRecord) {
        match &self.audit {
            Some(audit) => audit.append(record),
            None => self.lost.add(1, &self.db.label, "store is open read-only"),
        }
    }

    async fn flush(&self) -> Result<(), StoreError> {
        match &self.audit {
            Some(audit) => audit.flush().await,
            // A read-only store queues nothing, so there is nothing to wait for.
            None => Ok(()),
        }
    }

    async fn trace(&self, trace_id: &str) -> Result<Vec<AuditRecord>, StoreError> {
        let operation = || format!("load trace {trace_id:?}");
        self.db.ready(operation).await?;
        let result = sql::select_trace(&self.db.pool, trace_id).await;
        self.db.settle(result, operation)
    }

    async fn traces(&self, limit: usize) -> Result<Vec<TraceSummary>, StoreError> {
        let operation = || "list traces".to_owned();
        self.db.ready(operation).await?;
        let result = sql::select_traces(&self.db.pool, limit).await;
        self.db.settle(result, operation)
    }

    async fn audit_range(
        &self,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let operation = || format!("load audit records after seq {after_seq}");
        self.db.ready(operation).await?;
        let result = sql::select_audit_range(&self.db.pool, after_seq, limit).await;
        self.db.settle(result, operation)
    }

    async fn insert_approval(&self, approval: &ApprovalRecord) -> Result<(), StoreError> {
        let operation = || format!("insert approval {:?}", approval.approval_id);
        self.writable(operation)?;
        check_new_approval(approval)?;
        self.check_approval_text(approval)?;
        self.db.ready(operation).await?;
        let result = approval::insert_approval(&self.db.pool, approval).await;
        if self.db.settle(result, operation)? {
            Ok(())
        } else {
            Err(StoreError::ApprovalExists {
                approval_id: approval.approval_id.clone(),
            })
        }
    }

    async fn approval(
        &self,
        approval_id: &str,
        now: i64,
    ) -> Result<Option<ApprovalRecord>, StoreError> {
        let operation = || format!("load approval {approval_id:?}");
        self.db.ready(operation).await?;
        let result = approval::select_approval(&self.db.pool, approval_id, now).await;
        self.db.settle(result, operation)
    }

    async fn approvals(
        &self,
        status: Option<ApprovalStatus>,
        limit: usize,
        now: i64,
    ) -> Result<Vec<ApprovalRecord>, StoreError> {
        let operation = || match status {
            Some(status) => format!("list {status} approvals"),
            None => "list approvals".to_owned(),
        };
        self.db.ready(operation).await?;
        let result = approval::select_approvals(&self.db.pool, status, limit, now).await;
        self.db.settle(result, operation)
    }

    async fn open_approval(
        &self,
        approval: &ApprovalRecord,
        now: i64,
    ) -> Result<(ApprovalRecord, bool), StoreError> {
        let operation = || {
            format!(
                "open approval of {:?} in task {:?}",
                approval.tool, approval.task_id
            )
        };
        self.writable(operation)?;
        check_new_approval(approval)?;
        self.check_approval_text(approval)?;
        self.db.ready(operation).await?;
        let result = approval::open_approval(&self.db.pool, approval, now).await;
        self.db.settle(result, operation)
    }

    async fn find_approval(
        &self,
        task_id: &str,
        tool: &str,
        arguments_hash: &str,
        now: i64,
    ) -> Result<Option<ApprovalRecord>, StoreError> {
        let operation = || format!("find approval of {tool:?} in task {task_id:?}");
        self.db.ready(operation).await?;
        let result =
            approval::find_approval(&self.db.pool, task_id, tool, arguments_hash, now).await;
        self.db.settle(result, operation)
    }

    async fn decide_approval(
        &self,
        approval_id: &str,
        approve: bool,
        decided_by: &str,
        reason: Option<&str>,
        now: i64,
    ) -> Result<ApprovalRecord, StoreError> {
        let operation = || format!("decide approval {approval_id:?}");
        self.writable(operation)?;
        if let Some(field) =
            sql::nul_field(&[("approver", decided_by), ("reason", reason.unwrap_or(""))])
        {
            return Err(StoreError::Unstorable {
                store: self.db.label.clone(),
                value: format!("the decision on approval {approval_id:?}"),
                message: format!(
                    "its {field} contains a NUL character, which PostgreSQL text cannot hold; remove it"
                ),
            });
        }
        self.db.ready(operation).await?;
        let result =
            approval::decide_approval(&self.db.pool, approval_id, approve, decided_by, reason, now)
                .await;
        match self.db.settle(result, operation)? {
            ApprovalDecision::Decided(approval) => {
                info!(
                    store = %self.db.label,
                    approval.id = %approval.approval_id,
                    approval.status = %approval.status,
                    task.id = %approval.task_id,
                    tool.name = %approval.tool,
                    "approval decided"
                );
                Ok(*approval)
            }
            ApprovalDecision::NotFound => Err(StoreError::ApprovalNotFound {
                approval_id: approval_id.to_owned(),
            }),
            ApprovalDecision::Conflict { status, changed_at } => {
                Err(StoreError::ApprovalConflict {
                    approval_id: approval_id.to_owned(),
                    status,
                    changed_at,
                })
            }
        }
    }

    async fn consume_approval(&self, approval_id: &str, now: i64) -> Result<bool, StoreError> {
        let operation = || format!("consume approval {approval_id:?}");
        self.writable(operation)?;
        self.db.ready(operation).await?;
        let result = approval::consume_approval(&self.db.pool, approval_id, now).await;
        self.db.settle(result, operation)
    }

    async fn audit_head(&self) -> Result<Option<(i64, String)>, StoreError> {
        let operation = || "load the audit head".to_owned();
        self.db.ready(operation).await?;
        let result = sql::select_audit_head(&self.db.pool).await;
        self.db.settle(result, operation)
    }

    async fn insert_checkpoint(&self, checkpoint: &Checkpoint) -> Result<(), StoreError> {
        let operation = || format!("insert checkpoint of seq {}", checkpoint.seq);
        self.writable(operation)?;
        self.db.ready(operation).await?;
        let result = sql::insert_checkpoint(&self.db.pool, checkpoint).await;
        let invalid = |message: String| StoreError::InvalidCheckpoint {
            seq: checkpoint.seq,
            message,
        };
        match self.db.settle(result, operation)? {
            CheckpointInsert::Inserted => {
                tracing::debug!(
                    store = %self.db.label,
                    audit.seq = checkpoint.seq,
                    "audit checkpoint stored"
                );
                if let Some(observer) = &self.observer {
                    observer.checkpointed(checkpoint);
                }
                Ok(())
            }
            CheckpointInsert::Exists => Ok(()),
            CheckpointInsert::NoRecord => Err(invalid(format!(
                "no audit record has seq {}; checkpoint a seq that Store::audit_head returned",
                checkpoint.seq
            ))),
            CheckpointInsert::HashMismatch { stored } => Err(invalid(format!(
                "the audit record at seq {} has hash {stored}, not {}; the chain changed since the head was read, so run `warden audit verify`",
                checkpoint.seq, checkpoint.hash
            ))),
        }
    }

    async fn checkpoints(&self) -> Result<Vec<Checkpoint>, StoreError> {
        let operation = || "load checkpoints".to_owned();
        self.db.ready(operation).await?;
        let result = sql::select_checkpoints(&self.db.pool).await;
        self.db.settle(result, operation)
    }

    async fn add_counters(
        &self,
        scope: &str,
        deltas: &[(&str, i64)],
    ) -> Result<BTreeMap<String, i64>, StoreError> {
        let operation = || format!("add to counters of {scope:?}");
        self.writable(operation)?;
        let names = deltas.iter().map(|(name, _)| ("counter name", *name));
        if let Some(field) = sql::nul_field(&[("scope", scope)]).or_else(|| {
            names
                .filter(|(_, name)| name.contains('\0'))
                .map(|(field, _)| field)
                .next()
        }) {
            return Err(StoreError::Unstorable {
                store: self.db.label.clone(),
                value: format!("counters of {scope:?}"),
                message: format!(
                    "a {field} contains a NUL character, which PostgreSQL text cannot hold; remove it"
                ),
            });
        }
        self.db.ready(operation).await?;
        let result = sql::add_counters(&self.db.pool, scope, deltas).await;
        self.db.settle(result, operation)
    }

    async fn counters(&self, scope: &str) -> Result<BTreeMap<String, i64>, StoreError> {
        let operation = || format!("load counters of {scope:?}");
        self.db.ready(operation).await?;
        let result = sql::select_counters(&self.db.pool, scope).await;
        self.db.settle(result, operation)
    }

    async fn tool_pins(&self) -> Result<Vec<crate::ToolPin>, StoreError> {
        let operation = || "load tool pins".to_owned();
        self.db.ready(operation).await?;
        let result = sql::select_tool_pins(&self.db.pool).await;
        self.db.settle(result, operation)
    }

    async fn save_tool_pin(&self, pin: &crate::ToolPin) -> Result<(), StoreError> {
        let operation = || format!("save the pin of {}", pin.tool);
        self.writable(operation)?;
        // Definitions are stored as JSON text, where a NUL is an escape;
        // only the plain text columns can hold a raw one.
        let nul = [pin.tool.as_str()]
            .into_iter()
            .chain(pin.pending_reason.as_deref())
            .chain(pin.accepted_by.as_deref())
            .any(|text| text.contains('\0'));
        if nul {
            return Err(StoreError::Unstorable {
                store: self.db.label.clone(),
                value: format!("the pin of {}", pin.tool),
                message: "it contains a NUL character, which PostgreSQL text cannot hold".into(),
            });
        }
        self.db.ready(operation).await?;
        let result = sql::save_tool_pin(&self.db.pool, pin).await;
        self.db.settle(result, operation)
    }

    fn events(&self) -> Option<broadcast::Receiver<StoreEvent>> {
        self.events.as_ref().map(broadcast::Sender::subscribe)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        if let Some(audit) = &self.audit {
            if !audit.is_running() {
                return Err(audit.stopped());
            }
            if let Some(message) = audit.failure() {
                return Err(StoreError::Unavailable {
                    store: self.db.label.clone(),
                    operation: "commit audit records".to_owned(),
                    source: message.into(),
                });
            }
        }
        let operation = || "ping".to_owned();
        self.db.ready(operation).await?;
        let result = sql::ping(&self.db.pool).await;
        self.db.settle(result, operation)
    }

    fn dropped_records(&self) -> u64 {
        self.lost.total()
    }

    async fn close(&self) -> Result<(), StoreError> {
        if let Some(listener) = &self.listener {
            listener.abort();
        }
        match &self.audit {
            Some(audit) => audit.close().await,
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_url_drops_password_and_query() {
        let redacted = redact_url("postgres://warden:hunter2@db.internal:5432/warden?password=x");

        assert_eq!(redacted, "postgres://warden@db.internal:5432/warden");
    }

    #[test]
    fn redact_url_hides_invalid_url() {
        assert_eq!(redact_url("not a url hunter2"), "(an invalid URL)");
    }

    #[tokio::test]
    async fn connect_failure_hides_password() {
        let options = PostgresOptions {
            acquire_timeout: Duration::from_millis(200),
            ..PostgresOptions::default()
        };

        let error =
            PostgresStore::connect("postgres://warden:hunter2@127.0.0.1:1/warden", &options)
                .await
                .err()
                .expect("nothing listens on port 1");

        let message = error.to_string();
        assert!(matches!(error, StoreError::Connect { .. }), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
        assert!(
            message.contains("postgres://warden@127.0.0.1:1/warden"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn read_only_store_rejects_writes_without_connecting() {
        let store = PostgresStore::open_read_only("postgres://warden@127.0.0.1:1/warden")
            .expect("open lazily");

        let error = store
            .revoke_task("task-1", 1_000)
            .await
            .expect_err("read-only");

        assert!(matches!(error, StoreError::ReadOnly { .. }), "{error}");
        assert_eq!(store.events().map(|_| ()), None);
    }
}
