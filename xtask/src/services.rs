//! The services the tests need, started by xtask itself so that `cargo xtask ci` passes
//! on a fresh machine: a throw-away PostgreSQL cluster (autoresearch's database storage
//! tests) from the installed server binaries, and an S3-compatible server (moto, for the
//! diloco S3 exchange tests) from its own pinned virtualenv.
//!
//! Both are idempotent: a running server, an initialised cluster and an installed venv
//! are reused, so a second `cargo xtask ci` starts in seconds. A variable already set by
//! the caller (`MAGNET_POSTGRES_URL`, `MAGNET_S3_ENDPOINT`) means "use this one" and
//! nothing is started. What cannot be installed stops the run at once with one message
//! naming what is missing and the command that installs it.

use crate::util::{Installer, is_root, root, run as step, which};
use anyhow::{Context, Result, bail};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Options of `cargo xtask services`.
#[derive(clap::Args, Debug)]
pub struct ServicesArgs {
    /// Only check that everything the services need is installed (or installable); start
    /// nothing.
    #[arg(long)]
    pub check: bool,
}

/// Environment variables the tests read, as (name, value).
pub type Env = Vec<(String, String)>;

/// `cargo xtask services`: starts both and prints `export` lines on stdout.
pub fn run(args: &ServicesArgs) -> Result<()> {
    if args.check {
        check()?;
        eprintln!("services: every prerequisite is present");
        return Ok(());
    }
    for (key, value) in start()? {
        println!("export {key}='{value}'");
    }
    Ok(())
}

/// Fails with the install command when a prerequisite is missing and cannot be installed
/// here; installs nothing.
pub fn check() -> Result<()> {
    if std::env::var_os("MAGNET_POSTGRES_URL").is_none() && pg_bin().is_none() {
        if Installer::usable().is_none() {
            bail!(missing_postgres());
        }
        eprintln!("services: PostgreSQL is not installed; `cargo xtask ci` will install it");
    }
    if std::env::var_os("MAGNET_S3_ENDPOINT").is_none() {
        python_with_venv(false)?;
    }
    Ok(())
}

/// Starts (or reuses) both services and returns the variables the tests need.
pub fn start() -> Result<Env> {
    let mut env = postgres()?;
    env.extend(s3()?);
    Ok(env)
}

fn var(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_string())
}

// ---------------------------------------------------------------------------------------
// PostgreSQL

const PG_TOOLS: &[&str] = &["initdb", "pg_ctl", "postgres", "pg_isready", "psql"];

fn missing_postgres() -> String {
    "PostgreSQL server binaries (initdb, pg_ctl, postgres) are missing and cannot be \
     installed from here (not root, no password-less sudo). Install them with \
     `sudo apt-get install postgresql` (Debian/Ubuntu), `sudo dnf install postgresql-server` \
     (Fedora) or `brew install postgresql` (macOS), or set MAGNET_POSTGRES_URL to a \
     database the tests may use"
        .to_string()
}

fn has_pg_tools(dir: &Path) -> bool {
    PG_TOOLS.iter().all(|t| dir.join(t).is_file())
}

/// The newest installed server's bin directory: Debian's /usr/lib/postgresql/<v>/bin,
/// RHEL's /usr/pgsql-<v>/bin, `pg_config --bindir`, then PATH.
fn pg_bin() -> Option<PathBuf> {
    let mut versioned: Vec<(Vec<u32>, PathBuf)> = Vec::new();
    for (parent, prefix, suffix) in [
        ("/usr/lib/postgresql", "", "bin"),
        ("/usr", "pgsql-", "bin"),
    ] {
        let Ok(entries) = std::fs::read_dir(parent) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(version) = name.strip_prefix(prefix) else {
                continue;
            };
            let key: Vec<u32> = version.split('.').filter_map(|p| p.parse().ok()).collect();
            let dir = entry.path().join(suffix);
            if !key.is_empty() && has_pg_tools(&dir) {
                versioned.push((key, dir));
            }
        }
    }
    versioned.sort();
    if let Some((_, dir)) = versioned.pop() {
        return Some(dir);
    }
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .filter(|d| has_pg_tools(d));
    from_pg_config.or_else(|| {
        which("initdb")?
            .parent()
            .map(Path::to_path_buf)
            .filter(|d| has_pg_tools(d))
    })
}

