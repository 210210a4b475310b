//! `cargo xtask corpus [--out DIR] [--debs DIR] [--pack]`: rebuild the trilingual
//! training corpus from Debian documentation packages, following the extraction rules
//! documented with the shipped copy (crates/magnet-corpus/README.md):
//!
//! 1. `apt-get download` every source package (or take the `.deb` files in `--debs`),
//!    `dpkg-deb -x` each one.
//! 2. HTML / XHTML / Mallard pages to text: skip script, style, head, nav, aside, pre and
//!    screen/code blocks, keep inline code, newline at block tags; LibreOffice help keeps
//!    only what lies between `<div id="DisplayArea">` and `<div id="DEBUG">`.
//! 3. Gettext `.mo` catalogs: every msgstr, split on newlines, `~` and `(_X)` accelerators
//!    and printf / `$(...)` placeholders removed.
//! 4. White space collapsed, lines under 8 characters dropped, exact duplicates dropped per
//!    output file.
//! 5. Script filter per line (letters only): ko >= 50 % Hangul syllables, ja >= 50 % kana
//!    or CJK ideographs, en >= 95 % ASCII.
//!
//! Output: `<out>/{en,ja,ko}/<source>.txt` and `SOURCES.sha256` (default
//! `target/corpus`); `--pack` turns the result into the shipped archive.

use crate::util::{root, run as run_cmd};
use anyhow::{Context, Result, bail};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// (package, short source name used in the output file name).
pub const PACKAGES: &[(&str, &str)] = &[
    ("libreoffice-help-en-us", "lo"),
    ("libreoffice-help-ja", "lo"),
    ("libreoffice-help-ko", "lo"),
    ("libreoffice-l10n-ja", "loui"),
    ("libreoffice-l10n-ko", "loui"),
    ("installation-guide-amd64", "ig"),
    ("gnome-user-docs", "gn"),
    ("debian-faq-ja", "faq"),
    ("debian-faq-ko", "faq"),
    ("debian-reference-en", "dr"),
    ("debian-reference-ja", "dr"),
    ("debian-handbook", "dh"),
];

const SKIP: &[&str] = &[
    "script",
    "style",
    "head",
    "nav",
    "aside",
    "pre",
    "screen",
    "programlisting",
    "synopsis",
];
const BLOCK: &[&str] = &[
    "p",
    "div",
    "li",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "td",
    "th",
    "tr",
    "dt",
    "dd",
    "br",
    "table",
    "section",
    "item",
    "note",
    "title",
    "ul",
    "ol",
    "dl",
    "blockquote",
    "body",
    "page",
    "desc",
];

fn entity(name: &str) -> Option<String> {
    let named = match name {
        "amp" => "&",
        "lt" => "<",
        "gt" => ">",
        "quot" => "\"",
        "apos" => "'",
        "nbsp" => " ",
        "mdash" => "—",
        "ndash" => "–",
        "hellip" => "…",
        "copy" => "©",
        "rarr" => "→",
        "lsquo" => "‘",
        "rsquo" => "’",
        "ldquo" => "“",
        "rdquo" => "”",
        _ => {
            let num = name.strip_prefix('#')?;
            let code = match num.strip_prefix(['x', 'X']) {
                Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                None => num.parse().ok()?,
            };
            return char::from_u32(code).map(String::from);
        }
    };
    Some(named.to_string())
}

