//! PostgreSQL storage: many processes on many machines share one study, as with Optuna's
//! RDB storage.
//!
//! The study is the same op log as the journal ([`Op`], replayed by [`apply`]), kept in
//! `autoresearch_ops` with a per-study sequence number, plus a materialised
//! `autoresearch_trials` table (one row per trial, primary key `(study_id, number)`) that
//! SQL users can query and that makes a duplicate trial number a constraint violation.
//!
//! Indexes, reviewed for many workers on one database: every query of the ask/tell path
//! finds its rows through a primary key whose first column is `study_id` (the op log
//! through `(study_id, seq)`, trial rows through `(study_id, number)`, the study through
//! `id` or the unique `name`), and so do the `ON DELETE CASCADE` deletes; SQL users' "trials
//! of a study in a state" has `autoresearch_trials_study_state`. The schema statements run
//! at every connect, so a database created by an older version gains a new index then
//! (`CREATE INDEX IF NOT EXISTS`; it locks the trials table against writes while it is built).
//!
//! Every write runs in one transaction that first takes the study row's lock
//! (`SELECT ... FOR UPDATE`), so writes to one study are serialised: the op sequence has no
//! gaps, a reader that sees op `k` has seen every op before it, and trial numbering plus
//! sampling happen on an up-to-date history. Readers take no lock and fetch only the ops
//! they have not seen yet.

use std::str::FromStr;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use postgres::{Client, Transaction};

use super::tls::Tls;
use super::{Op, OpLog, StudyMeta, apply, check_meta};
use crate::error::{Error, Result};
use crate::trial::Trial;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS autoresearch_studies (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    meta JSONB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS autoresearch_ops (
    study_id BIGINT NOT NULL REFERENCES autoresearch_studies (id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    op JSONB NOT NULL,
    PRIMARY KEY (study_id, seq)
);
CREATE TABLE IF NOT EXISTS autoresearch_trials (
    study_id BIGINT NOT NULL REFERENCES autoresearch_studies (id) ON DELETE CASCADE,
    number BIGINT NOT NULL,
    state TEXT NOT NULL,
    trial JSONB NOT NULL,
    PRIMARY KEY (study_id, number)
);
CREATE INDEX IF NOT EXISTS autoresearch_trials_study_state
    ON autoresearch_trials (study_id, state);
";

/// Arbitrary constant key of the advisory lock that serialises schema creation
/// (concurrent `CREATE TABLE IF NOT EXISTS` can fail on the catalog's unique index).
const SCHEMA_LOCK: i64 = 0x6175_746f_7265_7365;

/// The study as replayed from the ops seen so far.
#[derive(Default)]
struct Cache {
    /// Last op sequence number applied.
    seq: i64,
    meta: Option<StudyMeta>,
    trials: Vec<Trial>,
}

impl Cache {
    /// Applies stored ops; on a bad one the cache starts over and the error says which op.
    fn apply_rows(
        &mut self,
        rows: &[postgres::Row],
    ) -> std::result::Result<(), (i64, Box<dyn std::error::Error + Send + Sync>)> {
        for row in rows {
            let seq: i64 = row.get(0);
            let text: String = row.get(1);
            let res = match serde_json::from_str::<Op>(&text) {
                Ok(op) => apply(&mut self.meta, &mut self.trials, op)
                    .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>),
                Err(e) => Err(Box::new(e) as Box<dyn std::error::Error + Send + Sync>),
            };
            if let Err(source) = res {
                *self = Self::default();
                return Err((seq, source));
            }
            self.seq = seq;
        }
        Ok(())
    }
}

struct Inner {
    client: Client,
    study_id: Option<i64>,
    cache: Cache,
}

/// One study in a PostgreSQL database.
pub struct PostgresStorage {
    config: postgres::Config,
    tls: Tls,
    /// The URL with any password removed, for messages.
    shown: String,
    name: String,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for PostgresStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStorage")
            .field("url", &self.shown)
            .field("study", &self.name)
            .finish_non_exhaustive()
    }
}

