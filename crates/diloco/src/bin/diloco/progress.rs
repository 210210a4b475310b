//! Progress on stderr (docs/cli.md, section 6): an indicatif bar with an ETA where stderr
//! is a terminal, plain lines elsewhere (indicatif hides a bar whose stderr is not a
//! terminal) and with `--json`, whose callers are programs that read logs line by line.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar over `len` units (inner steps, rounds) on stderr; hidden when `hide`.
pub fn bar(len: u64, prefix: &str, hide: bool) -> ProgressBar {
    let target = if hide {
        ProgressDrawTarget::hidden()
    } else {
        ProgressDrawTarget::stderr()
    };
    ProgressBar::with_draw_target(Some(len), target)
        .with_style(
            ProgressStyle::with_template(
                "{prefix:>12} [{elapsed_precise}] {wide_bar} {pos}/{len} ({eta} left) {msg}",
            )
            .expect("valid template"),
        )
        .with_prefix(prefix.to_string())
}

/// One log line: above the bar when it is drawn, else a plain stderr line (indicatif drops
/// `println` on a hidden bar, and logs must still show where the job is).
pub fn log(bar: &ProgressBar, line: &str) {
    if bar.is_hidden() {
        eprintln!("{line}");
    } else {
        bar.println(line);
    }
}
