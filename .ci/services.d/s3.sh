# S3-compatible object store on loopback for the diloco crate's S3 tests: moto's server
# (PyPI `moto[server]`) in its own venv. Sourced by .ci/run (bash, set -euo pipefail, root);
# idempotent: reuses the venv, a running server and the bucket.
MAGNET_MOTO_VENV="${MAGNET_MOTO_VENV:-/opt/moto}"
MAGNET_S3_PORT="${MAGNET_S3_PORT:-9723}"
MAGNET_S3_BUCKET="${MAGNET_S3_BUCKET:-magnet-diloco}"

if [ ! -x "$MAGNET_MOTO_VENV/bin/moto_server" ]; then
    if ! python3 -m venv "$MAGNET_MOTO_VENV" >/dev/null 2>&1; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv >/dev/null
        rm -rf "$MAGNET_MOTO_VENV"
        python3 -m venv "$MAGNET_MOTO_VENV"
    fi
    "$MAGNET_MOTO_VENV/bin/pip" install --quiet --disable-pip-version-check 'moto[server]==5.2.5'
fi

magnet_s3_probe() {
    "$MAGNET_MOTO_VENV/bin/python" - "$1" "$2" <<'PY'
import sys, urllib.request
method, url = sys.argv[1], sys.argv[2]
try:
    urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=2)
except urllib.error.HTTPError as e:
    # 409 BucketAlreadyOwnedByYou on a re-run is fine.
    sys.exit(0 if e.code in (409,) else 1)
except Exception:
    sys.exit(1)
PY
}

if ! magnet_s3_probe GET "http://127.0.0.1:${MAGNET_S3_PORT}/moto-api/"; then
    nohup "$MAGNET_MOTO_VENV/bin/moto_server" -H 127.0.0.1 -p "$MAGNET_S3_PORT" \
        >/tmp/magnet-moto.log 2>&1 &
    disown || true
    for _ in $(seq 1 60); do
        magnet_s3_probe GET "http://127.0.0.1:${MAGNET_S3_PORT}/moto-api/" && break
        sleep 0.5
    done
    magnet_s3_probe GET "http://127.0.0.1:${MAGNET_S3_PORT}/moto-api/" || {
        echo "s3.sh: moto_server did not start (see /tmp/magnet-moto.log)" >&2
        return 1
    }
fi
# moto accepts an unsigned CreateBucket.
magnet_s3_probe PUT "http://127.0.0.1:${MAGNET_S3_PORT}/${MAGNET_S3_BUCKET}"

export MAGNET_S3_ENDPOINT="http://127.0.0.1:${MAGNET_S3_PORT}"
export MAGNET_S3_BUCKET
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-testing}"
export AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-testing}"
export AWS_REGION="${AWS_REGION:-us-east-1}"
echo "s3.sh: moto S3 on ${MAGNET_S3_ENDPOINT}, bucket ${MAGNET_S3_BUCKET}"
