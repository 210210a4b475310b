//! Finding the corpus, reading text leniently, and the fixed train / validation split.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// Every `VAL_EVERY`-th line (index `% VAL_EVERY == VAL_EVERY - 1`) of every file is held
/// out for validation and never trained on.
pub const VAL_EVERY: usize = 50;

/// Languages with a target share in the training mix, in corpus-directory order.
pub const LANGUAGES: &[&str] = &["en", "ko", "ja"];

/// Where a corpus was found and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorpusLocation {
    /// The directory.
    pub dir: PathBuf,
    /// How it was found: `--corpus`, `MAGNET_CORPUS` or `shipped` (the copy in the
    /// `magnet-corpus` crate, SHA-256 checked).
    pub source: &'static str,
}

impl CorpusLocation {
    /// The text fingerprint of the directory (SHA-256 over the per-file hashes of its
    /// `*.txt` files; see `magnet_corpus::Manifest::fingerprint`), for reports: two runs
    /// trained on the same text have the same fingerprint.
    pub fn fingerprint(&self) -> Result<String> {
        Ok(magnet_corpus::Manifest::of_dir(&self.dir)?.fingerprint())
    }
}

/// Looks the corpus up in order: `explicit` (`--corpus DIR`), the `MAGNET_CORPUS`
/// variable, then the shipped copy (unpacked once into the system temporary directory and
/// verified against its SHA-256 sums on every call; feature `shipped-corpus`, on by
/// default). An explicit directory or variable that does not exist is an error (a typo
/// should not silently fall back). `Ok(None)` only without the shipped copy.
///
/// Nothing here depends on where this crate was built or on the working directory.
pub fn find_corpus(explicit: Option<&Path>) -> Result<Option<CorpusLocation>> {
    let check = |dir: PathBuf, source: &'static str| -> Result<Option<CorpusLocation>> {
        if dir.is_dir() {
            Ok(Some(CorpusLocation { dir, source }))
        } else {
            Err(Error::data(
                dir.display().to_string(),
                format!("corpus directory given by {source} does not exist"),
            ))
        }
    };
    if let Some(dir) = explicit {
        return check(dir.to_path_buf(), "--corpus");
    }
    if let Some(dir) = std::env::var_os("MAGNET_CORPUS").filter(|v| !v.is_empty()) {
        return check(PathBuf::from(dir), "MAGNET_CORPUS");
    }
    shipped_corpus()
}

#[cfg(feature = "shipped-corpus")]
fn shipped_corpus() -> Result<Option<CorpusLocation>> {
    let dir = magnet_corpus::shipped_dir()?;
    Ok(Some(CorpusLocation {
        dir,
        source: "shipped",
    }))
}

#[cfg(not(feature = "shipped-corpus"))]
fn shipped_corpus() -> Result<Option<CorpusLocation>> {
    Ok(None)
}

/// One text file of the corpus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextFile {
    /// Path on disk.
    pub path: PathBuf,
    /// Language: the name of the first directory under the corpus root when it is one of
    /// [`LANGUAGES`], otherwise `other`.
    pub language: String,
}

/// All `*.txt` files under `root` (recursively, sorted, so the order is deterministic).
pub fn list_text_files(root: &Path) -> Result<Vec<TextFile>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))?;
        for entry in entries {
            let path = entry.map_err(|e| Error::io(&dir, e))?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "txt") {
                let language = path
                    .strip_prefix(root)
                    .ok()
                    .and_then(|rel| rel.components().next())
                    .and_then(|c| c.as_os_str().to_str())
                    .filter(|first| LANGUAGES.contains(first))
                    .unwrap_or("other")
                    .to_string();
                out.push(TextFile { path, language });
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// Text read leniently: invalid UTF-8 sequences become U+FFFD and are counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LenientText {
    /// The decoded text.
    pub text: String,
    /// Number of invalid byte sequences that were replaced.
    pub replaced: usize,
    /// Byte offset of the first invalid sequence, if any.
    pub first_bad_offset: Option<usize>,
}

