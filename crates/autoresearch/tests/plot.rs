//! SVG plots of a real study: files are produced, well formed, and hold the expected series.
#![cfg(feature = "plot")]

use std::sync::Arc;

use autoresearch::plot::{history_svg, importance_svg, parallel_coordinates_svg, write_plots};
use autoresearch::{
    Direction, OptimizeOptions, ParamValue, SearchSpace, Study, TpeSampler, TrialError,
    TrialHandle, TrialState,
};

/// Checks that tags nest and close (enough of XML for what plotters writes) and returns
/// the opening tags (name and attributes) in document order.
fn elements(svg: &str) -> Vec<String> {
    let body = svg.trim();
    assert!(
        body.starts_with("<svg"),
        "does not start with <svg: {}",
        &body[..40]
    );
    assert!(body.ends_with("</svg>"), "does not end with </svg>");
    let mut stack: Vec<String> = Vec::new();
    let mut names = Vec::new();
    let mut rest = body;
    while let Some(i) = rest.find('<') {
        rest = &rest[i + 1..];
        let end = rest.find('>').expect("unterminated tag");
        let tag = &rest[..end];
        rest = &rest[end + 1..];
        if let Some(close) = tag.strip_prefix('/') {
            assert_eq!(
                stack.pop().as_deref(),
                Some(close.trim()),
                "mismatched </{close}>"
            );
        } else if !tag.starts_with('?') && !tag.starts_with('!') {
            let name: String = tag
                .chars()
                .take_while(|c| !c.is_whitespace() && *c != '/')
                .collect();
            names.push(tag.to_string());
            if !tag.ends_with('/') {
                stack.push(name);
            }
        }
    }
    assert!(stack.is_empty(), "unclosed tags {stack:?}");
    names
}

/// The trimmed contents of every `<text>` element.
fn texts(svg: &str) -> Vec<String> {
    svg.split("<text")
        .skip(1)
        .filter_map(|part| {
            let body = &part[part.find('>')? + 1..];
            Some(body[..body.find("</text>")?].trim().to_string())
        })
        .collect()
}

fn count(tags: &[String], name: &str) -> usize {
    tags.iter()
        .filter(|t| t.split_whitespace().next() == Some(name))
        .count()
}

/// Lines that are data series: any stroke but the black of axes and ticks.
fn series_lines(tags: &[String]) -> usize {
    tags.iter()
        .filter(|t| t.starts_with("polyline") && !t.contains("stroke=\"#000000\""))
        .count()
}

fn study() -> Study {
    let space = SearchSpace::new()
        .float("lr", 1e-4, 1e-1, true)
        .int("layers", 1, 8, 1, false)
        .categorical(
            "opt",
            vec![
                ParamValue::Str("adam".into()),
                ParamValue::Str("sgd".into()),
            ],
        );
    let s = Study::builder(space)
        .sampler(TpeSampler::default())
        .seed(4)
        .build()
        .unwrap();
    let objective = |t: &TrialHandle| -> Result<f64, TrialError> {
        let lr = t.suggest_float("lr")?;
        let layers = t.suggest_int("layers")?;
        if layers == 8 {
            return Err(TrialError::Failed("too deep".into()));
        }
        let sgd = t.suggest_categorical("opt")? == &ParamValue::Str("sgd".into());
        Ok((lr.log10() + 2.0).powi(2) + 0.1 * layers as f64 + if sgd { 0.5 } else { 0.0 })
    };
    s.optimize(Arc::new(objective), &OptimizeOptions::trials(40))
        .unwrap();
    s
}

#[test]
fn plots_hold_one_series_per_trial_and_parameter() {
    let s = study();
    let trials = s.trials().unwrap();
    let n_complete = trials
        .iter()
        .filter(|t| t.state == TrialState::Complete)
        .count();
    assert!(
        n_complete >= 20 && n_complete < trials.len(),
        "{n_complete}"
    );

    let h = elements(&history_svg(&trials, Direction::Minimize).unwrap());
    // One dot per complete trial plus the legend's; the best-so-far line plus its legend.
    assert_eq!(count(&h, "circle"), n_complete + 1);
    assert_eq!(series_lines(&h), 2);

    let svg = parallel_coordinates_svg(&trials, s.space(), Direction::Minimize).unwrap();
    let p = elements(&svg);
    // One line per complete trial, one axis per parameter and the objective's.
    assert_eq!(series_lines(&p), n_complete);
    assert_eq!(count(&p, "polyline") - n_complete, 4);
    let labels = texts(&svg);
    for name in ["lr", "layers", "opt", "objective"] {
        assert!(
            labels.iter().any(|t| t == name),
            "axis {name} unlabelled: {labels:?}"
        );
    }

    let svg = importance_svg(&trials, s.space(), Direction::Minimize).unwrap();
    let i = elements(&svg);
    let labels = texts(&svg);
    for name in ["lr", "layers", "opt"] {
        let prefix = format!("{name} (");
        assert!(
            labels.iter().any(|t| t.starts_with(&prefix)),
            "no bar label for {name}: {labels:?}"
        );
    }
    // The background plus one bar per parameter (the mesh is drawn with lines).
    assert_eq!(count(&i, "rect"), 1 + 3);
}

#[test]
fn write_plots_creates_the_three_files() {
    let s = study();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("plots");
    let files = write_plots(&s.trials().unwrap(), s.space(), Direction::Minimize, &out).unwrap();
    if let Ok(keep) = std::env::var("AUTORESEARCH_KEEP_PLOTS") {
        for f in &files {
            std::fs::copy(f, std::path::Path::new(&keep).join(f.file_name().unwrap())).unwrap();
        }
    }
    assert_eq!(files.len(), 3);
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(!elements(&text).is_empty(), "{}", f.display());
    }
}

#[test]
fn plots_of_an_empty_study_are_still_valid() {
    let space = SearchSpace::new().float("x", 0.0, 1.0, false);
    for svg in [
        history_svg(&[], Direction::Minimize).unwrap(),
        parallel_coordinates_svg(&[], &space, Direction::Maximize).unwrap(),
        importance_svg(&[], &space, Direction::Minimize).unwrap(),
    ] {
        elements(&svg);
    }
}
