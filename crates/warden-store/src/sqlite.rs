//! The embedded SQLite backend.
//!
//! One database file in WAL mode with `synchronous=NORMAL`: commits reach
//! the WAL without an fsync, and a checkpoint syncs them later. A crash of
//! the process loses nothing committed, but a power loss can lose the last
//! commits. Task and approval writes go through one mutex-guarded
//! connection, reads
//! through a small pool of read-only connections (WAL lets them run beside
//! a writer), and audit records through the writer thread in
//! [`writer`]. Every SQL statement lives in [`sql`].
//!
//! An [`AuditObserver`] set in [`SqliteOptions`] receives each committed
//! batch of audit records and each stored checkpoint.

mod sql;
mod writer;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tracing::info;

use self::sql::{
    ApprovalDecision, ApprovalInsert, CheckpointInsert, DbError, SchemaState, TaskInsert,
};
use self::writer::{AuditQueue, BatchSettings};
use crate::check::check_new_approval;
use crate::lost::LostRecords;
use crate::{
    ApprovalRecord, ApprovalStatus, AuditObserver, AuditRecord, Checkpoint, NewAuditRecord, Store,
    StoreError, TaskRecord, TraceSummary,
};

/// Tuning of a [`SqliteStore`]. `SqliteOptions::default()` suits a single
/// gateway.
#[derive(Clone)]
pub struct SqliteOptions {
    /// Capacity of the audit queue, in records; appends beyond it are
    /// dropped and counted. Default 65536.
    pub queue_capacity: usize,
    /// Maximum number of audit records committed in one transaction.
    /// Default 1024.
    pub batch_max_records: usize,
    /// Time the audit writer keeps gathering records after the first
    /// record of a batch arrives. Default 5 ms.
    pub batch_window: Duration,
    /// Time a statement waits for a lock held by another connection
    /// before it fails. Default 5 s.
    pub busy_timeout: Duration,
    /// Number of read connections. Default 4.
    pub read_connections: usize,
    /// Waits between the commit attempts of one audit batch; after the
    /// last attempt fails the batch is dropped and counted. Default 20 ms,
    /// 200 ms, 1 s, 2 s, 5 s, 10 s and 10 s: about half a minute in all,
    /// so a lock held by a backup or another process loses no record,
    /// while new records wait in the queue.
    pub commit_retry_delays: Vec<Duration>,
    /// Receiver of committed audit records and stored checkpoints. It is
    /// called on the audit writer's thread, and by the caller of
    /// [`Store::insert_checkpoint`]. Default none.
    pub observer: Option<Arc<dyn AuditObserver>>,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            queue_capacity: 65_536,
            batch_max_records: 1024,
            batch_window: Duration::from_millis(5),
            busy_timeout: Duration::from_secs(5),
            read_connections: 4,
            commit_retry_delays: [20, 200, 1_000, 2_000, 5_000, 10_000, 10_000]
                .into_iter()
                .map(Duration::from_millis)
                .collect(),
            observer: None,
        }
    }
}

impl std::fmt::Debug for SqliteOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteOptions")
            .field("queue_capacity", &self.queue_capacity)
            .field("batch_max_records", &self.batch_max_records)
            .field("batch_window", &self.batch_window)
            .field("busy_timeout", &self.busy_timeout)
            .field("read_connections", &self.read_connections)
            .field("commit_retry_delays", &self.commit_retry_delays)
            .field("observer", &self.observer.as_ref().map(|_| "AuditObserver"))
            .finish()
    }
}

/// A [`Store`] kept in one SQLite database file.
///
/// Dropping the store commits the queued audit records and joins the
/// writer thread. That blocks the dropping thread until the last commit
/// ends, so async callers should call [`Store::close`] first.
pub struct SqliteStore {
    db: Arc<Database>,
    /// The audit writer, absent in a read-only store.
    audit: Option<AuditQueue>,
    lost: Arc<LostRecords>,
    observer: Option<Arc<dyn AuditObserver>>,
}