/// The server refuses to run as root: as root, commands run as the `postgres` account.
fn as_pg_user(program: &Path) -> Command {
    if is_root() {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

fn postgres() -> Result<Env> {
    if let Ok(url) = std::env::var("MAGNET_POSTGRES_URL") {
        eprintln!("services: PostgreSQL from MAGNET_POSTGRES_URL (nothing started)");
        return Ok(vec![("MAGNET_POSTGRES_URL".into(), url)]);
    }
    let bin = if let Some(bin) = pg_bin() {
        bin
    } else {
        let Some((installer, sudo)) = Installer::usable() else {
            bail!(missing_postgres());
        };
        let packages: &[&str] = match installer {
            Installer::Apt => &["postgresql"],
            Installer::Dnf => &["postgresql-server", "postgresql"],
        };
        // Debian's package also starts its own cluster on 5432; it is left alone.
        installer
            .install(sudo, packages)
            .context("installing the PostgreSQL server")?;
        pg_bin().with_context(|| {
            format!("installed {packages:?} but found no initdb / pg_ctl / postgres")
        })?
    };
    let port = var("MAGNET_PG_PORT", "55432");
    let dir = PathBuf::from(var(
        "MAGNET_PG_DIR",
        &std::env::temp_dir()
            .join("magnet-postgres")
            .display()
            .to_string(),
    ));
    let ready = || {
        Command::new(bin.join("pg_isready"))
            .args(["-q", "-h", "127.0.0.1", "-p", &port])
            .status()
            .is_ok_and(|s| s.success())
    };
    if !ready() {
        if is_root()
            && Command::new("id")
                .arg("postgres")
                .output()
                .is_ok_and(|o| !o.status.success())
        {
            step(
                "useradd postgres",
                Command::new("useradd").args([
                    "--system",
                    "--home-dir",
                    "/var/lib/postgresql",
                    "--shell",
                    "/bin/bash",
                    "postgres",
                ]),
            )?;
        }
        let data = dir.join("data");
        if !data.join("PG_VERSION").is_file() {
            if dir.exists() {
                std::fs::remove_dir_all(&dir)
                    .with_context(|| format!("removing the stale cluster {}", dir.display()))?;
            }
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            if is_root() {
                step("chown", Command::new("chown").arg("postgres:").arg(&dir))?;
            }
            let log = dir.join("initdb.log");
            let out = as_pg_user(&bin.join("initdb"))
                .arg("-D")
                .arg(&data)
                .args([
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--no-locale",
                ])
                .output()
                .context("running initdb")?;
            std::fs::write(
                &log,
                [out.stdout.as_slice(), out.stderr.as_slice()].concat(),
            )?;
            if !out.status.success() {
                bail!(
                    "initdb failed ({}):\n{}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        // A postmaster.pid left by a killed server would block the start.
        let _ = std::fs::remove_file(data.join("postmaster.pid"));
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={} \
             -c max_connections=200 -c fsync=off",
            dir.display()
        );
        let log = dir.join("server.log");
        let status = as_pg_user(&bin.join("pg_ctl"))
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "60", "-o", &options, "start"])
            .stdout(Stdio::null())
            .status()
            .context("running pg_ctl start")?;
        if !status.success() || !ready() {
            bail!(
                "PostgreSQL did not start on 127.0.0.1:{port} ({status}); server log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
    }
    let psql = |sql: &str| -> Result<String> {
        let out = Command::new(bin.join("psql"))
            .args([
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-p",
                &port,
            ])
            .args(["-U", "postgres", "-tAc", sql])
            .output()
            .context("running psql")?;
        if !out.status.success() {
            bail!("psql `{sql}`: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    if psql("SELECT 1 FROM pg_roles WHERE rolname = 'magnet'")? != "1" {
        psql("CREATE ROLE magnet LOGIN PASSWORD 'magnet'")?;
    }
    if psql("SELECT 1 FROM pg_database WHERE datname = 'magnet'")? != "1" {
        psql("CREATE DATABASE magnet OWNER magnet")?;
    }
    eprintln!(
        "services: PostgreSQL ({}) on 127.0.0.1:{port}, cluster {}",
        bin.display(),
        dir.display()
    );
    let mut env = vec![(
        "MAGNET_POSTGRES_URL".into(),
        format!("postgres://magnet:magnet@127.0.0.1:{port}/magnet"),
    )];
    env.extend(postgres_tls(&dir, &port, &psql)?);
    Ok(env)
}

/// Role (and database) that pg_hba.conf admits over TLS only.
const TLS_ROLE: &str = "magnet_tls";

/// Turns TLS on in the running cluster for autoresearch's TLS tests: a throw-away CA and a
/// server certificate for 127.0.0.1 (plus an unrelated CA, the wrong root), `ssl = on` by
/// `ALTER SYSTEM` + reload (a reused cluster gets it without a restart), and a role that
/// pg_hba.conf refuses without TLS. Every other role connects as before, with or without
/// TLS. Without the openssl CLI (which Debian's postgresql package pulls in) nothing is
/// changed and the TLS variables are not exported.
fn postgres_tls(dir: &Path, port: &str, psql: &dyn Fn(&str) -> Result<String>) -> Result<Env> {
    let Some(openssl) = which("openssl") else {
        eprintln!("services: no openssl CLI, PostgreSQL runs without TLS (TLS tests skip)");
        return Ok(Vec::new());
    };
    let tls = dir.join("tls");
    std::fs::create_dir_all(&tls).with_context(|| format!("creating {}", tls.display()))?;
    let file = |name: &str| tls.join(name).display().to_string();
    let ssl = |what: &str, args: &[&str]| step(what, Command::new(&openssl).args(args));
    if !tls.join("server.crt").is_file() {
        for ca in ["ca", "other-ca"] {
            ssl(
                "openssl CA",
                &[
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-days",
                    "3650",
                    "-subj",
                    &format!("/CN=magnet test {ca}"),
                    "-keyout",
                    &file(&format!("{ca}.key")),
                    "-out",
                    &file(&format!("{ca}.crt")),
                    "-addext",
                    "basicConstraints=critical,CA:TRUE",
                    "-addext",
                    "keyUsage=critical,keyCertSign,cRLSign",
                ],
            )?;
        }
        ssl(
            "openssl server key",
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=127.0.0.1",
                "-keyout",
                &file("server.key"),
                "-out",
                &file("server.csr"),
            ],
        )?;
        // Only the IP: a client that names the host `localhost` must fail verify-full.
        let ext = tls.join("server.ext");
        std::fs::write(
            &ext,
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n\
             extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1\n",
        )?;
        ssl(
            "openssl server certificate",
            &[
                "x509",
                "-req",
                "-in",
                &file("server.csr"),
                "-CA",
                &file("ca.crt"),
                "-CAkey",
                &file("ca.key"),
                "-CAcreateserial",
                "-days",
                "3650",
                "-extfile",
                &ext.display().to_string(),
                "-out",
                &file("server.crt"),
            ],
        )?;
        if is_root() {
            step(
                "chown",
                Command::new("chown").arg("-R").arg("postgres:").arg(&tls),
            )?;
        }
        // The server refuses a key others can read.
        #[cfg(unix)]
        std::fs::set_permissions(
            tls.join("server.key"),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )?;
    }
    let data = dir.join("data");
    let hba = data.join("pg_hba.conf");
    let rules =
        std::fs::read_to_string(&hba).with_context(|| format!("reading {}", hba.display()))?;
    let marker = format!("# magnet: {TLS_ROLE} over TLS only");
    if !rules.contains(&marker) {
        // First match wins: these precede the cluster's own (trust) lines.
        std::fs::write(
            &hba,
            format!(
                "{marker}\nhostnossl all {TLS_ROLE} 0.0.0.0/0 reject\n\
                 hostnossl all {TLS_ROLE} ::/0 reject\n{rules}"
            ),
        )
        .with_context(|| format!("writing {}", hba.display()))?;
    }
    psql("ALTER SYSTEM SET ssl = on")?;
    psql(&format!(
        "ALTER SYSTEM SET ssl_cert_file = '{}'",
        file("server.crt")
    ))?;
    psql(&format!(
        "ALTER SYSTEM SET ssl_key_file = '{}'",
        file("server.key")
    ))?;
    psql("SELECT pg_reload_conf()")?;
    // The reload is a signal: wait until the server has read it.
    let start = Instant::now();
    while psql("SHOW ssl")? != "on" {
        if start.elapsed() > Duration::from_secs(10) {
            bail!(
                "PostgreSQL did not turn TLS on (server log: {})",
                dir.join("server.log").display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if psql(&format!(
        "SELECT 1 FROM pg_roles WHERE rolname = '{TLS_ROLE}'"
    ))? != "1"
    {
        psql(&format!("CREATE ROLE {TLS_ROLE} LOGIN PASSWORD 'magnet'"))?;
    }
    if psql(&format!(
        "SELECT 1 FROM pg_database WHERE datname = '{TLS_ROLE}'"
    ))? != "1"
    {
        psql(&format!("CREATE DATABASE {TLS_ROLE} OWNER {TLS_ROLE}"))?;
    }
    eprintln!("services: PostgreSQL TLS on (CA {})", file("ca.crt"));
    Ok(vec![
        (
            "MAGNET_POSTGRES_TLS_URL".into(),
            format!("postgres://{TLS_ROLE}:magnet@127.0.0.1:{port}/{TLS_ROLE}"),
        ),
        ("MAGNET_POSTGRES_TLS_ROOT".into(), file("ca.crt")),
        (
            "MAGNET_POSTGRES_TLS_WRONG_ROOT".into(),
            file("other-ca.crt"),
        ),
    ])
}

// ---------------------------------------------------------------------------------------
// S3 (moto)

/// A Python 3 that can create virtualenvs (installing python3-venv where possible when
/// `install` is set). Returns the interpreter.
pub fn python_with_venv(install: bool) -> Result<String> {
    let python = var("PYTHON", "python3");
    let works = || {
        Command::new(&python)
            .args(["-c", "import venv, ensurepip"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if works() {
        return Ok(python);
    }
    if install && let Some((Installer::Apt, sudo)) = Installer::usable() {
        Installer::Apt.install(sudo, &["python3", "python3-venv"])?;
        if works() {
            return Ok(python);
        }
    }
    bail!(
        "`{python}` is missing or has no venv module (needed for the test oracles and the S3 \
         test server). Install Python 3 with venv: `sudo apt-get install python3 python3-venv` \
         (Debian/Ubuntu), `sudo dnf install python3` (Fedora), `brew install python` (macOS); \
         or set PYTHON to such an interpreter"
    )
}

/// The HTTP status of `method path` on 127.0.0.1:`port`, or `None` when nothing answers.
fn http_status(method: &str, port: u16, path: &str) -> Option<u16> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\n\
         Connection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 64];
    let mut len = 0;
    while len < 12 {
        match stream.read(&mut head[len..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => len += n,
        }
    }
    let line = std::str::from_utf8(&head[..len]).ok()?;
    line.strip_prefix("HTTP/1.")?.get(2..5)?.parse().ok()
}

fn s3() -> Result<Env> {
    let bucket = var("MAGNET_S3_BUCKET", "magnet-diloco");
    let mut env: Env = vec![("MAGNET_S3_BUCKET".into(), bucket.clone())];
    for (key, default) in [
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", "us-east-1"),
    ] {
        env.push((key.into(), var(key, default)));
    }
    if let Ok(endpoint) = std::env::var("MAGNET_S3_ENDPOINT") {
        eprintln!("services: S3 from MAGNET_S3_ENDPOINT (nothing started)");
        env.push(("MAGNET_S3_ENDPOINT".into(), endpoint));
        return Ok(env);
    }
    let root = root();
    let venv = PathBuf::from(var(
        "MAGNET_MOTO_VENV",
        &root.join("target/services/moto-venv").display().to_string(),
    ));
    let server = venv.join("bin/moto_server");
    let requirements = root.join("xtask/python-requirements-services.txt");
    let wanted = std::fs::read_to_string(&requirements)
        .with_context(|| format!("reading {}", requirements.display()))?;
    let stamp = venv.join("installed-services");
    if !server.is_file() || std::fs::read_to_string(&stamp).ok().as_deref() != Some(&wanted) {
        if !venv.join("bin/python").is_file() {
            let python = python_with_venv(true)?;
            step(
                "moto venv",
                Command::new(&python).args(["-m", "venv"]).arg(&venv),
            )?;
        }
        step(
            "moto install",
            Command::new(venv.join("bin/python"))
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    "-r",
                ])
                .arg(&requirements),
        )
        .context("installing the S3 test server (moto) from PyPI")?;
        std::fs::write(&stamp, &wanted)?;
    }
    let port: u16 = var("MAGNET_S3_PORT", "9723")
        .parse()
        .context("MAGNET_S3_PORT is not a port number")?;
    if http_status("GET", port, "/moto-api/") != Some(200) {
        let log_path = std::env::temp_dir().join("magnet-moto.log");
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let mut cmd = Command::new(&server);
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // Its own process group: the server outlives this run (and a Ctrl-C of it), so
        // the next run reuses it.
        #[cfg(unix)]
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let _detached = cmd
            .spawn()
            .with_context(|| format!("starting {}", server.display()))?;
        let start = Instant::now();
        while http_status("GET", port, "/moto-api/") != Some(200) {
            if start.elapsed() > Duration::from_mins(1) {
                bail!(
                    "the S3 test server did not answer on 127.0.0.1:{port} within 60 s; log:\n{}",
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
    // moto accepts an unsigned CreateBucket; 409 is "you already own it".
    match http_status("PUT", port, &format!("/{bucket}")) {
        Some(200 | 409) => {}
        other => bail!("creating bucket {bucket} on the S3 test server answered {other:?}"),
    }
    let endpoint = format!("http://127.0.0.1:{port}");
    eprintln!("services: S3 (moto) on {endpoint}, bucket {bucket}");
    env.push(("MAGNET_S3_ENDPOINT".into(), endpoint));
    Ok(env)
}