/// Text of an HTML / XHTML / Mallard page, one block per line (before filtering).
pub fn html_to_text(html: &str) -> String {
    let html = match (
        html.find("<div id=\"DisplayArea\">"),
        html.find("<div id=\"DEBUG\">"),
    ) {
        (Some(a), Some(b)) if a < b => &html[a..b],
        (Some(a), None) => &html[a..],
        _ => html,
    };
    let mut out = String::new();
    let mut skip_depth: Vec<String> = Vec::new();
    let mut rest = html;
    while !rest.is_empty() {
        if let Some(stripped) = rest.strip_prefix("<!--") {
            rest = stripped.find("-->").map_or("", |i| &stripped[i + 3..]);
            continue;
        }
        if rest.starts_with('<') {
            let end = rest.find('>').unwrap_or(rest.len() - 1);
            let tag = &rest[1..end];
            rest = &rest[(end + 1).min(rest.len())..];
            let closing = tag.starts_with('/');
            let name: String = tag
                .trim_start_matches('/')
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == ':' || *c == '-')
                .collect::<String>()
                .to_ascii_lowercase();
            let name = name.rsplit(':').next().unwrap_or("").to_string();
            let self_closing = tag.ends_with('/');
            let is_code_block =
                name == "code" && tag.contains("mime=") || tag.contains("class=\"code\"");
            if SKIP.contains(&name.as_str()) || (is_code_block && !closing) {
                if closing {
                    if let Some(pos) = skip_depth.iter().rposition(|n| *n == name) {
                        skip_depth.truncate(pos);
                    }
                } else if !self_closing {
                    skip_depth.push(name.clone());
                }
                continue;
            }
            if closing && !skip_depth.is_empty() && skip_depth.last() == Some(&name) {
                skip_depth.pop();
                continue;
            }
            if skip_depth.is_empty() && BLOCK.contains(&name.as_str()) {
                out.push('\n');
            }
            continue;
        }
        let next = rest.find('<').unwrap_or(rest.len());
        if skip_depth.is_empty() {
            let mut text = &rest[..next];
            while let Some(amp) = text.find('&') {
                out.push_str(&text[..amp]);
                let tail = &text[amp + 1..];
                if let Some((i, s)) = tail
                    .find(';')
                    .filter(|&i| i <= 10)
                    .and_then(|i| entity(&tail[..i]).map(|s| (i, s)))
                {
                    out.push_str(&s);
                    text = &tail[i + 1..];
                } else {
                    out.push('&');
                    text = tail;
                }
            }
            out.push_str(text);
        }
        rest = &rest[next..];
    }
    out
}

/// The msgstr strings of a gettext `.mo` catalog (both byte orders), or an error naming
/// the offset that is out of range.
pub fn mo_strings(bytes: &[u8]) -> Result<Vec<String>> {
    if bytes.len() < 20 {
        bail!("{} bytes: too short for a .mo header", bytes.len());
    }
    let magic = u32::from_le_bytes(bytes[0..4].try_into()?);
    let le = match magic {
        0x9504_12de => true,
        0xde12_0495 => false,
        other => bail!("bad .mo magic {other:#x}"),
    };
    let word = |off: usize| -> Result<usize> {
        let b: [u8; 4] = bytes
            .get(off..off + 4)
            .with_context(|| format!("offset {off} beyond {} bytes", bytes.len()))?
            .try_into()?;
        Ok(if le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        } as usize)
    };
    let n = word(8)?;
    let trans = word(16)?;
    let mut out = Vec::new();
    for i in 0..n.min(bytes.len() / 8) {
        let len = word(trans + 8 * i)?;
        let off = word(trans + 8 * i + 4)?;
        let s = bytes
            .get(off..off.saturating_add(len))
            .with_context(|| format!("string {i} at offset {off} (+{len}) beyond the file"))?;
        // Plural forms are NUL-separated.
        for part in s.split(|&b| b == 0) {
            out.push(String::from_utf8_lossy(part).into_owned());
        }
    }
    Ok(out)
}

