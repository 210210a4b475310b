//! Search spaces: typed parameters, their encodings, conditions, and TOML / JSON definitions.
//!
//! Every distribution has two encodings that samplers use:
//! - *internal*: a real number in the space where models are fitted (log for log-scaled
//!   parameters, the index for categoricals), with [`Distribution::internal_bounds`] widened by
//!   half a step for discrete numbers so every grid point owns an equal interval;
//! - *unit*: the internal range mapped to `[0, 1]`, used by random, QMC and CMA-ES.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A parameter value as given to the objective.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ParamValue {
    /// A boolean categorical choice.
    Bool(bool),
    /// An integer parameter or choice.
    Int(i64),
    /// A float parameter or choice.
    Float(f64),
    /// A string choice.
    Str(String),
}

impl ParamValue {
    /// The value as `f64` when it is numeric.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Self::Int(i) => Some(*i as f64),
            Self::Float(f) => Some(*f),
            Self::Bool(_) | Self::Str(_) => None,
        }
    }
}

impl fmt::Display for ParamValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bool(b) => write!(f, "{b}"),
            Self::Int(i) => write!(f, "{i}"),
            Self::Float(x) => write!(f, "{x}"),
            Self::Str(s) => f.write_str(s),
        }
    }
}

/// Parameter assignment of one trial, ordered by name.
pub type Params = BTreeMap<String, ParamValue>;

/// The distribution a parameter is drawn from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Distribution {
    /// A real number in `[low, high]`, optionally log-scaled or on a step grid.
    Float {
        /// Lower bound (inclusive).
        low: f64,
        /// Upper bound (inclusive).
        high: f64,
        /// Sample in log space (requires `low > 0`).
        #[serde(default)]
        log: bool,
        /// Grid spacing (not with `log`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        step: Option<f64>,
    },
    /// An integer in `[low, high]` on a step grid, optionally log-scaled.
    Int {
        /// Lower bound (inclusive).
        low: i64,
        /// Upper bound (inclusive).
        high: i64,
        /// Grid spacing (1 unless given; must be 1 with `log`).
        #[serde(default = "one")]
        step: i64,
        /// Sample in log space (requires `low >= 1`).
        #[serde(default)]
        log: bool,
    },
    /// One of a list of choices.
    Categorical {
        /// The choices, in order.
        choices: Vec<ParamValue>,
    },
}

fn one() -> i64 {
    1
}

impl Distribution {
    /// Checks the bounds and options.
    pub fn validate(&self, name: &str) -> Result<()> {
        let err = |msg: &str| {
            Err(Error::Space {
                param: name.to_string(),
                msg: msg.to_string(),
            })
        };
        match *self {
            Self::Float {
                low,
                high,
                log,
                step,
            } => {
                if !(low.is_finite() && high.is_finite()) || low > high {
                    return err("needs finite low <= high");
                }
                if log && low <= 0.0 {
                    return err("log scale needs low > 0");
                }
                if let Some(s) = step {
                    if log {
                        return err("step and log cannot be combined");
                    }
                    if !(s.is_finite() && s > 0.0) {
                        return err("step must be > 0");
                    }
                }
            }
            Self::Int {
                low,
                high,
                step,
                log,
            } => {
                if low > high {
                    return err("needs low <= high");
                }
                if step < 1 {
                    return err("step must be >= 1");
                }
                if log && (low < 1 || step != 1) {
                    return err("log scale needs low >= 1 and step 1");
                }
            }
            Self::Categorical { ref choices } => {
                if choices.is_empty() {
                    return err("needs at least one choice");
                }
                if choices
                    .iter()
                    .any(|c| matches!(c, ParamValue::Float(f) if !f.is_finite()))
                {
                    return err("choices must be finite");
                }
            }
        }
        Ok(())
    }

    /// Whether this is a categorical distribution.
    pub fn is_categorical(&self) -> bool {
        matches!(self, Self::Categorical { .. })
    }

    /// Number of categorical choices (0 for numeric distributions).
    pub fn n_choices(&self) -> usize {
        match self {
            Self::Categorical { choices } => choices.len(),
            _ => 0,
        }
    }

    /// Grid spacing in the internal space for discrete numeric distributions.
    pub fn internal_step(&self) -> Option<f64> {
        match *self {
            Self::Float { step, .. } => step,
            Self::Int { step, log, .. } => (!log).then_some(step as f64),
            Self::Categorical { .. } => None,
        }
    }