/// Decodes bytes as UTF-8, replacing (and counting) invalid sequences.
pub fn decode_lenient(bytes: &[u8]) -> LenientText {
    let mut text = String::with_capacity(bytes.len());
    let mut replaced = 0;
    let mut first_bad_offset = None;
    let mut offset = 0;
    for chunk in bytes.utf8_chunks() {
        text.push_str(chunk.valid());
        offset += chunk.valid().len();
        if !chunk.invalid().is_empty() {
            first_bad_offset.get_or_insert(offset);
            replaced += 1;
            text.push(char::REPLACEMENT_CHARACTER);
            offset += chunk.invalid().len();
        }
    }
    LenientText {
        text,
        replaced,
        first_bad_offset,
    }
}

/// Reads a file leniently (see [`decode_lenient`]).
pub fn read_lenient(path: &Path) -> Result<LenientText> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    Ok(decode_lenient(&bytes))
}

/// The non-empty lines of `text` split into (train, validation) by [`VAL_EVERY`].
pub fn split_lines(text: &str) -> (Vec<&str>, Vec<&str>) {
    let mut train = Vec::new();
    let mut val = Vec::new();
    for (i, line) in text.lines().filter(|l| !l.trim().is_empty()).enumerate() {
        if i % VAL_EVERY == VAL_EVERY - 1 {
            val.push(line);
        } else {
            train.push(line);
        }
    }
    (train, val)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::fmt::Write as _;

    #[test]
    fn cut_character_is_replaced_and_reported() {
        let mut bytes = "한국어 text".as_bytes().to_vec();
        bytes.truncate(2); // mid-character
        bytes.extend_from_slice(b" ok");
        let t = decode_lenient(&bytes);
        assert_eq!(t.replaced, 1);
        assert_eq!(t.first_bad_offset, Some(0));
        assert_eq!(t.text, "\u{FFFD} ok");
    }

    #[test]
    fn split_holds_out_every_fiftieth_line() {
        let text: String = (0..200).fold(String::new(), |mut s, i| {
            writeln!(s, "line {i}\n").unwrap();
            s
        });
        let (train, val) = split_lines(&text);
        assert_eq!(val, vec!["line 49", "line 99", "line 149", "line 199"]);
        assert_eq!(train.len(), 196);
    }

    #[test]
    fn corpus_lookup_prefers_explicit_and_rejects_missing() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("ko")).unwrap();
        std::fs::write(dir.path().join("ko/a.txt"), "안녕하세요 여러분\n").unwrap();
        std::fs::write(dir.path().join("misc.txt"), "hello there friends\n").unwrap();
        let found = find_corpus(Some(dir.path())).unwrap().unwrap();
        assert_eq!(found.source, "--corpus");
        let files = list_text_files(dir.path()).unwrap();
        let langs: Vec<_> = files.iter().map(|f| f.language.as_str()).collect();
        assert_eq!(langs, vec!["ko", "other"]);
        let err = find_corpus(Some(&dir.path().join("nope")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("nope") && err.contains("--corpus"), "{err}");
        // Only the text counts towards the fingerprint, and any change of it shows.
        let fp = found.fingerprint().unwrap();
        std::fs::write(dir.path().join("README.md"), "about this corpus").unwrap();
        assert_eq!(found.fingerprint().unwrap(), fp);
        std::fs::write(dir.path().join("misc.txt"), "hello there friend\n").unwrap();
        assert_ne!(found.fingerprint().unwrap(), fp);
    }

    #[cfg(feature = "shipped-corpus")]
    #[test]
    fn without_flag_or_variable_the_shipped_corpus_is_used() {
        // Holds for any working directory and checkout location: the shipped copy is
        // embedded in the binary and unpacked under the temporary directory.
        let found = shipped_corpus().unwrap().unwrap();
        assert_eq!(found.source, "shipped");
        let files = list_text_files(&found.dir).unwrap();
        for lang in LANGUAGES {
            assert!(files.iter().any(|f| f.language == *lang), "{lang}");
        }
        assert_eq!(
            found.fingerprint().unwrap(),
            magnet_corpus::fingerprint().unwrap()
        );
    }

    proptest! {
        #[test]
        fn lenient_decoding_matches_std_lossy(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let t = decode_lenient(&bytes);
            prop_assert_eq!(&t.text, &String::from_utf8_lossy(&bytes));
            prop_assert_eq!(t.replaced == 0, std::str::from_utf8(&bytes).is_ok());
        }
    }
}
