# PostgreSQL on loopback for autoresearch's database storage tests: a throw-away cluster in
# its own directory (no system service needed), a `magnet` role and database.
# Sourced by .ci/run (bash, set -euo pipefail, root) on a fresh Debian 12 machine; idempotent:
# reuses an installed server, an initialised cluster and a running postmaster.
MAGNET_PG_PORT="${MAGNET_PG_PORT:-55432}"
MAGNET_PG_DIR="${MAGNET_PG_DIR:-/tmp/magnet-postgres}"

magnet_pg_bin() {
    local d
    for d in /usr/lib/postgresql/*/bin; do
        [ -x "$d/initdb" ] && [ -x "$d/postgres" ] && echo "$d"
    done | sort -V | tail -n 1
}

MAGNET_PG_BIN="$(magnet_pg_bin)"
if [ -z "$MAGNET_PG_BIN" ]; then
    apt-get update -qq
    # The package may also start its own main cluster on 5432; it is left alone.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    MAGNET_PG_BIN="$(magnet_pg_bin)"
fi
if [ -z "$MAGNET_PG_BIN" ]; then
    echo "postgres.sh: no PostgreSQL server binaries under /usr/lib/postgresql/*/bin" >&2
    return 1
fi

# The server refuses to run as root: use the postgres account when we are root.
magnet_pg_as() {
    if [ "$(id -u)" -eq 0 ]; then
        if ! id postgres >/dev/null 2>&1; then
            useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
        fi
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

magnet_pg_ready() {
    "$MAGNET_PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$MAGNET_PG_PORT"
}

if ! magnet_pg_ready; then
    if [ ! -s "$MAGNET_PG_DIR/data/PG_VERSION" ]; then
        rm -rf "$MAGNET_PG_DIR"
        mkdir -p "$MAGNET_PG_DIR"
        [ "$(id -u)" -eq 0 ] && chown postgres: "$MAGNET_PG_DIR"
        magnet_pg_as "$MAGNET_PG_BIN/initdb" -D "$MAGNET_PG_DIR/data" -U postgres \
            --auth=trust --encoding=UTF8 --no-locale >"$MAGNET_PG_DIR/initdb.log" 2>&1 || {
            cat "$MAGNET_PG_DIR/initdb.log" >&2
            return 1
        }
    fi
    # A postmaster.pid left by a killed server would block the start.
    rm -f "$MAGNET_PG_DIR/data/postmaster.pid"
    magnet_pg_as "$MAGNET_PG_BIN/pg_ctl" -D "$MAGNET_PG_DIR/data" -l "$MAGNET_PG_DIR/server.log" \
        -w -t 60 -o "-c listen_addresses=127.0.0.1 -p $MAGNET_PG_PORT -c unix_socket_directories=$MAGNET_PG_DIR -c max_connections=200 -c fsync=off" \
        start >/dev/null || {
        cat "$MAGNET_PG_DIR/server.log" >&2
        return 1
    }
fi

magnet_psql() {
    "$MAGNET_PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$MAGNET_PG_PORT" -U postgres "$@"
}
if [ "$(magnet_psql -tAc "SELECT 1 FROM pg_roles WHERE rolname = 'magnet'")" != "1" ]; then
    magnet_psql -c "CREATE ROLE magnet LOGIN PASSWORD 'magnet'"
fi
if [ "$(magnet_psql -tAc "SELECT 1 FROM pg_database WHERE datname = 'magnet'")" != "1" ]; then
    magnet_psql -c "CREATE DATABASE magnet OWNER magnet"
fi

export MAGNET_POSTGRES_URL="postgres://magnet:magnet@127.0.0.1:${MAGNET_PG_PORT}/magnet"
echo "postgres.sh: PostgreSQL ($MAGNET_PG_BIN) on 127.0.0.1:${MAGNET_PG_PORT}, MAGNET_POSTGRES_URL set"