/// Removes accelerators (`~`, `(_X)`) and printf / `$(...)` / `%1`-style placeholders.
pub fn clean_ui_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '~' {
            i += 1;
        } else if c == '(' && chars.get(i + 1) == Some(&'_') && chars.get(i + 3) == Some(&')') {
            i += 4;
        } else if c == '$' && chars.get(i + 1) == Some(&'(') {
            i = chars[i..]
                .iter()
                .position(|&c| c == ')')
                .map_or(chars.len(), |p| i + p + 1);
        } else if c == '%' && chars.get(i + 1).is_some_and(char::is_ascii_alphanumeric) {
            i += 2;
            while chars.get(i).is_some_and(char::is_ascii_alphanumeric) {
                i += 1;
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// Whether a line passes the script filter for `lang` (letters only).
pub fn script_ok(line: &str, lang: &str) -> bool {
    let letters: Vec<char> = line.chars().filter(|c| c.is_alphabetic()).collect();
    if letters.is_empty() {
        return false;
    }
    let share = |f: &dyn Fn(char) -> bool| {
        letters.iter().filter(|&&c| f(c)).count() as f64 / letters.len() as f64
    };
    match lang {
        "ko" => share(&|c| ('\u{AC00}'..='\u{D7A3}').contains(&c)) >= 0.5,
        "ja" => {
            share(&|c| {
                ('\u{3040}'..='\u{30FF}').contains(&c) || ('\u{4E00}'..='\u{9FFF}').contains(&c)
            }) >= 0.5
        }
        _ => share(&|c| c.is_ascii()) >= 0.95,
    }
}

/// Collapsed, long-enough, script-filtered lines of `text`.
pub fn clean_lines<'a>(text: &'a str, lang: &'a str) -> impl Iterator<Item = String> + 'a {
    text.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|l| l.chars().count() >= 8)
        .filter(move |l| script_ok(l, lang))
}

/// Language of an extracted file from its path (`en`, `ja`, `ko`), if it is one of them.
pub fn path_language(path: &Path) -> Option<&'static str> {
    let s = path.to_string_lossy().to_ascii_lowercase();
    for comp in s.split('/') {
        match comp {
            "ja" | "ja_jp" | "ja-jp" => return Some("ja"),
            "ko" | "ko_kr" | "ko-kr" => return Some("ko"),
            "en" | "en-us" | "en_us" | "c" => return Some("en"),
            _ => {}
        }
    }
    let name = path.file_name()?.to_string_lossy().to_ascii_lowercase();
    [".ja.", ".ko.", ".en."]
        .iter()
        .find(|tag| name.contains(**tag))
        .map(|tag| &tag[1..3])
        .and_then(|l| ["ja", "ko", "en"].into_iter().find(|x| *x == l))
}

/// Extracts text from an unpacked package tree into `lines[lang]`.
pub fn extract_tree(tree: &Path, lines: &mut BTreeMap<&'static str, Vec<String>>) -> Result<()> {
    let mut stack = vec![tree.to_path_buf()];
    let mut files = Vec::new();
    while let Some(dir) = stack.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
        {
            let entry = entry?;
            let ty = entry.file_type()?;
            if ty.is_dir() {
                stack.push(entry.path());
            } else if ty.is_file() {
                files.push(entry.path());
            }
        }
    }
    files.sort();
    for path in files {
        let Some(lang) = path_language(path.strip_prefix(tree).unwrap_or(&path)) else {
            continue;
        };
        let ext = path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        let text = match ext.as_str() {
            "html" | "xhtml" | "htm" | "page" => {
                let bytes = std::fs::read(&path)?;
                html_to_text(&String::from_utf8_lossy(&bytes))
            }
            "mo" => {
                let bytes = std::fs::read(&path)?;
                let strings = mo_strings(&bytes).with_context(|| path.display().to_string())?;
                strings
                    .iter()
                    .map(|s| clean_ui_string(s))
                    .collect::<Vec<_>>()
                    .join("\n")
            }
            _ => continue,
        };
        lines
            .entry(lang)
            .or_default()
            .extend(clean_lines(&text, lang));
    }
    Ok(())
}

