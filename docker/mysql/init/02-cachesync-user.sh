# shellcheck shell=bash
# Creates the `cachesync` MySQL user the daemons log in as, with the password from
# CACHESYNC_MYSQL_PASSWORD (docker/.env; a LOCAL DEMO value). The MySQL image runs this
# once, on an empty data directory, after 01-demo.sql (config/demo.sql) and before
# 03-cachesync-grants.sql, which holds the grants. It is sourced by the image's
# entrypoint (not executable on purpose), which provides docker_process_sql.
: "${CACHESYNC_MYSQL_PASSWORD:?set CACHESYNC_MYSQL_PASSWORD (docker/.env)}"
case "$CACHESYNC_MYSQL_PASSWORD" in
*\'* | *\\*)
    echo "CACHESYNC_MYSQL_PASSWORD must not contain ' or \\" >&2
    exit 1
    ;;
esac
docker_process_sql <<SQL
CREATE USER IF NOT EXISTS 'cachesync'@'%' IDENTIFIED BY '${CACHESYNC_MYSQL_PASSWORD}';
SQL
