#!/usr/bin/env bash
# Starts (or stops) the machine's Debian PostgreSQL cluster and makes sure the test roles
# and database exist, as docs/datastorage.md describes for production:
#   audit_guard / audit_guard          owner: creates databases, migrates, owns the tables
#   audit_guard_app / audit_guard_app  runtime: login only; `datastorage migrate --runtime-role`
#                                      grants it INSERT and SELECT on the audit tables, nothing else
# and the database audit_guard (owned by audit_guard).
set -euo pipefail
action="${1:-start}"
# su postgres cannot enter a root-only working directory (mktemp -d clones); it needs none.
cd /
cluster="$(pg_lsclusters --no-header 2>/dev/null | awk 'NR==1 {print $1" "$2}')"
if [ -z "$cluster" ]; then
  version="$(ls /usr/lib/postgresql | sort -V | tail -1)"
  pg_createcluster "$version" main >/dev/null
  cluster="$version main"
fi
# The tests and the README's URLs use port 5432. A cluster created while another server held
# that port (a reinstall, say) gets the next free one: move it back when 5432 is free.
port="$(pg_lsclusters --no-header | awk -v c="$cluster" '$1" "$2 == c {print $3}')"
if [ "$action" = start ] && [ "$port" != 5432 ] && ! ss -ltn 2>/dev/null | grep -q '127.0.0.1:5432 \|:5432 '; then
  # shellcheck disable=SC2086
  pg_conftool $cluster set port 5432
  # shellcheck disable=SC2086
  pg_ctlcluster $cluster stop 2>/dev/null || true
fi
# shellcheck disable=SC2086
case "$action" in
  start)
    pg_ctlcluster $cluster start 2>/dev/null || true
    for _ in $(seq 1 50); do
      su postgres -c "psql -qAtc 'select 1'" >/dev/null 2>&1 && break
      sleep 0.2
    done
    su postgres -c "psql -qAtc \"select 1 from pg_roles where rolname='audit_guard'\"" | grep -q 1 ||
      su postgres -c "psql -qc \"create role audit_guard login createdb password 'audit_guard'\""
    su postgres -c "psql -qAtc \"select 1 from pg_roles where rolname='audit_guard_app'\"" | grep -q 1 ||
      su postgres -c "psql -qc \"create role audit_guard_app login nosuperuser nocreatedb nocreaterole password 'audit_guard_app'\""
    # Tests drop their databases WITH (FORCE), which must end the runtime role's sessions too.
    su postgres -c "psql -qc 'grant pg_signal_backend to audit_guard'" >/dev/null
    su postgres -c "psql -qAtc \"select 1 from pg_database where datname='audit_guard'\"" | grep -q 1 ||
      su postgres -c "psql -qc 'create database audit_guard owner audit_guard'"
    echo "PostgreSQL up: postgres://audit_guard:audit_guard@127.0.0.1:5432/audit_guard (owner), runtime role audit_guard_app"
    ;;
  stop) pg_ctlcluster $cluster stop ;;
  restart) pg_ctlcluster $cluster restart ;;
  *) echo "usage: $0 start|stop|restart" >&2; exit 2 ;;
esac