/// Writes `<out>/<lang>/<source>.txt`, dropping exact duplicates within the file.
pub fn write_source(
    out: &Path,
    source: &str,
    lines: &BTreeMap<&'static str, Vec<String>>,
) -> Result<()> {
    for (lang, ls) in lines {
        let mut seen = HashSet::new();
        let body: Vec<&str> = ls
            .iter()
            .filter(|l| seen.insert(l.as_str()))
            .map(String::as_str)
            .collect();
        if body.is_empty() {
            continue;
        }
        let dir = out.join(lang);
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{source}.txt"));
        let mut text = body.join("\n");
        text.push('\n');
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("{}: {} lines", path.display(), body.len());
    }
    Ok(())
}

/// Options of `cargo xtask corpus`.
#[derive(clap::Args, Debug)]
pub struct CorpusArgs {
    /// Where the rebuilt corpus is written (default: target/corpus).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Take the `.deb` files from DIR instead of `apt-get download`.
    #[arg(long)]
    pub debs: Option<PathBuf>,
    /// Also rewrite the shipped copy (crates/magnet-corpus/corpus.tar.xz and SHA256SUMS)
    /// from the result.
    #[arg(long)]
    pub pack: bool,
    /// With --pack: pack this existing corpus directory instead of rebuilding one.
    #[arg(long, requires = "pack", conflicts_with = "debs")]
    pub from: Option<PathBuf>,
}

/// The `.deb` of `package` in `debs`.
fn find_deb(debs: &Path, package: &str) -> Result<Option<PathBuf>> {
    let prefix = format!("{package}_");
    Ok(std::fs::read_dir(debs)
        .with_context(|| format!("reading {}", debs.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
                && p.extension().is_some_and(|e| e == "deb")
        })
        .max())
}

fn download(debs: &Path) -> Result<()> {
    if crate::util::which("apt-get").is_none() {
        bail!(
            "`apt-get` is not available: rebuilding the corpus needs a Debian/Ubuntu machine \
             with apt sources (bookworm has the reference versions), or --debs DIR with the \
             .deb files. The shipped copy (crates/magnet-corpus) needs no rebuild."
        );
    }
    let fetch = || {
        let mut cmd = Command::new("apt-get");
        cmd.arg("download")
            .args(PACKAGES.iter().map(|p| p.0))
            .current_dir(debs);
        run_cmd("apt-get download", &mut cmd)
    };
    // A machine's package lists go stale as point releases replace versions (the mirror
    // then answers 404): refresh them once and retry.
    fetch()
        .or_else(|e| {
            eprintln!("apt-get download failed ({e:#}); running apt-get update and retrying");
            run_cmd("apt-get update", Command::new("apt-get").arg("update"))?;
            fetch()
        })
        .context(
            "apt-get download failed: this needs a Debian/Ubuntu machine with apt sources \
             (bookworm has the reference versions), or --debs DIR with the .deb files",
        )
}