/// Whether a `--storage` value names a PostgreSQL database.
pub fn is_postgres_url(s: &str) -> bool {
    s.starts_with("postgres://") || s.starts_with("postgresql://")
}

/// The URL without its password.
fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    let auth_end = rest.find('@');
    let host_start = rest.find('/').unwrap_or(rest.len());
    match auth_end {
        Some(at) if at < host_start => {
            let user = rest[..at].split(':').next().unwrap_or("");
            format!("{}{user}:***@{}", &url[..scheme_end + 3], &rest[at + 1..])
        }
        _ => url.to_string(),
    }
}

impl PostgresStorage {
    /// Connects to `url` (`postgres://user:pass@host:port/db`) and binds the study `name`;
    /// creates the tables if they do not exist. The study itself is created by
    /// [`Storage::open_study`](super::Storage::open_study) (its stored name is `name`, whatever the meta says).
    pub fn connect(url: &str, name: &str) -> Result<Self> {
        let shown = redact(url);
        let tls_err = |source| Error::Tls {
            url: shown.clone(),
            source,
        };
        let (rest, tls) = super::tls::configure(url).map_err(tls_err)?;
        let mut config = postgres::Config::from_str(&rest).map_err(|e| Error::Postgres {
            what: format!("{shown}: invalid URL"),
            source: e,
        })?;
        config.ssl_mode(tls.wire_mode());
        if config.get_connect_timeout().is_none() {
            // A wrong host must fail, not hang the study.
            config.connect_timeout(Duration::from_secs(15));
        }
        let mut client = tls.connect(&config).map_err(|e| match e {
            Ok(t) => tls_err(t),
            Err(e) => Error::Postgres {
                what: format!("{shown}: connect"),
                source: e,
            },
        })?;
        {
            let mut tx = client.transaction().map_err(|e| Error::Postgres {
                what: format!("{shown}: begin"),
                source: e,
            })?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
                .map_err(|e| Error::Postgres {
                    what: format!("{shown}: schema lock"),
                    source: e,
                })?;
            tx.batch_execute(SCHEMA).map_err(|e| Error::Postgres {
                what: format!("{shown}: creating tables"),
                source: e,
            })?;
            tx.commit().map_err(|e| Error::Postgres {
                what: format!("{shown}: creating tables"),
                source: e,
            })?;
        }
        Ok(Self {
            config,
            tls,
            shown,
            name: name.to_string(),
            inner: Mutex::new(Inner {
                client,
                study_id: None,
                cache: Cache::default(),
            }),
        })
    }

    /// The study name this storage is bound to.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The stored study, if one with this name exists (binds the storage to it).
    pub fn meta(&self) -> Result<Option<StudyMeta>> {
        let mut g = self.lock()?;
        if g.study_id.is_none() {
            let row = g
                .client
                .query_opt(
                    "SELECT id FROM autoresearch_studies WHERE name = $1",
                    &[&self.name],
                )
                .map_err(|e| self.err("looking up the study", e))?;
            let Some(row) = row else { return Ok(None) };
            g.study_id = Some(row.get(0));
        }
        self.catch_up(&mut g)?;
        Ok(g.cache.meta.clone())
    }

    /// Names of all studies in the database.
    pub fn study_names(&self) -> Result<Vec<String>> {
        let mut g = self.lock()?;
        let rows = g
            .client
            .query("SELECT name FROM autoresearch_studies ORDER BY id", &[])
            .map_err(|e| self.err("listing studies", e))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Deletes the study and all its trials (no-op when absent).
    pub fn delete_study(&self) -> Result<()> {
        let mut g = self.lock()?;
        g.client
            .execute(
                "DELETE FROM autoresearch_studies WHERE name = $1",
                &[&self.name],
            )
            .map_err(|e| self.err("deleting the study", e))?;
        g.study_id = None;
        g.cache = Cache::default();
        Ok(())
    }

    fn err(&self, what: &str, e: postgres::Error) -> Error {
        Error::Postgres {
            what: format!("{} study `{}`: {what}", self.shown, self.name),
            source: e,
        }
    }

    fn encode(&self, what: &'static str, e: serde_json::Error) -> Error {
        Error::Encode {
            study: self.name.clone(),
            what,
            source: e,
        }
    }

    /// The connection, reconnected if the server dropped it.
    fn lock(&self) -> Result<MutexGuard<'_, Inner>> {
        let mut g = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if g.client.is_closed() {
            g.client = self.tls.connect(&self.config).map_err(|e| match e {
                Ok(source) => Error::Tls {
                    url: self.shown.clone(),
                    source,
                },
                Err(e) => Error::Postgres {
                    what: format!("{}: reconnect", self.shown),
                    source: e,
                },
            })?;
        }
        Ok(g)
    }

