-- Every statement the pipe runs, all read-only, each under a `-- name:` line
-- that the code asks for by name (src/pipe/store.rs, `named`). Record rows
-- come out in one shape everywhere: name, type, content, ttl, prio,
-- domain_id, auth, and the name of the record's zone (for the apex check).
-- Rows with a NULL type are pdns's empty non-terminals, which the pipe ABI of
-- 4.7 cannot express; disabled rows are never served, as in gsqlite3.

-- name: zones_version
SELECT n FROM ha_changes WHERE kind = 'zones';

-- name: records_at_most
SELECT count(*) FROM (SELECT 1 FROM records LIMIT ?1);

-- name: domains
SELECT id, CAST(name AS TEXT) FROM domains WHERE name IS NOT NULL;

-- name: records
SELECT CAST(name AS TEXT), CAST(type AS TEXT), CAST(content AS TEXT), ttl, prio, domain_id,
       COALESCE(auth, 1) != 0
FROM records
WHERE disabled = 0 AND type IS NOT NULL AND type != '' AND name IS NOT NULL
  AND domain_id IS NOT NULL
ORDER BY id;

-- name: records_named
-- One name, through gsqlite3's own index on (name, type): pdns's tools store
-- names lower case without the trailing dot, which is how the pipe asks.
SELECT CAST(r.name AS TEXT), CAST(r.type AS TEXT), CAST(r.content AS TEXT), r.ttl, r.prio,
       r.domain_id, COALESCE(r.auth, 1) != 0, CAST(d.name AS TEXT)
FROM records r JOIN domains d ON d.id = r.domain_id
WHERE r.name = ?1 AND r.disabled = 0 AND r.type IS NOT NULL AND r.type != ''
ORDER BY r.id;

-- name: domain_by_id
SELECT id, CAST(name AS TEXT) FROM domains WHERE id = ?1;

-- name: domain_by_name
SELECT id, CAST(name AS TEXT) FROM domains WHERE name = ?1;

-- name: zone_records
SELECT CAST(name AS TEXT), CAST(type AS TEXT), CAST(content AS TEXT), ttl, prio, domain_id,
       COALESCE(auth, 1) != 0
FROM records
WHERE domain_id = ?1 AND disabled = 0 AND type IS NOT NULL AND type != '' AND name IS NOT NULL
ORDER BY id;

-- Soft state, one statement per table; a table that is missing (a plain
-- gsqlite3 database) is skipped, and every algorithm then answers as stored.

-- name: networks
SELECT cidr, name FROM ha_networks;

-- name: targets
SELECT name FROM ha_targets;

-- name: capacity
SELECT name, max_sessions FROM ha_targets WHERE max_sessions IS NOT NULL;

-- name: health
-- One row per target and monitor: the pipe counts the fresh verdicts.
SELECT target, monitor, up, updated FROM ha_health;

-- name: service_health
-- One row per advertised service and monitor (a newer table: a database
-- without it is served as before).
SELECT target, transport, port, monitor, up, updated FROM ha_service_health;

-- name: load
SELECT target, sessions, max_sessions, updated FROM ha_load;

-- name: latency
-- One row per network, target and source: the ranking fuses the sources.
SELECT network, target, ewma_ms, mean_ms, samples, updated, source, callers FROM ha_latency;

-- name: drains
-- Hard state, but read with the readings: a drain must never reload zones.
SELECT target, reason, since FROM ha_drain;

-- name: drain_generations
-- Absent from databases made before issue 19: read only where it exists.
SELECT target, generation FROM ha_drain_generation;

-- Changes since the last read (sql/schema.sql, ha_log), each in its table's
-- shape above plus a last column that says whether the row is still there.
-- `+l.kind` keeps the planner on the seq index: on the primary key (kind
-- first) it would scan every latency key, 160,000 at 20,000 networks.

-- name: hard_versions
SELECT (SELECT n FROM ha_changes WHERE kind = 'networks'),
       (SELECT n FROM ha_changes WHERE kind = 'targets');

-- name: log_seq
SELECT ifnull(max(seq), 0) FROM ha_log;

-- name: latency_changed
SELECT l.k1, l.k2, t.ewma_ms, t.mean_ms, t.samples, t.updated, l.k3, t.callers,
       t.network IS NOT NULL
FROM ha_log l LEFT JOIN ha_latency t ON t.network = l.k1 AND t.target = l.k2 AND t.source = l.k3
WHERE l.seq > ?1 AND +l.kind = 'latency';

-- name: health_changed
SELECT l.k1, l.k2, t.up, t.updated, t.target IS NOT NULL
FROM ha_log l LEFT JOIN ha_health t ON t.target = l.k1 AND t.monitor = l.k2
WHERE l.seq > ?1 AND +l.kind = 'health';

-- name: load_changed
SELECT l.k1, t.sessions, t.max_sessions, t.updated, t.target IS NOT NULL
FROM ha_log l LEFT JOIN ha_load t ON t.target = l.k1
WHERE l.seq > ?1 AND +l.kind = 'load';

-- name: drains_changed
SELECT l.k1, t.reason, t.since, t.target IS NOT NULL, g.generation
FROM ha_log l LEFT JOIN ha_drain t ON t.target = l.k1
  LEFT JOIN ha_drain_generation g ON g.target = l.k1
WHERE l.seq > ?1 AND +l.kind = 'drain';

-- name: service_health_changed
-- Keyed (target, 'transport/port', monitor) in the log.
SELECT l.k1, l.k2, l.k3, t.up, t.updated, t.target IS NOT NULL
FROM ha_log l LEFT JOIN ha_service_health t ON t.target = l.k1
  AND t.transport || '/' || t.port = l.k2 AND t.monitor = l.k3
WHERE l.seq > ?1 AND +l.kind = 'service';