    /// Bounds of the internal encoding (widened by half a step for discrete values).
    pub fn internal_bounds(&self) -> (f64, f64) {
        match *self {
            Self::Float {
                low,
                high,
                log,
                step,
            } => match (log, step) {
                (true, _) => (low.ln(), high.ln()),
                (false, Some(s)) => {
                    let high = snap(high, low, s, low, high);
                    (low - s / 2.0, high + s / 2.0)
                }
                (false, None) => (low, high),
            },
            Self::Int {
                low,
                high,
                step,
                log,
            } => {
                if log {
                    ((low as f64 - 0.5).ln(), (high as f64 + 0.5).ln())
                } else {
                    let last = low + (high - low) / step * step;
                    (
                        low as f64 - step as f64 / 2.0,
                        last as f64 + step as f64 / 2.0,
                    )
                }
            }
            Self::Categorical { ref choices } => (-0.5, choices.len() as f64 - 0.5),
        }
    }

    /// Encodes a value into the internal space.
    pub fn to_internal(&self, v: &ParamValue) -> Option<f64> {
        match *self {
            Self::Float { log, .. } | Self::Int { log, .. } => {
                let x = v.as_f64()?;
                Some(if log { x.ln() } else { x })
            }
            Self::Categorical { ref choices } => {
                choices.iter().position(|c| c == v).map(|i| i as f64)
            }
        }
    }

    /// Decodes an internal value (any real; clamped and snapped to a legal value).
    pub fn from_internal(&self, x: f64) -> ParamValue {
        let x = if x.is_nan() {
            self.internal_bounds().0
        } else {
            x
        };
        match *self {
            Self::Float {
                low,
                high,
                log,
                step,
            } => {
                let v = if log { x.exp() } else { x };
                let v = match step {
                    Some(s) => snap(v, low, s, low, high),
                    None => v.clamp(low, high),
                };
                ParamValue::Float(v)
            }
            Self::Int {
                low,
                high,
                step,
                log,
            } => {
                let v = if log { x.exp() } else { x };
                let k = ((v - low as f64) / step as f64).round();
                let max_k = (high - low) / step;
                let k = (k.max(0.0) as i64).min(max_k);
                ParamValue::Int(low + k * step)
            }
            Self::Categorical { ref choices } => {
                let i = (x.round().max(0.0) as usize).min(choices.len() - 1);
                choices[i].clone()
            }
        }
    }

    /// Maps `u` in `[0, 1]` onto a legal value (uniform in the internal space).
    pub fn from_unit(&self, u: f64) -> ParamValue {
        let u = u.clamp(0.0, 1.0);
        if let Self::Categorical { choices } = self {
            let i = ((u * choices.len() as f64) as usize).min(choices.len() - 1);
            return choices[i].clone();
        }
        let (lo, hi) = self.internal_bounds();
        self.from_internal(lo + u * (hi - lo))
    }

    /// Maps a legal value to the middle of its cell in `[0, 1]`.
    pub fn to_unit(&self, v: &ParamValue) -> Option<f64> {
        if let Self::Categorical { choices } = self {
            let i = choices.iter().position(|c| c == v)?;
            return Some((i as f64 + 0.5) / choices.len() as f64);
        }
        let (lo, hi) = self.internal_bounds();
        let x = self.to_internal(v)?;
        Some(if hi > lo { (x - lo) / (hi - lo) } else { 0.5 })
    }

    /// Whether a value is legal for this distribution.
    pub fn contains(&self, v: &ParamValue) -> bool {
        match *self {
            Self::Float { low, high, .. } => {
                matches!(v.as_f64(), Some(x) if x >= low && x <= high)
            }
            Self::Int {
                low, high, step, ..
            } => {
                matches!(v, ParamValue::Int(i) if *i >= low && *i <= high && (i - low) % step == 0)
            }
            Self::Categorical { ref choices } => choices.contains(v),
        }
    }

