//! One fresh store per test, on either backend, with the means to open a
//! second store on the same data and to change the data behind the
//! store's back.
//!
//! A PostgreSQL harness creates a database of its own on the server that
//! `WARDEN_TEST_POSTGRES_URL` names, and drops it at the end, so parallel
//! tests and reruns never see each other's rows or notifications.

use std::path::PathBuf;
use std::sync::Arc;

use sqlx::Connection as _;
use tempfile::TempDir;
use warden_store::{PostgresOptions, PostgresStore, SqliteStore, Store};

/// Environment variable with the URL of a PostgreSQL server whose user
/// may create databases.
pub const POSTGRES_URL_VAR: &str = "WARDEN_TEST_POSTGRES_URL";

/// A store under test and the data behind it.
pub struct Harness {
    /// The store under test.
    pub store: Arc<dyn Store>,
    backend: Backend,
}

enum Backend {
    Sqlite { _dir: TempDir, path: PathBuf },
    Postgres { database: TestDatabase },
}

impl Harness {
    /// Opens a store in a new SQLite file.
    pub async fn sqlite() -> Option<Harness> {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let path = dir.path().join("warden.db");
        let store = SqliteStore::open(&path).expect("open the SQLite store");
        Some(Harness {
            store: Arc::new(store),
            backend: Backend::Sqlite { _dir: dir, path },
        })
    }

    /// Opens a store in a new PostgreSQL database, or prints why the test
    /// is skipped and returns `None` when `WARDEN_TEST_POSTGRES_URL` is
    /// unset.
    pub async fn postgres() -> Option<Harness> {
        let database = TestDatabase::create().await?;
        let store = PostgresStore::connect(&database.url, &PostgresOptions::default())
            .await
            .expect("open the PostgreSQL store");
        Some(Harness {
            store: Arc::new(store),
            backend: Backend::Postgres { database },
        })
    }

    /// Returns true for the PostgreSQL backend.
    pub fn is_postgres(&self) -> bool {
        matches!(self.backend, Backend::Postgres { .. })
    }

    /// Opens a second read-write store on the same data, as a second
    /// gateway replica (PostgreSQL) or a second process (SQLite) would.
    pub async fn open_another(&self) -> Arc<dyn Store> {
        match &self.backend {
            Backend::Sqlite { path, .. } => {
                Arc::new(SqliteStore::open(path).expect("open a second SQLite store"))
            }
            Backend::Postgres { database } => Arc::new(
                PostgresStore::connect(&database.url, &PostgresOptions::default())
                    .await
                    .expect("open a second PostgreSQL store"),
            ),
        }
    }

    /// Opens a read-only store on the same data, as the CLI does.
    pub fn open_read_only(&self) -> Arc<dyn Store> {
        match &self.backend {
            Backend::Sqlite { path, .. } => {
                Arc::new(SqliteStore::open_read_only(path).expect("open SQLite read-only"))
            }
            Backend::Postgres { database } => Arc::new(
                PostgresStore::open_read_only(&database.url).expect("open PostgreSQL read-only"),
            ),
        }
    }

    /// Closes the store and opens a new one on the same data.
    pub async fn reopen(&mut self) {
        self.store.close().await.expect("close the store");
        self.store = self.open_another().await;
    }

    /// Runs SQL statements on the data through a connection of its own,
    /// as someone with direct access to the database would.
    pub async fn execute(&self, statements: &str) {
        match &self.backend {
            Backend::Sqlite { path, .. } => {
                let conn = rusqlite::Connection::open(path).expect("open the SQLite file");
                conn.execute_batch(statements)
                    .expect("run SQL on the SQLite file");
            }
            Backend::Postgres { database } => {
                let mut conn = sqlx::PgConnection::connect(&database.url)
                    .await
                    .expect("connect to the test database");
                sqlx::raw_sql(statements)
                    .execute(&mut conn)
                    .await
                    .expect("run SQL on the test database");
                conn.close().await.ok();
            }
        }
    }

    /// Closes the store and removes the data.
    pub async fn finish(self) {
        self.store.close().await.ok();
        drop(self.store);
        if let Backend::Postgres { database } = self.backend {
            database.drop_now().await;
        }
    }
}

/// A database created for one test; dropped at the end of the test, or
/// when the harness is dropped during a panic.
pub struct TestDatabase {
    /// URL of the server's maintenance database.
    admin_url: String,
    /// The database's name.
    pub name: String,
    /// URL of the database.
    pub url: String,
    dropped: bool,
}

impl TestDatabase {
    /// Creates a database with a random name, or prints why the test is
    /// skipped and returns `None` when `WARDEN_TEST_POSTGRES_URL` is unset.
    pub async fn create() -> Option<TestDatabase> {
        let Ok(admin_url) = std::env::var(POSTGRES_URL_VAR) else {
            println!("skipped: {POSTGRES_URL_VAR} unset");
            return None;
        };
        let name = format!("warden_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = sqlx::PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|error| panic!("connect to {POSTGRES_URL_VAR}: {error}"));
        sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("create the test database");
        admin.close().await.ok();
        let mut url = url::Url::parse(&admin_url).expect("parse the PostgreSQL URL");
        url.set_path(&name);
        Some(TestDatabase {
            admin_url,
            url: url.to_string(),
            name,
            dropped: false,
        })
    }

    /// Drops the database, ending its remaining connections.
    pub async fn drop_now(mut self) {
        drop_database(&self.admin_url, &self.name).await;
        self.dropped = true;
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop runs inside the test's runtime, which cannot block on a
        // future, so a thread with a runtime of its own drops the database.
        let dropper = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("build a runtime to drop the test database");
            runtime.block_on(drop_database(&admin_url, &name));
        });
        dropper.join().ok();
    }
}

async fn drop_database(admin_url: &str, name: &str) {
    let Ok(mut admin) = sqlx::PgConnection::connect(admin_url).await else {
        eprintln!("cannot connect to drop the test database {name}");
        return;
    };
    if let Err(error) = sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await
    {
        eprintln!("cannot drop the test database {name}: {error}");
    }
    admin.close().await.ok();
}
