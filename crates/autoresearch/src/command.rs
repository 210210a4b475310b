//! Any program as the objective: run a command per trial with the parameters substituted
//! (`{name}`), exported as environment variables and written to a JSON file; read the metric
//! from the last JSON line it prints (or a regex), stream `{"step": k, "<metric>": v}` lines
//! as intermediate values for pruning, and keep each trial's stdout / stderr.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use regex::Regex;

use crate::error::{Error, Result};
use crate::space::Params;
use crate::study::{Objective, TrialHandle};
use crate::trial::TrialError;

/// How the metric is read from the program's output.
#[derive(Debug, Clone)]
pub enum MetricSource {
    /// The named key of the last JSON object line that has it.
    JsonKey(String),
    /// The first capture group of the last line matching the regex.
    Regex(Regex),
}

/// Runs a command per trial.
#[derive(Debug, Clone)]
pub struct CommandObjective {
    /// Program and arguments; `{name}` is replaced by the parameter's value.
    pub argv: Vec<String>,
    /// Where to read the metric.
    pub metric: MetricSource,
    /// JSON key of intermediate values (with a `step` key); defaults to the metric key.
    pub intermediate_key: Option<String>,
    /// Further JSON keys read like a `JsonKey` metric, one objective value each after the
    /// first (multi-objective studies).
    pub extra_keys: Vec<String>,
    /// Directory holding `trials/<n>/{params.json,stdout.log,stderr.log}`.
    pub dir: PathBuf,
}

/// `lr` -> `AR_PARAM_LR`.
pub fn env_name(param: &str) -> String {
    let up: String = param
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("AR_PARAM_{up}")
}

