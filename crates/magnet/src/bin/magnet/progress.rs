//! Progress on stderr (docs/cli.md): a bar over the run's rounds with an ETA and the phase
//! the party is in, where stderr is a terminal; hidden with `--json` and off a terminal
//! (indicatif draws nothing there), where the per-round log lines still print.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar over `rounds` rounds for the party `who`, hidden when `hide`.
pub fn rounds(rounds: u64, who: &str, hide: bool) -> ProgressBar {
    let target = if hide {
        ProgressDrawTarget::hidden()
    } else {
        ProgressDrawTarget::stderr()
    };
    ProgressBar::with_draw_target(Some(rounds), target)
        .with_style(
            ProgressStyle::with_template(
                "{prefix:>12} [{elapsed_precise}] {wide_bar} round {pos}/{len} ({eta} left) {msg}",
            )
            .expect("valid template"),
        )
        .with_prefix(who.to_string())
}

/// A phase callback for the library's hooks: the bar shows the round as started and the
/// phase as its message.
pub fn phases(bar: &ProgressBar) -> impl FnMut(u64, &str) + Send + 'static {
    let bar = bar.clone();
    move |round, phase| {
        bar.set_position(round.saturating_sub(1));
        bar.set_message(format!("round {round}: {phase}"));
    }
}

/// One log line: above the bar when it is drawn, else a plain stderr line.
pub fn log(bar: &ProgressBar, line: &str) {
    if bar.is_hidden() {
        eprintln!("{line}");
    } else {
        bar.println(line);
    }
}
