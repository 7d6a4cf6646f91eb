-- Soft state for the pipe (read-only), one statement per table, run in this
-- order by `load_metrics` in src/store.rs. Skipped when the table is missing
-- (a plain gsqlite3 database): every algorithm then answers as stored.
SELECT cidr, name FROM ha_networks;
SELECT name FROM ha_targets;
SELECT name, max_sessions FROM ha_targets WHERE max_sessions IS NOT NULL;
SELECT target, up, updated FROM ha_health;
SELECT target, sessions, max_sessions, updated FROM ha_load;
SELECT network, target, ewma_ms, mean_ms, samples, updated FROM ha_latency;