    fn study_id(&self, g: &Inner) -> Result<i64> {
        g.study_id.ok_or_else(|| Error::Study {
            study: self.name.clone(),
            msg: "not opened in this storage (call open_study first)".into(),
        })
    }

    /// Applies committed ops the cache has not seen.
    fn catch_up(&self, g: &mut Inner) -> Result<()> {
        let id = self.study_id(g)?;
        let rows = g
            .client
            .query(OPS_SINCE, &[&id, &g.cache.seq])
            .map_err(|e| self.err("reading trials", e))?;
        g.cache
            .apply_rows(&rows)
            .map_err(|(seq, source)| Error::StoredOp {
                what: format!("{} study `{}`", self.shown, self.name),
                seq,
                source,
            })
    }

    /// Runs `f` in a transaction holding the study row lock, with the cache up to date;
    /// the ops `f` returns are stored (op log and trial rows) and committed together, then
    /// `then` reads the updated cache under the same lock.
    fn write_then<T, R>(
        &self,
        f: impl FnOnce(&Cache) -> Result<(Vec<Op>, T)>,
        then: impl FnOnce(&Cache, T) -> Result<R>,
    ) -> Result<R> {
        let mut g = self.lock()?;
        let id = self.study_id(&g)?;
        let Inner { client, cache, .. } = &mut *g;
        match self.write_tx(client, cache, id, f) {
            Ok(out) => then(cache, out),
            Err(e) => {
                // Our ops may be in the cache without being committed: reload next time.
                *cache = Cache::default();
                Err(e)
            }
        }
    }

    fn write_tx<T>(
        &self,
        client: &mut Client,
        cache: &mut Cache,
        id: i64,
        f: impl FnOnce(&Cache) -> Result<(Vec<Op>, T)>,
    ) -> Result<T> {
        let mut tx = client.transaction().map_err(|e| self.err("begin", e))?;
        tx.query_one(
            "SELECT id FROM autoresearch_studies WHERE id = $1 FOR UPDATE",
            &[&id],
        )
        .map_err(|e| self.err("locking the study", e))?;
        let rows = tx
            .query(OPS_SINCE, &[&id, &cache.seq])
            .map_err(|e| self.err("reading trials", e))?;
        cache
            .apply_rows(&rows)
            .map_err(|(seq, source)| Error::StoredOp {
                what: format!("{} study `{}`", self.shown, self.name),
                seq,
                source,
            })?;
        let (ops, out) = f(cache)?;
        for op in ops {
            self.store_op(&mut tx, cache, id, op)?;
        }
        tx.commit().map_err(|e| self.err("commit", e))?;
        Ok(out)
    }

