# Source this file: starts a throw-away PostgreSQL server on a unix socket only (no TCP), creates a user and a
# database, exports TOKENCACHE_TEST_PG_URL and stops the server (and removes its files) when the shell exits.
# Needs the Debian package `postgresql` (installed by .ci/run when missing and when run as root).

pg_start() {
    local bin
    bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
    if [ -z "$bin" ]; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
            bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
        else
            echo "postgresql is not installed (apt-get install postgresql); the PostgreSQL tests will be skipped" >&2
            return 0
        fi
    fi
    PG_DIR=$(mktemp -d /tmp/tokencache-pg.XXXXXX)
    local run_as=()
    if [ "$(id -u)" = 0 ]; then  # initdb refuses to run as root
        chown postgres "$PG_DIR"
        run_as=(runuser -u postgres --)
    fi
    "${run_as[@]}" "$bin/initdb" -D "$PG_DIR/data" -U postgres -A trust >/dev/null
    "${run_as[@]}" "$bin/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/log" -w \
        -o "-c listen_addresses='' -k $PG_DIR -c max_connections=50" start >/dev/null
    PG_BIN=$bin
    trap pg_stop EXIT
    "$bin/psql" -h "$PG_DIR" -U postgres -q -c "CREATE USER tokencache" -c "CREATE DATABASE tokencache OWNER tokencache"
    export TOKENCACHE_TEST_PG_URL="postgresql+psycopg2://tokencache@/tokencache?host=$PG_DIR"
    echo "PostgreSQL on unix socket $PG_DIR: $TOKENCACHE_TEST_PG_URL" >&2
}

pg_stop() {
    if [ -n "${PG_DIR:-}" ] && [ -d "$PG_DIR/data" ]; then
        local run_as=()
        [ "$(id -u)" = 0 ] && run_as=(runuser -u postgres --)
        "${run_as[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m fast -w stop >/dev/null || true
        rm -rf "$PG_DIR"
    fi
}
