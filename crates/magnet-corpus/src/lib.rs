//! The default training corpus of MAGNET-rs, shipped inside this crate.
//!
//! About 12.5 MB of English, Japanese and Korean documentation text cut from Debian 12
//! packages (LibreOffice help and UI strings, the installation guide, GNOME user docs,
//! the Debian FAQ, reference and handbook; see `README.md` for the sources and licenses)
//! travels as one deterministic `corpus.tar.xz` of about 2.4 MB, embedded in the binary.
//! `SHA256SUMS` records the archive's SHA-256 and every file's; both are checked on every
//! use, so a training run never silently reads other text than the docs describe.
//!
//! [`shipped_dir`] unpacks the archive once into a content-addressed folder of the system
//! temporary directory and returns it (re-verifying the files each time):
//!
//! ```no_run
//! let dir = magnet_corpus::shipped_dir()?;
//! assert!(dir.join("ko/lo.txt").is_file());
//! println!("corpus {} at {}", magnet_corpus::fingerprint()?, dir.display());
//! # Ok::<(), magnet_corpus::Error>(())
//! ```
//!
//! [`Manifest::of_dir`] fingerprints any corpus directory the same way, so a report can
//! name exactly which text a model was trained on. [`pack`] writes the archive and its
//! sums (`cargo xtask corpus --pack` rebuilds them from Debian packages).

pub mod error;

pub use error::{Error, Result};

use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

/// The compressed corpus (`tar`, then `xz -9e`).
pub const ARCHIVE: &[u8] = include_bytes!("../corpus.tar.xz");

/// `sha256sum`-style lines: the archive first, then every file in it.
pub const SHA256SUMS: &str = include_str!("../SHA256SUMS");

/// The archive's file name in `SHA256SUMS`.
pub const ARCHIVE_NAME: &str = "corpus.tar.xz";

/// Unpacking stops beyond this many bytes (the corpus is about 12.5 MB): a bad archive
/// cannot fill the disk.
pub const MAX_UNPACKED_BYTES: u64 = 256 << 20;

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn sha256_file(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// Whether `rel` (a `/`-separated relative path) is training text.
fn is_text(rel: &str) -> bool {
    Path::new(rel).extension().is_some_and(|e| e == "txt")
}

/// File hashes of a corpus: relative `/`-separated path to hex SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Manifest {
    /// SHA-256 of the archive, when the manifest describes one.
    pub archive: Option<String>,
    /// Every file, by relative path.
    pub files: BTreeMap<String, String>,
}

impl Manifest {
    /// Parses `sha256sum` output (`<64 hex>  <path>` per line; the line naming
    /// [`ARCHIVE_NAME`] is the archive's).
    pub fn parse(text: &str) -> Result<Self> {
        let mut out = Manifest::default();
        for (i, line) in text.lines().enumerate() {
            let err = |message: &str| Error::Manifest {
                line: i + 1,
                message: message.to_string(),
            };
            if line.trim().is_empty() {
                continue;
            }
            let (hash, path) = line
                .split_once("  ")
                .ok_or_else(|| err("expected `<sha256>  <path>`"))?;
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(err("the hash is not 64 hex digits"));
            }
            if !safe_relative(path) {
                return Err(err("the path is not a plain relative path"));
            }
            let hash = hash.to_ascii_lowercase();
            if path == ARCHIVE_NAME {
                out.archive = Some(hash);
            } else if out.files.insert(path.to_string(), hash).is_some() {
                return Err(err("the path is listed twice"));
            }
        }
        if out.files.is_empty() {
            return Err(Error::Manifest {
                line: 0,
                message: "no files listed".into(),
            });
        }
        Ok(out)
    }

    /// The manifest of the shipped corpus.
    pub fn shipped() -> Result<Self> {
        Self::parse(SHA256SUMS)
    }

    /// Hashes every `*.txt` file under `dir` (recursively): the training text, whatever
    /// else lies beside it.
    pub fn of_dir(dir: &Path) -> Result<Self> {
        let mut files = BTreeMap::new();
        for (rel, path) in walk(dir)? {
            if is_text(&rel) {
                files.insert(rel, sha256_file(&path)?);
            }
        }
        Ok(Manifest {
            archive: None,
            files,
        })
    }

    /// The text fingerprint: SHA-256 over the `<hash>  <path>` lines of the `*.txt` files
    /// in path order. Two directories with the same training text have the same
    /// fingerprint, whatever else (licenses, READMEs) they hold.
    pub fn fingerprint(&self) -> String {
        let mut hasher = Sha256::new();
        for (path, hash) in self.files.iter().filter(|(p, _)| is_text(p)) {
            hasher.update(format!("{hash}  {path}\n").as_bytes());
        }
        hex(&hasher.finalize())
    }

    /// `sha256sum`-style text (the archive line first), as [`Manifest::parse`] reads it.
    pub fn to_text(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        if let Some(a) = &self.archive {
            let _ = writeln!(s, "{a}  {ARCHIVE_NAME}");
        }
        for (path, hash) in &self.files {
            let _ = writeln!(s, "{hash}  {path}");
        }
        s
    }

    /// Checks that `dir` holds every listed file with its hash, and no `*.txt` file the
    /// manifest does not list.
    pub fn verify_dir(&self, dir: &Path) -> Result<()> {
        let present: BTreeMap<String, PathBuf> = walk(dir)?.into_iter().collect();
        if let Some(extra) = present
            .keys()
            .find(|rel| is_text(rel) && !self.files.contains_key(*rel))
        {
            return Err(Error::Contents {
                dir: dir.to_path_buf(),
                message: format!("`{extra}` is not part of the corpus"),
            });
        }
        for (rel, expected) in &self.files {
            let Some(path) = present.get(rel) else {
                return Err(Error::Contents {
                    dir: dir.to_path_buf(),
                    message: format!("`{rel}` is missing"),
                });
            };
            let actual = sha256_file(path)?;
            if &actual != expected {
                return Err(Error::FileMismatch {
                    path: path.clone(),
                    expected: expected.clone(),
                    actual,
                });
            }
        }
        Ok(())
    }
}

