//! Append-only JSON-lines journal: one [`Op`] per line, appended under an exclusive file
//! lock and fsynced before the call returns, so a killed process loses at most the op it was
//! writing and several processes can share one file.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{Op, Storage, StudyMeta, apply, check_meta, next_trial_op};
use crate::error::{Error, Result};
use crate::space::Params;
use crate::trial::{Trial, TrialState, now};

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
                    msg: e.to_string(),
                })?,
                Err(_) => c.torn_lines += 1,
            }
        }
        c.offset += end as u64 + 1;
        Ok(())
    }

    /// Runs `f` with the file exclusively locked and the cache up to date; `f` returns ops
    /// to append, which are applied and fsynced before the lock is released.
    fn locked<T>(&self, f: impl FnOnce(&Cache) -> Result<(Vec<Op>, T)>) -> Result<T> {
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
                    msg: e.to_string(),
                })?);
                text.push('\n');
            }
            file.write_all(text.as_bytes())
                .map_err(|e| Error::io(&self.path, e))?;
            file.sync_data().map_err(|e| Error::io(&self.path, e))?;
            self.sync(&mut c)?;
            Ok(out)
        })();
        let _ = file.unlock();
        res
    }

    fn append(&self, op: Op) -> Result<()> {
        self.locked(|_| Ok((vec![op], ())))
    }
}

impl Storage for JournalStorage {
    fn open_study(&self, meta: &StudyMeta) -> Result<StudyMeta> {
        self.locked(|c| match &c.meta {
            Some(stored) => {
                check_meta(stored, meta)?;
                Ok((vec![], stored.clone()))
            }
            None => Ok((vec![Op::Study { meta: meta.clone() }], meta.clone())),
        })
    }

    fn create_trial(
        &self,
        worker: &str,
        propose: &mut dyn FnMut(u64, &[Trial]) -> Result<Params>,
    ) -> Result<Trial> {
        let number = self.locked(|c| {
            let op = next_trial_op(&c.trials, worker, propose)?;
            let n = match &op {
                Op::Claim { number, .. } | Op::Create { number, .. } => *number,
                _ => unreachable!("next_trial_op returns create or claim"),
            };
            Ok((vec![op], n))
        })?;
        Ok(self.lock_cache().trials[number as usize].clone())
    }

    fn enqueue(&self, params: &Params, retry_of: Option<u64>) -> Result<u64> {
        self.locked(|c| {
            let number = c.trials.len() as u64;
            Ok((
                vec![Op::Enqueue {
                    number,
                    params: params.clone(),
                    retry_of,
                    time: now(),
                }],
                number,
            ))
        })
    }

    fn report(&self, number: u64, step: u64, value: f64) -> Result<()> {
        self.append(Op::Report {
            number,
            step,
            value,
        })
    }

    fn set_user_attr(&self, number: u64, key: &str, value: &serde_json::Value) -> Result<()> {
        self.append(Op::Attr {
            number,
            key: key.into(),
            value: value.clone(),
        })
    }

    fn finish(
        &self,
        number: u64,
        state: TrialState,
        values: Option<&[f64]>,
        message: Option<&str>,
    ) -> Result<()> {
        self.append(Op::Finish {
            number,
            state,
            values: values.map(<[f64]>::to_vec),
            message: message.map(str::to_string),
            time: now(),
        })
    }

    fn trials(&self) -> Result<Vec<Trial>> {
        let mut c = self.lock_cache();
        self.sync(&mut c)?;
        Ok(c.trials.clone())
    }
}
