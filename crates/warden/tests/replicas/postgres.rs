//! PostgreSQL for the replica tests: a database of its own per test on
//! the server that `WARDEN_TEST_POSTGRES_URL` names, and a private server
//! started with `initdb` and `pg_ctl` that a test may stop and start.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sqlx::Connection as _;

/// Environment variable with the URL of a PostgreSQL server whose user
/// may create databases.
pub const POSTGRES_URL_VAR: &str = "WARDEN_TEST_POSTGRES_URL";

/// Returns the server URL, or prints why the test is skipped.
pub fn server_url() -> Option<String> {
    match std::env::var(POSTGRES_URL_VAR) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            println!("skipped: {POSTGRES_URL_VAR} unset");
            None
        }
    }
}

/// A database created for one test and dropped when this is dropped.
pub struct TestDatabase {
    admin_url: String,
    name: String,
    /// URL of the database.
    pub url: String,
}

impl TestDatabase {
    /// Creates a database with a random name on the server at `admin_url`.
    pub async fn create(admin_url: &str) -> TestDatabase {
        let name = format!("warden_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = sqlx::PgConnection::connect(admin_url)
            .await
            .unwrap_or_else(|error| panic!("connect to {POSTGRES_URL_VAR}: {error}"));
        sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("create the test database");
        admin.close().await.ok();
        let mut url = url::Url::parse(admin_url).expect("parse the PostgreSQL URL");
        url.set_path(&name);
        TestDatabase {
            admin_url: admin_url.to_owned(),
            url: url.to_string(),
            name,
        }
    }

    /// Runs SQL statements on the database through a connection of its
    /// own, as someone with direct access to it would.
    pub async fn execute(&self, statements: &str) {
        let mut connection = sqlx::PgConnection::connect(&self.url)
            .await
            .expect("connect to the test database");
        sqlx::raw_sql(statements)
            .execute(&mut connection)
            .await
            .expect("run SQL on the test database");
        connection.close().await.ok();
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop runs inside the test's runtime, which cannot block on a
        // future, so a thread with a runtime of its own drops the database.
        let dropper = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("build a runtime to drop the test database");
            runtime.block_on(async {
                let Ok(mut admin) = sqlx::PgConnection::connect(&admin_url).await else {
                    eprintln!("cannot connect to drop the test database {name}");
                    return;
                };
                let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                if let Err(error) = sqlx::raw_sql(&sql).execute(&mut admin).await {
                    eprintln!("cannot drop the test database {name}: {error}");
                }
                admin.close().await.ok();
            });
        });
        dropper.join().ok();
    }
}

/// A PostgreSQL server of one test in a temporary directory, on a free
/// port, with trust authentication; stopped when dropped.
pub struct PrivatePostgres {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    /// Runs the server's programs as the `postgres` user when this test
    /// runs as root, because they refuse to run as root.
    as_postgres: bool,
    _dir: tempfile::TempDir,
}

impl PrivatePostgres {
    /// Initialises and starts a server, or prints why the test is skipped
    /// and returns `None`: no `initdb`, or running as root without a
    /// `postgres` user and `runuser` to switch to it.
    pub fn start() -> Option<PrivatePostgres> {
        let Some(bin) = postgres_bin() else {
            println!("skipped: initdb and pg_ctl not found (install PostgreSQL server binaries)");
            return None;
        };
        let as_postgres = is_root();
        if as_postgres && !can_run_as_postgres() {
            println!(
                "skipped: running as root, and initdb refuses root; create a postgres user and install runuser"
            );
            return None;
        }
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let data = dir.path().join("data");
        if as_postgres {
            chown_to_postgres(dir.path());
        }
        let server = PrivatePostgres {
            bin,
            data,
            port: super::cluster::free_port(),
            as_postgres,
            _dir: dir,
        };
        let data = server.data.display().to_string();
        server.run_checked(
            "initdb",
            &["-D", &data, "-A", "trust", "-U", "postgres", "--no-sync"],
        );
        server.start_server();
        Some(server)
    }

    /// Returns the URL of the server's `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the stopped server and waits until it accepts connections.
    pub fn start_server(&self) {
        let data = self.data.display().to_string();
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port, data
        );
        let log = self.data.join("server.log").display().to_string();
        self.run_checked(
            "pg_ctl",
            &["-D", &data, "-o", &options, "-l", &log, "-w", "start"],
        );
    }

    /// Stops the server at once, ending every connection.
    pub fn stop_server(&self) {
        let data = self.data.display().to_string();
        self.run_checked("pg_ctl", &["-D", &data, "-m", "fast", "-w", "stop"]);
    }

    fn run(&self, program: &str, args: &[&str]) -> Output {
        let path = self.bin.join(program);
        let mut command = if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(&path);
            command
        } else {
            Command::new(&path)
        };
        command.args(args).output().unwrap_or_else(|error| {
            panic!("run {}: {error}", path.display());
        })
    }

    fn run_checked(&self, program: &str, args: &[&str]) {
        let output = self.run(program, args);
        assert!(
            output.status.success(),
            "{program} {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let data = self.data.display().to_string();
        self.run("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"]);
    }
}

/// Finds the directory of `initdb` and `pg_ctl`: `pg_config --bindir`, then
/// Debian's versioned directories, then `PATH`.
fn postgres_bin() -> Option<PathBuf> {
    let has_tools = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()));
    let mut candidates: Vec<PathBuf> = from_pg_config.into_iter().collect();
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut versions: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|entry| entry.path().join("bin"))
            .collect();
        versions.sort();
        candidates.extend(versions.into_iter().rev());
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path));
    }
    candidates.into_iter().find(|dir| has_tools(dir))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).trim() == "0")
}

fn can_run_as_postgres() -> bool {
    Command::new("runuser")
        .args(["-u", "postgres", "--", "true"])
        .output()
        .is_ok_and(|output| output.status.success())
}

fn chown_to_postgres(dir: &Path) {
    let status = Command::new("chown")
        .args(["postgres:"])
        .arg(dir)
        .status()
        .expect("run chown");
    assert!(status.success(), "chown postgres {} failed", dir.display());
}
