//! Runs the `ledger` binary end to end: keygen, init, demo, show, balances, proof, verify, and
//! verify failing with a clear report after tampering.

use std::process::{Command, Output};

fn ledger(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ledger"))
        .args(args)
        .output()
        .expect("run ledger")
}

fn ok(args: &[&str]) -> String {
    let o = ledger(args);
    assert!(
        o.status.success(),
        "ledger {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn keygen_init_show_verify() {
    let t = tempfile::tempdir().unwrap();
    let key = t.path().join("op.key");
    let key_s = key.to_str().unwrap();
    let public = ok(&["keygen", key_s]);
    assert_eq!(public.trim().len(), 64);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    assert!(
        !ledger(&["keygen", key_s]).status.success(),
        "keygen overwrote a key"
    );
    let dir = t.path().join("l");
    let dir_s = dir.to_str().unwrap();
    ok(&["init", dir_s, "--key", key_s, "--origin", "cli-test"]);
    let v = ok(&["verify", dir_s, "--operator", public.trim()]);
    assert!(v.starts_with("OK: 1 entries"), "{v}");
    let s = ok(&["show", dir_s, "--entries"]);
    assert!(s.contains("cli-test") && s.contains("genesis"), "{s}");
    // Pinning another operator key fails.
    let other = "11".repeat(32);
    assert!(
        !ledger(&["verify", dir_s, "--operator", &other])
            .status
            .success()
    );
}

#[test]
fn demo_verify_proof_balances_and_tamper_report() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("demo");
    let d = dir.to_str().unwrap();
    let out = ok(&["demo", d, "--seed", "3", "--rounds", "3"]);
    assert!(out.contains("3 rounds") && out.contains("slashes"), "{out}");
    // Same seed, same balances.
    let dir2 = t.path().join("demo2");
    let out2 = ok(&[
        "demo",
        dir2.to_str().unwrap(),
        "--seed",
        "3",
        "--rounds",
        "3",
    ]);
    assert_eq!(out.replace("demo2", "demo"), out2.replace("demo2", "demo"));

    let v = ok(&["verify", d]);
    assert!(v.contains("3 settlements replayed"), "{v}");
    let b = ok(&["balances", d]);
    assert!(b.lines().any(|l| l.starts_with("total ")), "{b}");
    let p = ok(&["proof", d, "5"]);
    assert!(p.contains("inclusion proof verifies"), "{p}");
    let s = ok(&["show", d]);
    assert!(
        s.contains("slash copied from") && s.contains("slash non-finite"),
        "{s}"
    );

    // Flip one byte of the checkpoint's root: verify names the problem and exits non-zero.
    let cp = dir.join("checkpoint");
    let mut bytes = std::fs::read(&cp).unwrap();
    let n = bytes.len();
    bytes[n - 64 - 50] ^= 1;
    std::fs::write(&cp, &bytes).unwrap();
    let o = ledger(&["verify", d]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("VERIFY FAILED") && err.contains("checkpoint"),
        "{err}"
    );
}
