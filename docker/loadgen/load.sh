#!/bin/sh
# The demo stack's load generator (docker/compose.yml, profile `load`): upserts rows of
# shop.users through each daemon's write API at WRITES_PER_SECOND per daemon, forever.
# Daemon i (0, 1, 2 in TARGETS order) writes ids i*1000+1 .. i*1000+1000, so each
# strategy's Redis database holds its own rows; the binlog daemon sees every write to
# the table, whoever made it. `version` grows with every write (the tables'
# version_column), from a start taken from the clock so a restarted generator goes on
# growing.
set -eu
: "${CACHESYNC_API_TOKEN:?}" "${TARGETS:?}"
rate=${WRITES_PER_SECOND:-20}
version=$(($(date +%s) * 1000))
pause=$(awk "BEGIN { printf \"%.3f\", 1 / $rate }")
touch /tmp/loadgen.alive
while :; do
    version=$((version + 1))
    id_in_range=$((version % 1000 + 1))
    i=0
    for target in $TARGETS; do
        id=$((i * 1000 + id_in_range))
        curl -fsS -o /dev/null -X PUT "http://$target/v1/tables/shop.users/rows" \
            -H "Authorization: Bearer $CACHESYNC_API_TOKEN" \
            -H 'Content-Type: application/json' \
            -d "{\"id\": $id, \"email\": \"user$id@example.com\", \"name\": \"User $id\", \"balance\": \"$((version % 10000)).25\", \"version\": $version}" &
        i=$((i + 1))
    done
    wait
    sleep "$pause"
done