/// Rebuilds the corpus into `out` from the packages in `debs`; every package is required
/// (a missing one would silently change the training text). Writes `SOURCES.sha256`.
fn build(out: &Path, debs: &Path, work: &Path) -> Result<()> {
    let mut missing = Vec::new();
    let mut found = Vec::new();
    for (package, source) in PACKAGES {
        match find_deb(debs, package)? {
            Some(deb) => found.push((*package, *source, deb)),
            None => missing.push(*package),
        }
    }
    if !missing.is_empty() {
        bail!(
            "{} of {} packages have no .deb in {}: {}. Every package is needed for the \
             documented corpus (`apt-get download {}`)",
            missing.len(),
            PACKAGES.len(),
            debs.display(),
            missing.join(", "),
            missing.join(" ")
        );
    }
    if out.exists() {
        std::fs::remove_dir_all(out).with_context(|| format!("clearing {}", out.display()))?;
    }
    std::fs::create_dir_all(out)?;
    let bar = indicatif::ProgressBar::new(found.len() as u64).with_style(
        indicatif::ProgressStyle::with_template(
            "{prefix:>12} [{elapsed_precise}] {wide_bar} {pos}/{len} ({eta} left) {msg}",
        )
        .expect("static template"),
    );
    bar.set_prefix("corpus");
    let mut by_source: BTreeMap<&str, BTreeMap<&'static str, Vec<String>>> = BTreeMap::new();
    let mut sums: Vec<String> = Vec::new();
    for (package, source, deb) in &found {
        bar.set_message((*package).to_string());
        let bytes = std::fs::read(deb).with_context(|| format!("reading {}", deb.display()))?;
        let name = deb.file_name().unwrap_or_default().to_string_lossy();
        sums.push(format!("{}  {name}", magnet_corpus::sha256_hex(&bytes)));
        let tree = work.join("tree").join(package);
        if tree.exists() {
            std::fs::remove_dir_all(&tree)?;
        }
        std::fs::create_dir_all(&tree)?;
        let status = Command::new("dpkg-deb")
            .arg("-x")
            .arg(deb)
            .arg(&tree)
            .status()
            .context("running dpkg-deb (Debian's dpkg package)")?;
        if !status.success() {
            bail!("dpkg-deb -x {} failed with {status}", deb.display());
        }
        extract_tree(&tree, by_source.entry(source).or_default())
            .with_context(|| format!("extracting {package}"))?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    for (source, lines) in &by_source {
        write_source(out, source, lines)?;
    }
    sums.sort_unstable();
    std::fs::write(out.join("SOURCES.sha256"), sums.join("\n") + "\n")?;
    eprintln!("corpus written to {}", out.display());
    Ok(())
}

/// Writes crates/magnet-corpus/{corpus.tar.xz,SHA256SUMS} from the text in `corpus`
/// plus the crate's README.md and LICENSES/.
fn pack(corpus: &Path) -> Result<()> {
    let crate_dir = root().join("crates/magnet-corpus");
    let staging = root().join("target/corpus-pack");
    if staging.exists() {
        std::fs::remove_dir_all(&staging)?;
    }
    let copy = |from: &Path, to: &Path| -> Result<()> {
        std::fs::create_dir_all(to.parent().expect("a file in the staging folder"))?;
        std::fs::copy(from, to).with_context(|| format!("copying {}", from.display()))?;
        Ok(())
    };
    let mut texts = 0;
    for lang in ["en", "ja", "ko"] {
        let dir = corpus.join(lang);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            bail!("{} has no {lang}/ folder", corpus.display());
        };
        for entry in entries {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "txt") {
                copy(
                    &path,
                    &staging
                        .join(lang)
                        .join(path.file_name().unwrap_or_default()),
                )?;
                texts += 1;
            }
        }
    }
    let sources = corpus.join("SOURCES.sha256");
    if !sources.is_file() {
        bail!(
            "{} is missing (the .deb files it was cut from)",
            sources.display()
        );
    }
    copy(&sources, &staging.join("SOURCES.sha256"))?;
    copy(&crate_dir.join("README.md"), &staging.join("README.md"))?;
    for entry in std::fs::read_dir(crate_dir.join("LICENSES"))? {
        let path = entry?.path();
        copy(
            &path,
            &staging
                .join("LICENSES")
                .join(path.file_name().unwrap_or_default()),
        )?;
    }
    let (archive, manifest) = magnet_corpus::pack(&staging)?;
    std::fs::write(crate_dir.join("corpus.tar.xz"), &archive)?;
    std::fs::write(crate_dir.join("SHA256SUMS"), manifest.to_text())?;
    std::fs::copy(&sources, crate_dir.join("SOURCES.sha256"))?;
    eprintln!(
        "packed {texts} text files into {} ({} bytes), text fingerprint {}",
        crate_dir.join("corpus.tar.xz").display(),
        archive.len(),
        manifest.fingerprint()
    );
    Ok(())
}