    /// `n` evenly spaced values (all values for small discrete spaces) for grid search.
    pub fn grid(&self, n: usize) -> Vec<ParamValue> {
        let n = n.max(1);
        match self {
            Self::Categorical { choices } => choices.clone(),
            Self::Int {
                low, high, step, ..
            } if ((high - low) / step + 1) as usize <= n => (0..=(high - low) / step)
                .map(|k| ParamValue::Int(low + k * step))
                .collect(),
            _ => {
                let mut out: Vec<ParamValue> = Vec::with_capacity(n);
                for i in 0..n {
                    let u = if n == 1 {
                        0.5
                    } else {
                        i as f64 / (n - 1) as f64
                    };
                    let v = self.grid_point(u);
                    if !out.contains(&v) {
                        out.push(v);
                    }
                }
                out
            }
        }
    }

    fn grid_point(&self, u: f64) -> ParamValue {
        match *self {
            Self::Float { low, high, log, .. } => {
                let x = if log {
                    (low.ln() + u * (high.ln() - low.ln())).exp()
                } else {
                    low + u * (high - low)
                };
                self.from_internal(if log { x.ln() } else { x })
            }
            Self::Int { low, high, log, .. } => {
                let x = if log {
                    ((low as f64).ln() + u * ((high as f64).ln() - (low as f64).ln())).exp()
                } else {
                    low as f64 + u * (high - low) as f64
                };
                self.from_internal(if log { x.ln() } else { x })
            }
            Self::Categorical { .. } => self.from_unit(u),
        }
    }

    /// A central value (the default when nothing better is known).
    pub fn center(&self) -> ParamValue {
        match self {
            Self::Categorical { choices } => choices[0].clone(),
            _ => self.from_unit(0.5),
        }
    }
}

fn snap(v: f64, origin: f64, step: f64, low: f64, high: f64) -> f64 {
    let max_k = ((high - low) / step + 1e-9).floor();
    let k = ((v - origin) / step).round().clamp(0.0, max_k);
    origin + k * step
}

/// Makes a parameter active only when its parent has one of the listed values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Condition {
    /// Name of the parent parameter (declared earlier).
    pub parent: String,
    /// Parent values that activate this parameter.
    pub values: Vec<ParamValue>,
}

/// One named parameter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Param {
    /// Name (used in `{name}` substitution and env vars).
    pub name: String,
    /// Its distribution.
    #[serde(flatten)]
    pub dist: Distribution,
    /// Value used before anything better is known (phased search, start configs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<ParamValue>,
    /// Activation condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<Condition>,
}

/// An ordered list of parameters.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SearchSpace {
    /// Parameters in declaration order; a condition's parent comes before its child.
    pub params: Vec<Param>,
}

impl SearchSpace {
    /// An empty space, to build with the `float` / `int` / `categorical` methods.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a float parameter.
    pub fn float(mut self, name: &str, low: f64, high: f64, log: bool) -> Self {
        self.params.push(Param {
            name: name.into(),
            dist: Distribution::Float {
                low,
                high,
                log,
                step: None,
            },
            default: None,
            condition: None,
        });
        self
    }

    /// Adds an integer parameter.
    pub fn int(mut self, name: &str, low: i64, high: i64, step: i64, log: bool) -> Self {
        self.params.push(Param {
            name: name.into(),
            dist: Distribution::Int {
                low,
                high,
                step,
                log,
            },
            default: None,
            condition: None,
        });
        self
    }

    /// Adds a categorical parameter.
    pub fn categorical(mut self, name: &str, choices: Vec<ParamValue>) -> Self {
        self.params.push(Param {
            name: name.into(),
            dist: Distribution::Categorical { choices },
            default: None,
            condition: None,
        });
        self
    }

    /// Makes the last added parameter conditional on `parent` taking one of `values`.
    pub fn when(mut self, parent: &str, values: Vec<ParamValue>) -> Self {
        if let Some(p) = self.params.last_mut() {
            p.condition = Some(Condition {
                parent: parent.into(),
                values,
            });
        }
        self
    }

    /// Sets the default of the last added parameter.
    pub fn default_value(mut self, v: ParamValue) -> Self {
        if let Some(p) = self.params.last_mut() {
            p.default = Some(v);
        }
        self
    }

