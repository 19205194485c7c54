-- What the `cachesync` user (02-cachesync-user.sh) needs, and nothing more.
-- tests/docker_stack.rs runs this file on a MariaDB and `cachesync doctor` as that user.
--
-- Binlog strategy: stream the binlog as a replica (REPLICATION SLAVE), read binlog
-- positions (REPLICATION CLIENT), and on MySQL take the snapshot's position under a
-- brief FLUSH TABLES WITH READ LOCK (RELOAD), as mysqldump does.
GRANT REPLICATION SLAVE, REPLICATION CLIENT, RELOAD ON *.* TO 'cachesync'@'%';
-- The synced tables: read them (snapshot, verify, the startup schema check) and write
-- rows through the sidecar write API (dual-write, mq; binlog commits only).
GRANT SELECT, INSERT, UPDATE, DELETE ON shop.* TO 'cachesync'@'%';
-- cachesync's own tables, created on first use: the binlog heartbeat
-- (binlog.heartbeat_table) and the mq outbox (amqp.outbox_table), in database `cachesync`.
GRANT CREATE, SELECT, INSERT, UPDATE, DELETE ON cachesync.* TO 'cachesync'@'%';