impl SqliteStore {
    /// Opens the store at `path` for reading and writing with default
    /// options; see [`SqliteStore::open_with_options`].
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        SqliteStore::open_with_options(path, &SqliteOptions::default())
    }

    /// Opens the store at `path` for reading and writing, creating the file
    /// and its parent directories when missing, migrating the schema and
    /// starting the audit writer.
    ///
    /// On Unix a new directory gets mode 0700 and a new file mode 0600,
    /// because the audit log names users, agents and tools.
    pub fn open_with_options(
        path: &Path,
        options: &SqliteOptions,
    ) -> Result<SqliteStore, StoreError> {
        create_parent(path)?;
        create_private_file(path)?;

        let mut task_conn = open_connection(path, OpenMode::ReadWrite, options)?;
        match sql::migrate(&mut task_conn) {
            Ok(SchemaState::Current | SchemaState::Older(_)) => {}
            Ok(SchemaState::Newer(found)) => return Err(newer_schema(path, found)),
            Err((version, source)) => {
                return Err(StoreError::Migrate {
                    path: path.to_owned(),
                    version,
                    source: Box::new(source),
                });
            }
        }

        let audit_conn = open_connection(path, OpenMode::ReadWrite, options)?;
        let readers = open_readers(path, options)?;
        let db = Arc::new(Database::new(path, Some(task_conn), readers));
        let lost = Arc::new(LostRecords::new());
        let settings = BatchSettings {
            max_records: options.batch_max_records.max(1),
            window: options.batch_window,
            retry_delays: options.commit_retry_delays.clone(),
        };
        let audit = AuditQueue::start(
            audit_conn,
            options.queue_capacity,
            settings,
            db.label.clone(),
            Arc::clone(&lost),
            options.observer.clone(),
        )
        .map_err(|source| StoreError::Open {
            path: path.to_owned(),
            source: format!("cannot start the audit writer thread: {source}").into(),
        })?;

        info!(store = %db.label, schema.version = sql::SCHEMA_VERSION, "store opened");
        Ok(SqliteStore {
            db,
            audit: Some(audit),
            lost,
            observer: options.observer.clone(),
        })
    }

    /// Opens an existing store at `path` for reading only, for CLI readers
    /// while a gateway runs on the same file. It starts no audit writer:
    /// writes fail with [`StoreError::ReadOnly`] and appended records are
    /// counted as lost.
    pub fn open_read_only(path: &Path) -> Result<SqliteStore, StoreError> {
        if !path.is_file() {
            return Err(StoreError::NotFound {
                path: path.to_owned(),
            });
        }
        let options = SqliteOptions {
            read_connections: 2,
            ..SqliteOptions::default()
        };
        let readers = open_readers(path, &options)?;
        let state = readers
            .first()
            .map(sql::schema_state)
            .transpose()
            .map_err(|source| StoreError::Open {
                path: path.to_owned(),
                source: Box::new(source),
            })?;
        match state {
            Some(SchemaState::Current) | None => {}
            Some(SchemaState::Newer(found)) => return Err(newer_schema(path, found)),
            Some(SchemaState::Older(found)) => {
                return Err(StoreError::OutdatedSchema {
                    path: path.to_owned(),
                    found,
                    expected: sql::SCHEMA_VERSION,
                });
            }
        }

        Ok(SqliteStore {
            db: Arc::new(Database::new(path, None, readers)),
            audit: None,
            lost: Arc::new(LostRecords::new()),
            observer: None,
        })
    }

    /// Returns the path of the database file.
    pub fn path(&self) -> &Path {
        &self.db.path
    }

    /// Runs `query` on a read connection on the blocking thread pool.
    async fn read<T, F>(&self, operation: String, query: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, DbError> + Send + 'static,
    {
        let db = Arc::clone(&self.db);
        let label = self.db.label.clone();
        let job_operation = operation.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let conn = db.reader();
            query(&conn).map_err(|error| error.into_store_error(&db.label, job_operation))
        })
        .await;
        joined.map_err(|error| interrupted(label, operation, &error))?
    }

    /// Runs `statement` on the task write connection on the blocking thread
    /// pool.
    async fn write<T, F>(&self, operation: String, statement: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, DbError> + Send + 'static,
    {
        let db = Arc::clone(&self.db);
        let label = self.db.label.clone();
        let job_operation = operation.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let Some(writer) = &db.writer else {
                return Err(StoreError::ReadOnly {
                    store: db.label.clone(),
                    operation: job_operation,
                });
            };
            let mut conn = lock(writer);
            statement(&mut conn).map_err(|error| error.into_store_error(&db.label, job_operation))
        })
        .await;
        joined.map_err(|error| interrupted(label, operation, &error))?
    }
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn insert_task(&self, task: &TaskRecord) -> Result<(), StoreError> {
        let owned = task.clone();
        let outcome = self
            .write(format!("insert task {:?}", task.task_id), move |conn| {
                sql::insert_task(conn, &owned)
            })
            .await?;
        let parent_task_id = || task.parent_task_id.clone().unwrap_or_default();
        match outcome {
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
        let id = task_id.to_owned();
        self.read(format!("load task {task_id:?}"), move |conn| {
            sql::select_task(conn, &id)
        })
        .await
    }

    async fn revoke_task(&self, task_id: &str, at: i64) -> Result<Vec<String>, StoreError> {
        let id = task_id.to_owned();
        let revoked = self
            .write(format!("revoke task {task_id:?}"), move |conn| {
                sql::revoke_task(conn, &id, at)
            })
            .await?;
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
        self.read("list tasks".into(), move |conn| {
            sql::select_tasks(conn, limit)
        })
        .await
    }

    async fn insert_approval(&self, approval: &ApprovalRecord) -> Result<(), StoreError> {
        check_new_approval(approval)?;
        let owned = approval.clone();
        let outcome = self
            .write(
                format!("insert approval {:?}", approval.approval_id),
                move |conn| sql::insert_approval(conn, &owned),
            )
            .await?;
        match outcome {
            ApprovalInsert::Inserted => Ok(()),
            ApprovalInsert::Exists => Err(StoreError::ApprovalExists {
                approval_id: approval.approval_id.clone(),
            }),
        }
    }

    async fn approval(
        &self,
        approval_id: &str,
        now: i64,
    ) -> Result<Option<ApprovalRecord>, StoreError> {
        let id = approval_id.to_owned();
        self.read(format!("load approval {approval_id:?}"), move |conn| {
            sql::select_approval(conn, &id, now)
        })
        .await
    }

    async fn approvals(
        &self,
        status: Option<ApprovalStatus>,
        limit: usize,
        now: i64,
    ) -> Result<Vec<ApprovalRecord>, StoreError> {
        let operation = match status {
            Some(status) => format!("list {status} approvals"),
            None => "list approvals".to_owned(),
        };
        self.read(operation, move |conn| {
            sql::select_approvals(conn, status, limit, now)
        })
        .await
    }

    async fn open_approval(
        &self,
        approval: &ApprovalRecord,
        now: i64,
    ) -> Result<(ApprovalRecord, bool), StoreError> {
        check_new_approval(approval)?;
        let owned = approval.clone();
        self.write(
            format!(
                "open approval of {:?} in task {:?}",
                approval.tool, approval.task_id
            ),
            move |conn| sql::open_approval(conn, &owned, now),
        )
        .await
    }

    async fn find_approval(
        &self,
        task_id: &str,
        tool: &str,
        arguments_hash: &str,
        now: i64,
    ) -> Result<Option<ApprovalRecord>, StoreError> {
        let (task, tool_name, hash) = (
            task_id.to_owned(),
            tool.to_owned(),
            arguments_hash.to_owned(),
        );
        self.read(
            format!("find approval of {tool:?} in task {task_id:?}"),
            move |conn| sql::find_approval(conn, &task, &tool_name, &hash, now),
        )
        .await
    }

    async fn decide_approval(
        &self,
        approval_id: &str,
        approve: bool,
        decided_by: &str,
        reason: Option<&str>,
        now: i64,
    ) -> Result<ApprovalRecord, StoreError> {
        let (id, approver, reason) = (
            approval_id.to_owned(),
            decided_by.to_owned(),
            reason.map(str::to_owned),
        );
        let outcome = self
            .write(format!("decide approval {approval_id:?}"), move |conn| {
                sql::decide_approval(conn, &id, approve, &approver, reason.as_deref(), now)
            })
            .await?;
        match outcome {
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
        let id = approval_id.to_owned();
        self.write(format!("consume approval {approval_id:?}"), move |conn| {
            sql::consume_approval(conn, &id, now)
        })
        .await
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
        let id = trace_id.to_owned();
        self.read(format!("load trace {trace_id:?}"), move |conn| {
            sql::select_trace(conn, &id)
        })
        .await
    }

    async fn traces(&self, limit: usize) -> Result<Vec<TraceSummary>, StoreError> {
        self.read("list traces".into(), move |conn| {
            sql::select_traces(conn, limit)
        })
        .await
    }

    async fn audit_range(
        &self,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        self.read(
            format!("load audit records after seq {after_seq}"),
            move |conn| sql::select_audit_range(conn, after_seq, limit),
        )
        .await
    }

    async fn audit_head(&self) -> Result<Option<(i64, String)>, StoreError> {
        self.read("load the audit head".into(), sql::select_audit_head)
            .await
    }

    async fn insert_checkpoint(&self, checkpoint: &Checkpoint) -> Result<(), StoreError> {
        let owned = checkpoint.clone();
        let outcome = self
            .write(
                format!("insert checkpoint of seq {}", checkpoint.seq),
                move |conn| sql::insert_checkpoint(conn, &owned),
            )
            .await?;
        let invalid = |message: String| StoreError::InvalidCheckpoint {
            seq: checkpoint.seq,
            message,
        };
        match outcome {
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
        self.read("load checkpoints".into(), sql::select_checkpoints)
            .await
    }

    async fn add_counters(
        &self,
        scope: &str,
        deltas: &[(&str, i64)],
    ) -> Result<BTreeMap<String, i64>, StoreError> {
        let (owned_scope, owned_deltas): (String, Vec<(String, i64)>) = (
            scope.to_owned(),
            deltas
                .iter()
                .map(|(name, delta)| ((*name).to_owned(), *delta))
                .collect(),
        );
        self.write(format!("add to counters of {scope:?}"), move |conn| {
            sql::add_counters(conn, &owned_scope, &owned_deltas)
        })
        .await
    }

    async fn counters(&self, scope: &str) -> Result<BTreeMap<String, i64>, StoreError> {
        let owned_scope = scope.to_owned();
        self.read(format!("load counters of {scope:?}"), move |conn| {
            sql::select_counters(conn, &owned_scope)
        })
        .await
    }

    async fn tool_pins(&self) -> Result<Vec<crate::ToolPin>, StoreError> {
        self.read("load tool pins".to_owned(), sql::select_tool_pins)
            .await
    }

    async fn save_tool_pin(&self, pin: &crate::ToolPin) -> Result<(), StoreError> {
        let owned = pin.clone();
        self.write(format!("save the pin of {}", pin.tool), move |conn| {
            sql::save_tool_pin(conn, &owned)
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        if let Some(audit) = &self.audit
            && !audit.is_running()
        {
            return Err(audit.stopped());
        }
        self.read("ping".into(), sql::ping).await
    }

    fn dropped_records(&self) -> u64 {
        self.lost.total()
    }

    async fn close(&self) -> Result<(), StoreError> {
        match &self.audit {
            Some(audit) => audit.close().await,
            None => Ok(()),
        }
    }
}

/// The connections of one database file.
struct Database {
    path: PathBuf,
    /// `SQLite store at {path}`, for messages and logs.
    label: String,
    /// The task write connection, absent in a read-only store.
    writer: Option<Mutex<Connection>>,
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
}

impl Database {
    fn new(path: &Path, writer: Option<Connection>, readers: Vec<Connection>) -> Database {
        Database {
            path: path.to_owned(),
            label: format!("SQLite store at {}", path.display()),
            writer: writer.map(Mutex::new),
            readers: readers.into_iter().map(Mutex::new).collect(),
            next_reader: AtomicUsize::new(0),
        }
    }

    /// Returns an idle read connection, or waits for one in turn when all
    /// are busy.
    fn reader(&self) -> MutexGuard<'_, Connection> {
        for reader in &self.readers {
            match reader.try_lock() {
                Ok(conn) => return conn,
                Err(std::sync::TryLockError::Poisoned(poisoned)) => return poisoned.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => {}
            }
        }
        let index = self.next_reader.fetch_add(1, Ordering::Relaxed) % self.readers.len();
        lock(&self.readers[index])
    }
}

#[derive(Clone, Copy, PartialEq)]
enum OpenMode {
    ReadWrite,
    ReadOnly,
}

/// Opens and configures one connection. The flags leave out
/// `SQLITE_OPEN_URI`, so a configured path is always a file name and never
/// a `file:` URI with options.
fn open_connection(
    path: &Path,
    mode: OpenMode,
    options: &SqliteOptions,
) -> Result<Connection, StoreError> {
    let flags = match mode {
        OpenMode::ReadWrite => OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
        OpenMode::ReadOnly => OpenFlags::SQLITE_OPEN_READ_ONLY,
    } | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let open_error = |source: rusqlite::Error| StoreError::Open {
        path: path.to_owned(),
        source: Box::new(source),
    };

    let conn = Connection::open_with_flags(path, flags).map_err(open_error)?;
    conn.busy_timeout(options.busy_timeout)
        .map_err(open_error)?;
    if mode == OpenMode::ReadWrite {
        let journal_mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(open_error)?;
        if !journal_mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Open {
                path: path.to_owned(),
                source: format!(
                    "the file system does not support WAL mode (journal mode is {journal_mode:?})"
                )
                .into(),
            });
        }
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(open_error)?;
    }
    Ok(conn)
}

fn open_readers(path: &Path, options: &SqliteOptions) -> Result<Vec<Connection>, StoreError> {
    (0..options.read_connections.max(1))
        .map(|_| open_connection(path, OpenMode::ReadOnly, options))
        .collect()
}

fn create_parent(path: &Path) -> Result<(), StoreError> {
    let Some(parent) = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
    else {
        return Ok(());
    };
    if parent.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(parent)
        .map_err(|source| StoreError::CreateDir {
            path: parent.to_owned(),
            source,
        })
}

/// Creates an empty database file with owner-only permissions; SQLite
/// gives its WAL and shared-memory files the same permissions.
fn create_private_file(path: &Path) -> Result<(), StoreError> {
    let mut file_options = std::fs::OpenOptions::new();
    file_options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut file_options, 0o600);
    match file_options.open(path) {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(StoreError::Open {
            path: path.to_owned(),
            source: Box::new(source),
        }),
    }
}

fn newer_schema(path: &Path, found: i64) -> StoreError {
    StoreError::NewerSchema {
        path: path.to_owned(),
        found,
        supported: sql::SCHEMA_VERSION,
    }
}

fn interrupted(store: String, operation: String, error: &tokio::task::JoinError) -> StoreError {
    StoreError::Interrupted {
        store,
        operation,
        message: error.to_string(),
    }
}

/// Locks a connection. A panic while the lock was held leaves the
/// connection usable, because an open rusqlite transaction rolls back when
/// it is dropped during unwinding.
fn lock(conn: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    conn.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod approval_tests;
#[cfg(test)]
mod checkpoint_tests;
#[cfg(test)]
mod tests;