    /// Appends one op, applies it to the cache and mirrors the touched trial's row.
    fn store_op(&self, tx: &mut Transaction<'_>, cache: &mut Cache, id: i64, op: Op) -> Result<()> {
        let text = serde_json::to_string(&op).map_err(|e| self.encode("op", e))?;
        let number = op.trial_number();
        let is_new = matches!(op, Op::Create { .. } | Op::Enqueue { .. });
        let seq = cache.seq + 1;
        tx.execute(
            "INSERT INTO autoresearch_ops (study_id, seq, op) VALUES ($1, $2, $3::text::jsonb)",
            &[&id, &seq, &text],
        )
        .map_err(|e| self.err("appending an op", e))?;
        apply(&mut cache.meta, &mut cache.trials, op)?;
        cache.seq = seq;
        let Some(number) = number else {
            return Ok(());
        };
        let trial =
            &cache.trials[usize::try_from(number).map_err(|_| Error::UnknownTrial(number))?];
        let json = serde_json::to_string(trial).map_err(|e| self.encode("trial", e))?;
        let n = i64::try_from(number).map_err(|_| Error::UnknownTrial(number))?;
        let state = trial.state.as_str();
        if is_new {
            // A plain insert: a second trial with this number violates the primary key.
            tx.execute(
                "INSERT INTO autoresearch_trials (study_id, number, state, trial) \
                 VALUES ($1, $2, $3, $4::text::jsonb)",
                &[&id, &n, &state, &json],
            )
        } else {
            tx.execute(
                "UPDATE autoresearch_trials SET state = $3, trial = $4::text::jsonb \
                 WHERE study_id = $1 AND number = $2",
                &[&id, &n, &state, &json],
            )
        }
        .map_err(|e| self.err(&format!("recording trial {number}"), e))?;
        Ok(())
    }
}

const OPS_SINCE: &str =
    "SELECT seq, op::text FROM autoresearch_ops WHERE study_id = $1 AND seq > $2 ORDER BY seq";

impl OpLog for PostgresStorage {
    fn open_log(&self, meta: &StudyMeta) -> Result<StudyMeta> {
        let mut meta = meta.clone();
        meta.name.clone_from(&self.name);
        let text = serde_json::to_string(&meta).map_err(|e| self.encode("study", e))?;
        {
            let mut g = self.lock()?;
            let mut tx = g.client.transaction().map_err(|e| self.err("begin", e))?;
            // Of several workers creating the study at once, one inserts; all read its id.
            tx.execute(
                "INSERT INTO autoresearch_studies (name, meta) VALUES ($1, $2::text::jsonb) \
                 ON CONFLICT (name) DO NOTHING",
                &[&self.name, &text],
            )
            .map_err(|e| self.err("creating the study", e))?;
            let row = tx
                .query_one(
                    "SELECT id FROM autoresearch_studies WHERE name = $1 FOR UPDATE",
                    &[&self.name],
                )
                .map_err(|e| self.err("locking the study", e))?;
            let id: i64 = row.get(0);
            let has_header: bool = tx
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM autoresearch_ops WHERE study_id = $1)",
                    &[&id],
                )
                .map_err(|e| self.err("reading the study", e))?
                .get(0);
            if !has_header {
                let op = serde_json::to_string(&Op::Study { meta: meta.clone() })
                    .map_err(|e| self.encode("study", e))?;
                tx.execute(
                    "INSERT INTO autoresearch_ops (study_id, seq, op) VALUES ($1, 1, $2::text::jsonb)",
                    &[&id, &op],
                )
                .map_err(|e| self.err("writing the study header", e))?;
            }
            tx.commit().map_err(|e| self.err("commit", e))?;
            if g.study_id != Some(id) {
                g.study_id = Some(id);
                g.cache = Cache::default();
            }
        }
        let stored = self.meta()?.ok_or_else(|| Error::Study {
            study: self.name.clone(),
            msg: "the study header is missing".into(),
        })?;
        check_meta(&stored, &meta)?;
        Ok(stored)
    }

    fn transact<T, R>(
        &self,
        f: impl FnOnce(&[Trial]) -> Result<(Vec<Op>, T)>,
        then: impl FnOnce(&[Trial], T) -> Result<R>,
    ) -> Result<R> {
        self.write_then(|c| f(&c.trials), |c, out| then(&c.trials, out))
    }

    fn read<R>(&self, f: impl FnOnce(&[Trial]) -> R) -> Result<R> {
        let mut g = self.lock()?;
        self.catch_up(&mut g)?;
        Ok(f(&g.cache.trials))
    }
}