/// Replaces `{name}` by parameter values (unknown names are left as they are; `{{` is `{`).
pub fn substitute(arg: &str, params: &Params) -> String {
    let mut out = String::with_capacity(arg.len());
    let mut rest = arg;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(stripped) = tail.strip_prefix("{{") {
            out.push('{');
            rest = stripped;
            continue;
        }
        match tail.find('}') {
            Some(j) if params.contains_key(&tail[1..j]) => {
                out.push_str(&params[&tail[1..j]].to_string());
                rest = &tail[j + 1..];
            }
            _ => {
                out.push('{');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Peak resident memory of a process in GiB (Linux `VmHWM`), if readable.
fn peak_rss_gb(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / (1024.0 * 1024.0))
}

/// Kills the process group led by `pid` (Unix); best effort.
fn kill_group(pid: u32) {
    #[cfg(unix)]
    {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pid}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    #[cfg(not(unix))]
    let _ = pid;
}

impl CommandObjective {
    fn key(&self) -> Option<&str> {
        match &self.metric {
            MetricSource::JsonKey(k) => Some(k),
            MetricSource::Regex(_) => None,
        }
    }

    fn run(&self, t: &TrialHandle) -> Result<std::result::Result<Vec<f64>, TrialError>> {
        let cmd_name = self.argv.first().cloned().unwrap_or_default();
        let err = |msg: String| Error::Command {
            cmd: cmd_name.clone(),
            msg,
        };
        let tdir = self.dir.join("trials").join(t.number().to_string());
        std::fs::create_dir_all(&tdir).map_err(|e| Error::io(&tdir, e))?;
        let pfile = tdir.join("params.json");
        let pjson = serde_json::to_string_pretty(t.params()).map_err(|e| err(e.to_string()))?;
        std::fs::write(&pfile, pjson).map_err(|e| Error::io(&pfile, e))?;
        let args: Vec<String> = self
            .argv
            .iter()
            .map(|a| substitute(a, t.params()))
            .collect();
        let Some((prog, rest)) = args.split_first() else {
            return Err(err("empty command".into()));
        };
        let out_path = tdir.join("stdout.log");
        let err_path = tdir.join("stderr.log");
        let stderr_file = std::fs::File::create(&err_path).map_err(|e| Error::io(&err_path, e))?;
        let mut cmd = Command::new(prog);
        cmd.args(rest)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr_file))
            .env("AUTORESEARCH_TRIAL", t.number().to_string())
            .env("AUTORESEARCH_PARAMS_FILE", &pfile);
        for (k, v) in t.params() {
            cmd.env(env_name(k), v.to_string());
        }
        // Own process group, so a timeout or prune kills the whole tree (a shell's children
        // would otherwise keep the stdout pipe open).
        #[cfg(unix)]
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let mut child = cmd.spawn().map_err(|source| Error::Spawn {
            cmd: prog.clone(),
            source,
        })?;
        let pid = child.id();
        let stdout = child.stdout.take().ok_or_else(|| err("no stdout".into()))?;
        let prune = Arc::new(AtomicBool::new(false));
        let mut out_file = std::fs::File::create(&out_path).map_err(|e| Error::io(&out_path, e))?;
        let inter_key = self
            .intermediate_key
            .clone()
            .or_else(|| self.key().map(str::to_string));
        let metric = self.metric.clone();
        let prune2 = prune.clone();
        // Reads stdout on this thread's scope: reports intermediate values, remembers the
        // last metric and the last JSON object (for memory / description fields).
        let (final_metric, last_obj) = std::thread::scope(|s| {
            let reader = s.spawn(|| {
                let mut final_metric: Option<f64> = None;
                let mut extras: Vec<Option<f64>> = vec![None; self.extra_keys.len()];
                let mut last_obj: Option<serde_json::Map<String, serde_json::Value>> = None;
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    let _ = writeln!(out_file, "{line}");
                    let trimmed = line.trim();
                    if let Ok(serde_json::Value::Object(obj)) =
                        serde_json::from_str::<serde_json::Value>(trimmed)
                    {
                        if let (Some(step), Some(k)) = (obj.get("step"), &inter_key)
                            && let (Some(step), Some(v)) = (
                                step.as_u64(),
                                obj.get(k).and_then(serde_json::Value::as_f64),
                            )
                            && t.report(step, v).is_ok()
                            && t.should_prune()
                        {
                            prune2.store(true, Ordering::SeqCst);
                        }
                        if let MetricSource::JsonKey(k) = &metric
                            && let Some(v) = obj.get(k).and_then(serde_json::Value::as_f64)
                        {
                            final_metric = Some(v);
                        }
                        for (slot, k) in extras.iter_mut().zip(&self.extra_keys) {
                            if let Some(v) = obj.get(k).and_then(serde_json::Value::as_f64) {
                                *slot = Some(v);
                            }
                        }
                        last_obj = Some(obj);
                    } else if let MetricSource::Regex(re) = &metric
                        && let Some(c) = re.captures(trimmed)
                        && let Some(v) = c.get(1).and_then(|m| m.as_str().parse::<f64>().ok())
                    {
                        final_metric = Some(v);
                    }
                }
                ((final_metric, extras), last_obj)
            });
            let mut peak: f64 = 0.0;
            let status = loop {
                if let Some(m) = peak_rss_gb(pid) {
                    peak = peak.max(m);
                }
                match child.try_wait() {
                    Ok(Some(st)) => break Some(st),
                    Ok(None) => {}
                    Err(_) => break None,
                }
                if t.is_cancelled() || prune.load(Ordering::SeqCst) {
                    kill_group(pid);
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
                std::thread::sleep(Duration::from_millis(10));
            };
            let (m, o) = reader.join().unwrap_or(((None, Vec::new()), None));
            if peak > 0.0 {
                let _ = t.set_user_attr("memory_gb", serde_json::json!(peak));
            }
            ((m, status), o)
        });
        let ((metric_v, extras), status) = final_metric;
        if let Some(obj) = &last_obj {
            for k in ["memory_gb", "description"] {
                if let Some(v) = obj.get(k) {
                    let _ = t.set_user_attr(k, v.clone());
                }
            }
        }
        if prune.load(Ordering::SeqCst) {
            return Ok(Err(TrialError::Pruned));
        }
        if t.is_cancelled() {
            return Ok(Err(TrialError::Failed(
                "killed after the trial timeout".into(),
            )));
        }
        let Some(status) = status else {
            return Ok(Err(TrialError::Failed("lost the child process".into())));
        };
        if !status.success() {
            let tail = std::fs::read_to_string(&err_path)
                .ok()
                .and_then(|s| s.lines().last().map(str::to_string))
                .unwrap_or_default();
            return Ok(Err(TrialError::Failed(format!("{status}: {tail}"))));
        }
        let Some(first) = metric_v else {
            return Ok(Err(TrialError::Failed(
                "no metric in the output (see stdout.log)".into(),
            )));
        };
        let mut values = vec![first];
        for (v, k) in extras.into_iter().zip(&self.extra_keys) {
            match v {
                Some(v) => values.push(v),
                None => {
                    return Ok(Err(TrialError::Failed(format!(
                        "no metric `{k}` in the output (see stdout.log)"
                    ))));
                }
            }
        }
        Ok(Ok(values))
    }
}

impl Objective for CommandObjective {
    fn evaluate(&self, trial: &TrialHandle) -> std::result::Result<Vec<f64>, TrialError> {
        match self.run(trial) {
            Ok(r) => r,
            Err(e) => Err(TrialError::Failed(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::space::ParamValue;

    #[test]
    fn substitution_and_env_names() {
        let mut p = Params::new();
        p.insert("lr".into(), ParamValue::Float(0.01));
        p.insert("ctx".into(), ParamValue::Int(128));
        assert_eq!(substitute("--lr={lr}", &p), "--lr=0.01");
        assert_eq!(substitute("{ctx}{{x}}{nope}", &p), "128{x}}{nope}");
        assert_eq!(env_name("warmup-steps"), "AR_PARAM_WARMUP_STEPS");
    }
}
