//! Append-only JSON-lines journal: one [`Op`] per line, appended under an exclusive file
//! lock and fsynced before the call returns, so a killed process loses at most the op it was
//! writing and several processes can share one file.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{Op, OpLog, StudyMeta, apply, check_meta};
use crate::error::{Error, Result};
use crate::trial::Trial;

struct Cache {
    offset: u64,
    line: usize,
    meta: Option<StudyMeta>,
    trials: Vec<Trial>,
    torn_lines: usize,
}

/// A study journal file.
pub struct JournalStorage {
    path: PathBuf,
    cache: Mutex<Cache>,
}

impl std::fmt::Debug for JournalStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JournalStorage")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl JournalStorage {
    /// Opens (creating if needed) a journal file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        let s = Self {
            path,
            cache: Mutex::new(Cache {
                offset: 0,
                line: 0,
                meta: None,
                trials: Vec::new(),
                torn_lines: 0,
            }),
        };
        s.sync(&mut s.lock_cache())?;
        Ok(s)
    }

    /// The journal path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Lines that could not be parsed (writes torn by a killed process).
    pub fn torn_lines(&self) -> usize {
        self.lock_cache().torn_lines
    }

    /// The stored study, if the journal has one.
    pub fn meta(&self) -> Result<Option<StudyMeta>> {
        let mut c = self.lock_cache();
        self.sync(&mut c)?;
        Ok(c.meta.clone())
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Reads ops appended since the last read (complete lines only).
    fn sync(&self, c: &mut Cache) -> Result<()> {
        let mut f = File::open(&self.path).map_err(|e| Error::io(&self.path, e))?;
        f.seek(SeekFrom::Start(c.offset))
            .map_err(|e| Error::io(&self.path, e))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)
            .map_err(|e| Error::io(&self.path, e))?;
        let Some(end) = buf.iter().rposition(|&b| b == b'\n') else {
            return Ok(());
        };
        for raw in buf[..end].split(|&b| b == b'\n') {
            c.line += 1;
            if raw.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match serde_json::from_slice::<Op>(raw) {
                Ok(op) => apply(&mut c.meta, &mut c.trials, op).map_err(|e| Error::Journal {
                    path: self.path.clone(),
                    line: c.line,
                    source: Box::new(e),
                })?,
                Err(_) => c.torn_lines += 1,
            }
        }
        c.offset += end as u64 + 1;
        Ok(())
    }

    /// Runs `f` with the file exclusively locked and the cache up to date; `f` returns ops
    /// to append, which are applied and fsynced, then `then` reads the cache, all before the
    /// lock is released.
    fn locked<T, R>(
        &self,
        f: impl FnOnce(&Cache) -> Result<(Vec<Op>, T)>,
        then: impl FnOnce(&Cache, T) -> Result<R>,
    ) -> Result<R> {
        let mut c = self.lock_cache();
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| Error::io(&self.path, e))?;
        file.lock().map_err(|e| Error::io(&self.path, e))?;
        let res = (|| {
            self.sync(&mut c)?;
            let (ops, out) = f(&c)?;
            if !ops.is_empty() {
                let mut text = String::new();
                let len = file.metadata().map_err(|e| Error::io(&self.path, e))?.len();
                if len > c.offset {
                    // A torn line from a killed writer: terminate it so ours starts clean.
                    text.push('\n');
                }
                for op in &ops {
                    text.push_str(&serde_json::to_string(op).map_err(|e| Error::Journal {
                        path: self.path.clone(),
                        line: c.line + 1,
                        source: Box::new(e),
                    })?);
                    text.push('\n');
                }
                file.write_all(text.as_bytes())
                    .map_err(|e| Error::io(&self.path, e))?;
                file.sync_data().map_err(|e| Error::io(&self.path, e))?;
                self.sync(&mut c)?;
            }
            then(&c, out)
        })();
        let _ = file.unlock();
        res
    }
}

impl OpLog for JournalStorage {
    fn open_log(&self, meta: &StudyMeta) -> Result<StudyMeta> {
        self.locked(
            |c| match &c.meta {
                Some(stored) => {
                    check_meta(stored, meta)?;
                    Ok((vec![], stored.clone()))
                }
                None => Ok((vec![Op::Study { meta: meta.clone() }], meta.clone())),
            },
            |_, m| Ok(m),
        )
    }

    fn transact<T, R>(
        &self,
        f: impl FnOnce(&[Trial]) -> Result<(Vec<Op>, T)>,
        then: impl FnOnce(&[Trial], T) -> Result<R>,
    ) -> Result<R> {
        self.locked(|c| f(&c.trials), |c, out| then(&c.trials, out))
    }

    fn read<R>(&self, f: impl FnOnce(&[Trial]) -> R) -> Result<R> {
        let mut c = self.lock_cache();
        self.sync(&mut c)?;
        Ok(f(&c.trials))
    }
}
