//! The user store: one SQLite file (rusqlite with SQLite compiled in), used from tokio through
//! `spawn_blocking` so that a slow disk never stalls the threads that move packets.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

/// One user, as stored and as sent (`{"id", "username", "email", "created_at"}`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct User {
    /// Assigned by the database: increasing, never reused (not even after a delete), stable across
    /// restarts.
    pub id: i64,
    /// Unique (compared case-insensitively).
    pub username: String,
    /// The user's email address.
    pub email: String,
    /// Creation time, seconds since the Unix epoch (a float, as the seed's `time.time()`).
    pub created_at: f64,
}

/// Why a database call failed.
#[derive(Debug)]
pub enum DbError {
    /// The username is taken already (the UNIQUE constraint).
    UsernameTaken,
    /// SQLite failed.
    Sqlite(rusqlite::Error),
    /// The blocking task could not run (the runtime is shutting down).
    Task(String),
}

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::UsernameTaken => f.write_str("username already taken"),
            Self::Sqlite(e) => write!(f, "database: {e}"),
            Self::Task(e) => write!(f, "database task: {e}"),
        }
    }
}

impl std::error::Error for DbError {}

impl From<rusqlite::Error> for DbError {
    fn from(e: rusqlite::Error) -> Self {
        match &e {
            rusqlite::Error::SqliteFailure(f, _)
                if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE =>
            {
                Self::UsernameTaken
            }
            _ => Self::Sqlite(e),
        }
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS users (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    username   TEXT    NOT NULL UNIQUE COLLATE NOCASE,
    email      TEXT    NOT NULL,
    created_at REAL    NOT NULL
);";

/// The user table in one SQLite database. Cheap to clone (one connection behind a mutex: SQLite writes
/// one at a time anyway, and each call is short).
#[derive(Clone)]
pub struct Database {
    conn: Arc<Mutex<Connection>>,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database").finish_non_exhaustive()
    }
}

fn now_epoch() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn row_to_user(row: &rusqlite::Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        id: row.get(0)?,
        username: row.get(1)?,
        email: row.get(2)?,
        created_at: row.get(3)?,
    })
}

impl Database {
    /// Opens (or creates) the database file and its table. Write-ahead logging: a commit is on disk
    /// before the response goes out, and readers do not wait for writers.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, DbError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        Self::with_connection(conn)
    }

    /// A database in memory (gone when dropped), for tests.
    pub fn open_in_memory() -> Result<Self, DbError> {
        Self::with_connection(Connection::open_in_memory()?)
    }

    fn with_connection(conn: Connection) -> Result<Self, DbError> {
        conn.execute_batch(SCHEMA)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs `f` on the connection on tokio's blocking pool.
    async fn call<T, F>(&self, f: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, DbError> + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let conn = conn.lock().unwrap_or_else(|e| e.into_inner());
            f(&conn)
        })
        .await
        .map_err(|e| DbError::Task(e.to_string()))?
    }

    /// Inserts a user; [`DbError::UsernameTaken`] when the name exists.
    pub async fn create_user(&self, username: String, email: String) -> Result<User, DbError> {
        self.call(move |c| {
            let created_at = now_epoch();
            c.execute(
                "INSERT INTO users (username, email, created_at) VALUES (?1, ?2, ?3)",
                params![username, email, created_at],
            )?;
            Ok(User {
                id: c.last_insert_rowid(),
                username,
                email,
                created_at,
            })
        })
        .await
    }

    /// The user with this id.
    pub async fn get_user(&self, id: i64) -> Result<Option<User>, DbError> {
        self.call(move |c| {
            Ok(c.query_row(
                "SELECT id, username, email, created_at FROM users WHERE id = ?1",
                [id],
                row_to_user,
            )
            .optional()?)
        })
        .await
    }

    /// Up to `limit` users in id order, skipping the first `offset`.
    pub async fn list_users(&self, limit: u64, offset: u64) -> Result<Vec<User>, DbError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let offset = i64::try_from(offset).unwrap_or(i64::MAX);
        self.call(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, username, email, created_at FROM users ORDER BY id LIMIT ?1 OFFSET ?2",
            )?;
            let users = stmt
                .query_map([limit, offset], row_to_user)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(users)
        })
        .await
    }

    /// Changes the given fields; `None` when there is no such user.
    pub async fn update_user(
        &self,
        id: i64,
        username: Option<String>,
        email: Option<String>,
    ) -> Result<Option<User>, DbError> {
        self.call(move |c| {
            // COALESCE keeps a field that is not being changed.
            let changed = c.execute(
                "UPDATE users SET username = COALESCE(?2, username), email = COALESCE(?3, email) \
                 WHERE id = ?1",
                params![id, username, email],
            )?;
            if changed == 0 {
                return Ok(None);
            }
            Ok(c.query_row(
                "SELECT id, username, email, created_at FROM users WHERE id = ?1",
                [id],
                row_to_user,
            )
            .optional()?)
        })
        .await
    }

    /// Deletes a user; false when there was none.
    pub async fn delete_user(&self, id: i64) -> Result<bool, DbError> {
        self.call(move |c| Ok(c.execute("DELETE FROM users WHERE id = ?1", [id])? > 0))
            .await
    }

    /// How many users there are (also the health check's database probe).
    pub async fn count(&self) -> Result<u64, DbError> {
        self.call(|c| {
            let n: i64 = c.query_row("SELECT COUNT(*) FROM users", [], |r| r.get(0))?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
        .await
    }
}