    /// Checks names, distributions, defaults and condition order.
    pub fn validate(&self) -> Result<()> {
        let mut seen: BTreeMap<&str, &Param> = BTreeMap::new();
        for p in &self.params {
            let err = |msg: String| Error::Space {
                param: p.name.clone(),
                msg,
            };
            if p.name.is_empty()
                || !p
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
            {
                return Err(err("name must be non-empty [A-Za-z0-9_.-]".into()));
            }
            if seen.contains_key(p.name.as_str()) {
                return Err(err("declared twice".into()));
            }
            p.dist.validate(&p.name)?;
            if let Some(d) = &p.default
                && !p.dist.contains(d)
            {
                return Err(err(format!("default {d} is outside the distribution")));
            }
            if let Some(c) = &p.condition {
                let Some(parent) = seen.get(c.parent.as_str()) else {
                    return Err(err(format!(
                        "condition parent `{}` must be declared before it",
                        c.parent
                    )));
                };
                if let Some(v) = c.values.iter().find(|v| !parent.dist.contains(v)) {
                    return Err(err(format!(
                        "condition value {v} is not a value of `{}`",
                        c.parent
                    )));
                }
            }
            seen.insert(&p.name, p);
        }
        Ok(())
    }

    /// Parses and validates a TOML definition (`[[params]]` tables).
    pub fn from_toml(text: &str) -> Result<Self> {
        let s: Self = toml::from_str(text).map_err(|e| Error::SpaceFile {
            path: "<toml>".into(),
            source: Box::new(e),
        })?;
        s.validate()?;
        Ok(s)
    }

    /// Parses and validates a JSON definition (`{"params": [...]}`).
    pub fn from_json(text: &str) -> Result<Self> {
        let s: Self = serde_json::from_str(text).map_err(|e| Error::SpaceFile {
            path: "<json>".into(),
            source: Box::new(e),
        })?;
        s.validate()?;
        Ok(s)
    }