/// The shipped corpus's text fingerprint (see [`Manifest::fingerprint`]).
pub fn fingerprint() -> Result<String> {
    Ok(Manifest::shipped()?.fingerprint())
}

fn safe_relative(path: &str) -> bool {
    !path.is_empty()
        && !path.contains('\\')
        && Path::new(path)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}

/// Every regular file under `dir` as (relative `/`-separated path, path), sorted.
fn walk(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).map_err(|e| Error::io(&d, e))? {
            let entry = entry.map_err(|e| Error::io(&d, e))?;
            let path = entry.path();
            let ty = entry.file_type().map_err(|e| Error::io(&path, e))?;
            if ty.is_dir() {
                stack.push(path);
            } else if ty.is_file() {
                let rel = path
                    .strip_prefix(dir)
                    .unwrap_or(&path)
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy())
                    .collect::<Vec<_>>()
                    .join("/");
                out.push((rel, path));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Unpacks `archive` into `dir` (created) after checking its SHA-256 against
/// `manifest.archive`; every entry must be a plain relative file the manifest lists, with
/// its hash, and every listed file must be present. Nothing outside `dir` is written.
pub fn unpack(archive: &[u8], manifest: &Manifest, dir: &Path) -> Result<()> {
    let actual = sha256_hex(archive);
    if manifest.archive.as_deref() != Some(actual.as_str()) {
        return Err(Error::ArchiveMismatch {
            expected: manifest.archive.clone().unwrap_or_else(|| "none".into()),
            actual,
            len: archive.len(),
        });
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let xz = liblzma::read::XzDecoder::new(archive);
    let mut tar = tar::Archive::new(xz);
    let mut budget = MAX_UNPACKED_BYTES;
    let mut seen = 0usize;
    let entries = tar.entries().map_err(|e| Error::io(dir, e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let refuse = |message: &str| Error::Entry {
            entry: name.clone(),
            message: message.to_string(),
        };
        match entry.header().entry_type() {
            tar::EntryType::Directory => continue,
            tar::EntryType::Regular => {}
            other => return Err(refuse(&format!("entry type {other:?} is not a file"))),
        }
        if !safe_relative(&name) {
            return Err(refuse("not a plain relative path"));
        }
        let Some(expected) = manifest.files.get(&name) else {
            return Err(refuse("not listed in SHA256SUMS"));
        };
        let size = entry.size();
        budget = budget
            .checked_sub(size)
            .ok_or_else(|| refuse("the archive unpacks to more than MAX_UNPACKED_BYTES"))?;
        let path = dir.join(&name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        let mut bytes = Vec::with_capacity(size as usize);
        (&mut entry)
            .take(size)
            .read_to_end(&mut bytes)
            .map_err(|e| Error::io(&path, e))?;
        let actual = sha256_hex(&bytes);
        if &actual != expected {
            return Err(Error::FileMismatch {
                path,
                expected: expected.clone(),
                actual,
            });
        }
        std::fs::write(&path, &bytes).map_err(|e| Error::io(&path, e))?;
        seen += 1;
    }
    if seen != manifest.files.len() {
        return Err(Error::Contents {
            dir: dir.to_path_buf(),
            message: format!(
                "the archive holds {seen} of the {} files SHA256SUMS lists",
                manifest.files.len()
            ),
        });
    }
    Ok(())
}

/// The shipped corpus as a directory: unpacked on first use into
/// `<temp>/magnet-corpus-<fingerprint prefix>` (atomically: a half-written copy is never
/// visible), verified against `SHA256SUMS` on every call, and replaced when it does not
/// match.
pub fn shipped_dir() -> Result<PathBuf> {
    shipped_dir_in(&std::env::temp_dir())
}

/// [`shipped_dir`] under `parent` instead of the system temporary directory.
pub fn shipped_dir_in(parent: &Path) -> Result<PathBuf> {
    let manifest = Manifest::shipped()?;
    let fingerprint = manifest.fingerprint();
    let dir = parent.join(format!("magnet-corpus-{}", &fingerprint[..16]));
    if dir.is_dir() && manifest.verify_dir(&dir).is_ok() {
        return Ok(dir);
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let staging = parent.join(format!(
        ".magnet-corpus-{}.{}.{nanos}",
        &fingerprint[..16],
        std::process::id()
    ));
    let result = unpack(ARCHIVE, &manifest, &staging).and_then(|()| {
        if std::fs::rename(&staging, &dir).is_ok() {
            return Ok(());
        }
        // Another process finished first, or the old copy is damaged: keep a good one.
        if manifest.verify_dir(&dir).is_ok() {
            return Ok(());
        }
        std::fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        std::fs::rename(&staging, &dir).map_err(|e| Error::io(&dir, e))
    });
    if staging.exists() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    result?;
    manifest.verify_dir(&dir)?;
    Ok(dir)
}

/// Packs every file under `src` into a deterministic archive (sorted entries, mode 0644,
/// owner 0, time 0; xz preset 9e, single-threaded): the same input gives the same bytes.
/// Returns the archive and its manifest (write it with [`Manifest::to_text`]).
pub fn pack(src: &Path) -> Result<(Vec<u8>, Manifest)> {
    let mut manifest = Manifest::default();
    let mut tar_bytes = Vec::new();
    {
        let mut builder = tar::Builder::new(&mut tar_bytes);
        for (rel, path) in walk(src)? {
            let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
            let mut header = tar::Header::new_ustar();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            header.set_mtime(0);
            header.set_uid(0);
            header.set_gid(0);
            header.set_entry_type(tar::EntryType::Regular);
            builder
                .append_data(&mut header, &rel, bytes.as_slice())
                .map_err(|e| Error::io(&path, e))?;
            manifest.files.insert(rel, sha256_hex(&bytes));
        }
        builder.finish().map_err(|e| Error::io(src, e))?;
    }
    let stream = liblzma::stream::Stream::new_easy_encoder(
        9 | liblzma::stream::PRESET_EXTREME,
        liblzma::stream::Check::Crc64,
    )?;
    let mut xz = liblzma::write::XzEncoder::new_stream(Vec::new(), stream);
    xz.write_all(&tar_bytes).map_err(|e| Error::io(src, e))?;
    let archive = xz.finish().map_err(|e| Error::io(src, e))?;
    manifest.archive = Some(sha256_hex(&archive));
    Ok((archive, manifest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn small_corpus(dir: &Path) {
        std::fs::create_dir_all(dir.join("en")).unwrap();
        std::fs::create_dir_all(dir.join("ko")).unwrap();
        std::fs::create_dir_all(dir.join("LICENSES")).unwrap();
        std::fs::write(dir.join("en/a.txt"), "Press Ctrl to start the menu.\n").unwrap();
        std::fs::write(dir.join("ko/a.txt"), "설정 도움말 문서\n").unwrap();
        std::fs::write(dir.join("LICENSES/MIT"), "license text\n").unwrap();
    }

    #[test]
    fn shipped_sums_name_the_embedded_archive() {
        let manifest = Manifest::shipped().unwrap();
        assert_eq!(
            manifest.archive.as_deref(),
            Some(sha256_hex(ARCHIVE).as_str())
        );
        for lang in ["en", "ja", "ko"] {
            assert!(
                manifest
                    .files
                    .keys()
                    .any(|p| p.starts_with(&format!("{lang}/"))),
                "{lang}"
            );
        }
        assert!(manifest.files.keys().any(|p| p.starts_with("LICENSES/")));
    }

    #[test]
    fn shipped_corpus_unpacks_verified_and_is_reused() {
        let parent = tempfile::tempdir().unwrap();
        let dir = shipped_dir_in(parent.path()).unwrap();
        let manifest = Manifest::shipped().unwrap();
        // The unpacked text has the fingerprint the sums promise.
        assert_eq!(
            Manifest::of_dir(&dir).unwrap().fingerprint(),
            fingerprint().unwrap()
        );
        assert!(std::fs::metadata(dir.join("en/lo.txt")).unwrap().len() > 1_000_000);
        // A damaged copy is detected and replaced on the next use.
        std::fs::write(dir.join("ko/faq.txt"), "tampered\n").unwrap();
        let err = manifest.verify_dir(&dir).unwrap_err();
        assert!(matches!(err, Error::FileMismatch { .. }), "{err}");
        assert!(err.to_string().contains("ko/faq.txt"), "{err}");
        assert_eq!(shipped_dir_in(parent.path()).unwrap(), dir);
        manifest.verify_dir(&dir).unwrap();
        // No staging folders are left behind.
        let names: Vec<_> = std::fs::read_dir(parent.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn pack_is_deterministic_and_round_trips() {
        let src = tempfile::tempdir().unwrap();
        small_corpus(src.path());
        let (a1, m1) = pack(src.path()).unwrap();
        let (a2, m2) = pack(src.path()).unwrap();
        assert_eq!(a1, a2);
        assert_eq!(m1, m2);
        assert_eq!(Manifest::parse(&m1.to_text()).unwrap(), m1);
        let out = tempfile::tempdir().unwrap();
        unpack(&a1, &m1, out.path()).unwrap();
        m1.verify_dir(out.path()).unwrap();
        // The text fingerprint ignores the licenses but not a changed line.
        assert_eq!(
            Manifest::of_dir(out.path()).unwrap().fingerprint(),
            m1.fingerprint()
        );
        std::fs::write(src.path().join("LICENSES/MIT"), "other\n").unwrap();
        assert_eq!(pack(src.path()).unwrap().1.fingerprint(), m1.fingerprint());
        std::fs::write(
            src.path().join("en/a.txt"),
            "Press Alt to start the menu.\n",
        )
        .unwrap();
        assert_ne!(pack(src.path()).unwrap().1.fingerprint(), m1.fingerprint());
    }

    #[test]
    fn bad_archives_and_manifests_are_refused_with_the_reason() {
        let src = tempfile::tempdir().unwrap();
        small_corpus(src.path());
        let (archive, manifest) = pack(src.path()).unwrap();
        let out = tempfile::tempdir().unwrap();
        // A flipped byte fails the archive hash before anything is decoded.
        let mut bad = archive.clone();
        bad[archive.len() / 2] ^= 1;
        let err = unpack(&bad, &manifest, out.path()).unwrap_err();
        assert!(matches!(err, Error::ArchiveMismatch { .. }), "{err}");
        // A manifest that does not list a file refuses the entry.
        let mut partial = manifest.clone();
        partial.files.remove("ko/a.txt");
        let err = unpack(&archive, &partial, out.path()).unwrap_err();
        assert!(err.to_string().contains("ko/a.txt"), "{err}");
        // A wrong file hash names the file.
        let mut wrong = manifest.clone();
        wrong.files.insert("en/a.txt".into(), "0".repeat(64));
        let err = unpack(&archive, &wrong, out.path()).unwrap_err();
        assert!(matches!(err, Error::FileMismatch { .. }), "{err}");
        // An extra text file in a verified directory is refused.
        let good = tempfile::tempdir().unwrap();
        unpack(&archive, &manifest, good.path()).unwrap();
        std::fs::write(good.path().join("en/extra.txt"), "more text here\n").unwrap();
        let err = manifest.verify_dir(good.path()).unwrap_err();
        assert!(err.to_string().contains("en/extra.txt"), "{err}");
        for (text, line) in [
            ("nothex  a.txt\n", 1),
            (&format!("{}  ../a.txt\n", "a".repeat(64)), 1),
            (&format!("{h}  a.txt\n{h}  a.txt\n", h = "a".repeat(64)), 2),
            (&format!("{}  /abs.txt\n", "a".repeat(64)), 1),
        ] {
            match Manifest::parse(text) {
                Err(Error::Manifest { line: l, .. }) => assert_eq!(l, line, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    proptest! {
        #[test]
        fn manifest_text_round_trips(files in proptest::collection::btree_map(
            "[a-z]{1,8}(/[a-z]{1,8}){0,2}\\.txt", "[0-9a-f]{64}", 1..8)) {
            let m = Manifest { archive: Some("f".repeat(64)), files };
            prop_assert_eq!(Manifest::parse(&m.to_text()).unwrap(), m);
        }

        #[test]
        fn unpack_never_panics_on_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let manifest = Manifest {
                archive: Some(sha256_hex(&bytes)),
                files: [("a.txt".to_string(), "0".repeat(64))].into(),
            };
            let out = tempfile::tempdir().unwrap();
            prop_assert!(unpack(&bytes, &manifest, out.path()).is_err());
        }
    }
}