/// Runs the command.
pub fn run(args: &CorpusArgs) -> Result<()> {
    if let Some(from) = &args.from {
        return pack(from);
    }
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| root().join("target/corpus"));
    let work = root().join("target/corpus-build");
    let debs = if let Some(d) = &args.debs {
        d.clone()
    } else {
        let d = work.join("debs");
        std::fs::create_dir_all(&d)?;
        download(&d)?;
        d
    };
    build(&out, &debs, &work)?;
    if args.pack {
        pack(&out)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_rules() {
        let html = "<html><head><title>x</title></head><body><div id=\"DisplayArea\">\
            <h1>Insert &amp; Delete</h1><p>Press <code>Ctrl</code> to start the menu.</p>\
            <pre>ls -l /tmp</pre><script>var a = 1;</script><p>日本語の説明です。テキスト</p>\
            </div><div id=\"DEBUG\"><p>debug text here</p></div></body></html>";
        let text = html_to_text(html);
        let en: Vec<String> = clean_lines(&text, "en").collect();
        assert_eq!(en, vec!["Insert & Delete", "Press Ctrl to start the menu."]);
        let ja: Vec<String> = clean_lines(&text, "ja").collect();
        assert_eq!(ja, vec!["日本語の説明です。テキスト"]);
        assert!(!text.contains("ls -l") && !text.contains("debug") && !text.contains("var a"));
    }

    fn mo(pairs: &[(&str, &str)]) -> Vec<u8> {
        let n = pairs.len();
        let (orig, trans) = (28, 28 + 8 * n);
        let mut data_off = 28 + 16 * n;
        let mut table = [Vec::new(), Vec::new()];
        let mut blob = Vec::new();
        for (k, (a, b)) in pairs.iter().enumerate() {
            for (t, s) in [(0, a), (1, b)] {
                table[t].extend_from_slice(&(s.len() as u32).to_le_bytes());
                table[t].extend_from_slice(&(data_off as u32).to_le_bytes());
                blob.extend_from_slice(s.as_bytes());
                blob.push(0);
                data_off += s.len() + 1;
            }
            let _ = k;
        }
        let mut out = Vec::new();
        for w in [
            0x9504_12de_u32,
            0,
            n as u32,
            orig as u32,
            trans as u32,
            0,
            0,
        ] {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out.extend_from_slice(&table[0]);
        out.extend_from_slice(&table[1]);
        out.extend_from_slice(&blob);
        out
    }

    #[test]
    fn mo_catalogs_give_cleaned_translations() {
        let bytes = mo(&[
            ("~File", "파일(~F) 열기 대화 상자"),
            ("Open %1", "$(ARG1) 문서를 여는 중입니다\n두 번째 줄입니다"),
        ]);
        let strings = mo_strings(&bytes).unwrap();
        let text: Vec<String> = strings.iter().map(|s| clean_ui_string(s)).collect();
        let lines: Vec<String> = clean_lines(&text.join("\n"), "ko").collect();
        assert_eq!(
            lines,
            vec![
                "파일(F) 열기 대화 상자",
                "문서를 여는 중입니다",
                "두 번째 줄입니다"
            ]
        );
        assert!(mo_strings(&bytes[..30]).is_err());
        assert!(mo_strings(b"not a catalog at all..").is_err());
    }

    #[test]
    fn tree_extraction_writes_deduplicated_language_files() {
        let dir = std::env::temp_dir().join(format!("xtask-corpus-{}", std::process::id()));
        let page = dir.join("tree/usr/share/help/ko/gnome-help/a.page");
        std::fs::create_dir_all(page.parent().unwrap()).unwrap();
        std::fs::write(&page, "<page><title>설정 도움말 문서</title><p>설정 도움말 문서</p><p>English only sentence here</p></page>").unwrap();
        let mut lines = BTreeMap::new();
        extract_tree(&dir.join("tree"), &mut lines).unwrap();
        write_source(&dir.join("out"), "gn", &lines).unwrap();
        let written = std::fs::read_to_string(dir.join("out/ko/gn.txt")).unwrap();
        assert_eq!(written, "설정 도움말 문서\n");
        assert_eq!(
            path_language(Path::new("usr/share/doc/x/index.ja.html")),
            Some("ja")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