    /// Reads a `.toml` or `.json` file (by extension; TOML otherwise).
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let parsed = if path.extension().is_some_and(|e| e == "json") {
            Self::from_json(&text)
        } else {
            Self::from_toml(&text)
        };
        parsed.map_err(|e| match e {
            Error::SpaceFile { source, .. } => Error::SpaceFile {
                path: path.into(),
                source,
            },
            other => Error::SpaceFile {
                path: path.into(),
                source: Box::new(other),
            },
        })
    }

    /// Serializes to TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }

    /// Looks a parameter up by name.
    pub fn get(&self, name: &str) -> Option<&Param> {
        self.params.iter().find(|p| p.name == name)
    }

    /// Whether `p` is active given already-decided values.
    pub fn is_active(p: &Param, values: &Params) -> bool {
        match &p.condition {
            None => true,
            Some(c) => values.get(&c.parent).is_some_and(|v| c.values.contains(v)),
        }
    }

    /// Keeps only active parameters (in declaration order, so parents decide first).
    pub fn activate(&self, mut proposal: Params) -> Params {
        let mut out = Params::new();
        for p in &self.params {
            if Self::is_active(p, &out)
                && let Some(v) = proposal.remove(&p.name)
            {
                out.insert(p.name.clone(), v);
            }
        }
        out
    }

    /// Walks the space in order, asking `f` for each active parameter.
    pub fn sample_with(&self, mut f: impl FnMut(&Param, &Params) -> ParamValue) -> Params {
        let mut out = Params::new();
        for p in &self.params {
            if Self::is_active(p, &out) {
                let v = f(p, &out);
                out.insert(p.name.clone(), v);
            }
        }
        out
    }

    /// The defaults (or centers) of every active parameter.
    pub fn defaults(&self) -> Params {
        self.sample_with(|p, _| p.default.clone().unwrap_or_else(|| p.dist.center()))
    }

    /// The subspace of the named parameters (conditions on outside parents are kept).
    pub fn subspace(&self, names: &[String]) -> Self {
        Self {
            params: self
                .params
                .iter()
                .filter(|p| names.contains(&p.name))
                .cloned()
                .collect(),
        }
    }

    /// Whether a parameter can ever be inactive.
    pub fn is_conditional(&self, name: &str) -> bool {
        self.get(name).is_some_and(|p| p.condition.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn dist_strategy() -> impl Strategy<Value = Distribution> {
        prop_oneof![
            (-1e3f64..1e3, 0.0f64..1e3, any::<bool>()).prop_map(|(low, w, log)| {
                if log {
                    Distribution::Float {
                        low: low.abs() + 1e-3,
                        high: low.abs() + 1e-3 + w,
                        log,
                        step: None,
                    }
                } else {
                    Distribution::Float {
                        low,
                        high: low + w,
                        log,
                        step: None,
                    }
                }
            }),
            (-1e3f64..1e3, 0.0f64..1e3, 1e-3f64..10.0).prop_map(|(low, w, s)| {
                Distribution::Float {
                    low,
                    high: low + w,
                    log: false,
                    step: Some(s),
                }
            }),
            (-1000i64..1000, 0i64..1000, 1i64..7).prop_map(|(low, w, step)| {
                Distribution::Int {
                    low,
                    high: low + w,
                    step,
                    log: false,
                }
            }),
            (1i64..1000, 0i64..100_000).prop_map(|(low, w)| Distribution::Int {
                low,
                high: low + w,
                step: 1,
                log: true,
            }),
            (1usize..8).prop_map(|n| Distribution::Categorical {
                choices: (0..n).map(|i| ParamValue::Str(format!("c{i}"))).collect()
            }),
        ]
    }

    proptest! {
        #[test]
        fn unit_decodes_to_legal_values_and_round_trips(d in dist_strategy(), u in 0.0f64..=1.0) {
            d.validate("p").unwrap();
            let v = d.from_unit(u);
            prop_assert!(d.contains(&v), "{v:?} not in {d:?}");
            // Decoding the encoding of a legal value gives it back.
            let x = d.to_internal(&v).unwrap();
            let back = d.from_internal(x);
            #[allow(clippy::single_match_else)]
            match (&v, &back) {
                (ParamValue::Float(a), ParamValue::Float(b)) => {
                    prop_assert!((a - b).abs() <= 1e-9 * a.abs().max(1.0), "{a} vs {b}");
                }
                _ => prop_assert_eq!(&v, &back),
            }
            let u2 = d.to_unit(&v).unwrap();
            prop_assert!((0.0..=1.0).contains(&u2));
            let v2 = d.from_unit(u2);
            #[allow(clippy::single_match_else)]
            match (&v, &v2) {
                (ParamValue::Float(a), ParamValue::Float(b)) => {
                    prop_assert!((a - b).abs() <= 1e-9 * a.abs().max(1.0));
                }
                _ => prop_assert_eq!(&v, &v2),
            }
        }

        #[test]
        fn internal_decoding_is_total(d in dist_strategy(), x in proptest::num::f64::ANY) {
            let v = d.from_internal(x);
            prop_assert!(d.contains(&v), "{x} -> {v:?} not in {d:?}");
        }

        #[test]
        fn grid_points_are_legal(d in dist_strategy(), n in 1usize..12) {
            for v in d.grid(n) {
                prop_assert!(d.contains(&v));
            }
        }
    }

    #[test]
    fn toml_and_json_definitions_parse_and_validate() {
        let text = r#"
[[params]]
name = "lr"
type = "float"
low = 1e-5
high = 0.1
log = true

[[params]]
name = "depth"
type = "int"
low = 2
high = 12
step = 2

[[params]]
name = "opt"
type = "categorical"
choices = ["adam", "sgd"]
default = "adam"

[[params]]
name = "momentum"
type = "float"
low = 0.0
high = 0.99
condition = { parent = "opt", values = ["sgd"] }
"#;
        let s = SearchSpace::from_toml(text).unwrap();
        assert_eq!(s.params.len(), 4);
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(SearchSpace::from_json(&json).unwrap(), s);
        assert_eq!(SearchSpace::from_toml(&s.to_toml()).unwrap(), s);

        let mut vals = Params::new();
        vals.insert("opt".into(), ParamValue::Str("adam".into()));
        vals.insert("momentum".into(), ParamValue::Float(0.5));
        let act = s.activate(vals.clone());
        assert!(!act.contains_key("momentum"));
        vals.insert("opt".into(), ParamValue::Str("sgd".into()));
        assert!(s.activate(vals).contains_key("momentum"));
    }

    #[test]
    fn invalid_definitions_name_the_parameter() {
        let bad = r#"
[[params]]
name = "x"
type = "float"
low = 1.0
high = 0.0
"#;
        let e = SearchSpace::from_toml(bad).unwrap_err().to_string();
        assert!(e.contains("`x`"), "{e}");
        let bad_cond = r#"
[[params]]
name = "m"
type = "float"
low = 0.0
high = 1.0
condition = { parent = "opt", values = ["sgd"] }
"#;
        let e = SearchSpace::from_toml(bad_cond).unwrap_err().to_string();
        assert!(e.contains("parent `opt`"), "{e}");
        assert!(SearchSpace::from_toml("params = 3").is_err());
    }
}
