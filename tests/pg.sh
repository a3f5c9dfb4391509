#!/usr/bin/env bash
# PostgreSQL for berth's tests: a throwaway cluster in a temporary directory, run as the
# unprivileged `postgres` user, listening on 127.0.0.1:<free port> (password sign-in over TCP)
# and on a socket in its directory. Source after tests/lib.sh (uses t_port).
#
#   pg_start             initdb + pg_ctl start; creates database $PG_DB. Sets PG_DIR PG_BIN
#                        PG_HOST PG_PORT PG_USER PG_PASSWORD PG_DB.
#   pg_createdb NAME     creates a database (no error when it exists)
#   pg_psql DB SQL...    runs SQL as the superuser over the socket, unaligned tuples only
#   pg_stop              pg_ctl stop, removes the directory
#   pg_database_yaml DB [PASSWORD] [MAXOPEN]
#                        prints the database: section of a berth config for DB on this server
#   pg_berth_wrapper F   writes an executable F that runs $BERTH with a database: section (as
#                        REGISTRY_DATABASE_* variables) naming a database of its own for each
#                        storage directory, created on first use: the existing suites then run
#                        unchanged against PostgreSQL with BERTH=F.

pg_start() {
    PG_BIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}
    [ -x "$PG_BIN/initdb" ] || {
        echo "pg_start: no PostgreSQL server (apt-get install postgresql)" >&2
        return 1
    }
    PG_DIR=$(mktemp -d /tmp/berth-pg.XXXXXX)
    chown postgres: "$PG_DIR"
    PG_HOST=127.0.0.1
    PG_PORT=$(t_port)
    PG_USER=postgres
    PG_PASSWORD=pw-$RANDOM$RANDOM
    PG_DB=berth
    echo "$PG_PASSWORD" >"$PG_DIR/pwfile"
    chown postgres: "$PG_DIR/pwfile"
    runuser -u postgres -- "$PG_BIN/initdb" -D "$PG_DIR/data" -U "$PG_USER" --pwfile="$PG_DIR/pwfile" \
        --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C --no-sync \
        >"$PG_DIR/initdb.log" 2>&1 || {
        echo "pg_start: initdb failed:" >&2
        tail -5 "$PG_DIR/initdb.log" >&2
        return 1
    }
    # fsync off: the tests kill berth, never the database; max_connections for several servers
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 \
        -o "-p $PG_PORT -c listen_addresses=$PG_HOST -k $PG_DIR -c fsync=off -c max_connections=300" \
        start >/dev/null || {
        echo "pg_start: pg_ctl start failed:" >&2
        tail -5 "$PG_DIR/server.log" >&2
        return 1
    }
    pg_createdb "$PG_DB"
}

pg_psql() {
    local db=$1
    shift
    runuser -u postgres -- "$PG_BIN/psql" -h "$PG_DIR" -p "$PG_PORT" -U "$PG_USER" -d "$db" \
        -v ON_ERROR_STOP=1 -qtA -c "$*"
}

pg_createdb() {
    [ "$(pg_psql postgres "SELECT 1 FROM pg_database WHERE datname = '$1'")" = 1 ] && return 0
    runuser -u postgres -- "$PG_BIN/createdb" -h "$PG_DIR" -p "$PG_PORT" -U "$PG_USER" \
        -T template0 -E UTF8 "$1" 2>/dev/null ||
        [ "$(pg_psql postgres "SELECT 1 FROM pg_database WHERE datname = '$1'")" = 1 ]
}

pg_stop() {
    [ -n "${PG_DIR:-}" ] && [ -d "$PG_DIR/data" ] || return 0
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m fast -w stop >/dev/null 2>&1
    [ -n "${T_KEEP:-}" ] || rm -rf "$PG_DIR"
    PG_DIR=
}

pg_database_yaml() {
    cat <<YML
database:
  enabled: true
  host: $PG_HOST
  port: $PG_PORT
  user: $PG_USER
  password: ${2:-$PG_PASSWORD}
  dbname: $1
  sslmode: disable
  pool:
    maxopen: ${3:-4}
YML
}

pg_berth_wrapper() {
    {
        printf '#!/usr/bin/env bash\n# berth with its metadata in PostgreSQL (tests/pg.sh): one database per storage directory.\n'
        printf 'real=%q\n' "$(realpath "$BERTH")"
        t_wrapper_head
        cat <<SH
db=berth_\$(printf '%s' "\$root" | md5sum | cut -c1-16)
export PGPASSWORD=$PG_PASSWORD
if [ "\$(psql -h $PG_HOST -p $PG_PORT -U $PG_USER -d postgres -qtAc "SELECT 1 FROM pg_database WHERE datname = '\$db'")" != 1 ]; then
    psql -h $PG_HOST -p $PG_PORT -U $PG_USER -d postgres -qc "CREATE DATABASE \$db TEMPLATE template0 ENCODING 'UTF8'" >/dev/null 2>&1 || true
fi
unset PGPASSWORD
export REGISTRY_DATABASE_ENABLED=true REGISTRY_DATABASE_HOST=$PG_HOST REGISTRY_DATABASE_PORT=$PG_PORT
export REGISTRY_DATABASE_USER=$PG_USER REGISTRY_DATABASE_PASSWORD=$PG_PASSWORD
export REGISTRY_DATABASE_DBNAME=\$db REGISTRY_DATABASE_SSLMODE=disable
exec "\$real" "\$@"
SH
    } >"$1"
    chmod +x "$1"
}
