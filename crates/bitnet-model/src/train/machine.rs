//! The machine a result was computed on, for every report: "same seed, same result" holds
//! only on the same CPU model and SIMD features (docs/genkidama.md, Reproducibility), so a
//! report that does not name them cannot be checked against another.

use serde::{Deserialize, Serialize};

/// CPU model, architecture and the SIMD features that select kernels (burn's and
/// ternary-core's), detected at run time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Machine {
    /// `model name` from /proc/cpuinfo (Linux), else `unknown`.
    pub cpu_model: String,
    /// `x86_64`, `aarch64`, ...
    pub arch: String,
    /// The kernel-relevant features this CPU has, in a fixed order (e.g. `avx2`, `fma`,
    /// `avx512f`, `avx512vnni`, `neon`).
    pub cpu_features: Vec<String>,
    /// Logical CPUs this process may use.
    pub logical_cpus: usize,
    /// Threads of the rayon pool that burn's CPU backend (and our kernels) run on. Part of
    /// the numerics: a parallel reduction may split its sums by thread. 0 in reports
    /// written before it was recorded.
    #[serde(default)]
    pub threads: usize,
    /// The operating system.
    pub os: String,
}

impl Machine {
    /// Detects the running machine.
    pub fn detect() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name") || l.starts_with("Model"))
            .and_then(|l| l.split_once(':'))
            .map_or_else(|| "unknown".to_string(), |(_, v)| v.trim().to_string());
        Self {
            cpu_model,
            arch: std::env::consts::ARCH.to_string(),
            cpu_features: features().into_iter().map(String::from).collect(),
            logical_cpus: std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
            threads: rayon::current_num_threads(),
            os: std::env::consts::OS.to_string(),
        }
    }

    /// Whether results computed on `other` are expected to be bit-identical to results
    /// computed here: same architecture, CPU model, features and thread count (a report
    /// without a recorded thread count matches any).
    pub fn same_numerics(&self, other: &Machine) -> bool {
        self.arch == other.arch
            && self.cpu_model == other.cpu_model
            && self.cpu_features == other.cpu_features
            && (self.threads == other.threads || self.threads == 0 || other.threads == 0)
    }
}

#[cfg(target_arch = "x86_64")]
fn features() -> Vec<&'static str> {
    let mut out = Vec::new();
    macro_rules! probe {
        ($($f:tt),*) => {$(
            if std::arch::is_x86_feature_detected!($f) {
                out.push($f);
            }
        )*};
    }
    probe!(
        "sse4.2",
        "avx",
        "avx2",
        "fma",
        "f16c",
        "bmi2",
        "avx512f",
        "avx512bw",
        "avx512vl",
        "avx512vnni",
        "avx512bf16",
        "avxvnni"
    );
    out
}

#[cfg(target_arch = "aarch64")]
fn features() -> Vec<&'static str> {
    let mut out = Vec::new();
    macro_rules! probe {
        ($($f:tt),*) => {$(
            if std::arch::is_aarch64_feature_detected!($f) {
                out.push($f);
            }
        )*};
    }
    probe!("neon", "dotprod", "i8mm", "fp16", "sve");
    out
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn features() -> Vec<&'static str> {
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_this_machine_and_round_trips() {
        let m = Machine::detect();
        assert_eq!(m.arch, std::env::consts::ARCH);
        assert!(m.logical_cpus >= 1);
        #[cfg(target_arch = "x86_64")]
        assert_eq!(
            m.cpu_features.iter().any(|f| f == "avx2"),
            std::arch::is_x86_feature_detected!("avx2")
        );
        let json = serde_json::to_string(&m).unwrap();
        let back: Machine = serde_json::from_str(&json).unwrap();
        assert_eq!(back, m);
        assert!(m.same_numerics(&back));
        let other = Machine {
            cpu_features: vec!["avx2".into()],
            ..m.clone()
        };
        assert_eq!(
            m.same_numerics(&other),
            m.cpu_features == other.cpu_features
        );
        assert!(m.threads >= 1);
        let more = Machine {
            threads: m.threads + 1,
            ..m.clone()
        };
        assert!(!m.same_numerics(&more));
        // A report written before the thread count was recorded reads as 0 and matches.
        let mut old: serde_json::Value = serde_json::to_value(&m).unwrap();
        old.as_object_mut().unwrap().remove("threads");
        let old: Machine = serde_json::from_value(old).unwrap();
        assert_eq!(old.threads, 0);
        assert!(m.same_numerics(&old));
    }
}
