-- pdns-ha schema: PowerDNS's own gsqlite3 tables (4.7, unchanged apart from
-- IF NOT EXISTS, so `pdns-ha init` can run on an existing database) followed by
-- the pdns-ha tables. A database made from this file serves unchanged through
-- pdns's gsqlite3 backend, and a gsqlite3 database gains the ha_ tables by
-- running `pdns-ha init` on it.

CREATE TABLE IF NOT EXISTS domains (
  id                    INTEGER PRIMARY KEY,
  name                  VARCHAR(255) NOT NULL COLLATE NOCASE,
  master                VARCHAR(128) DEFAULT NULL,
  last_check            INTEGER DEFAULT NULL,
  type                  VARCHAR(8) NOT NULL,
  notified_serial       INTEGER DEFAULT NULL,
  account               VARCHAR(40) DEFAULT NULL,
  options               VARCHAR(65535) DEFAULT NULL,
  catalog               VARCHAR(255) DEFAULT NULL
);

CREATE UNIQUE INDEX IF NOT EXISTS name_index ON domains(name);
CREATE INDEX IF NOT EXISTS catalog_idx ON domains(catalog);


CREATE TABLE IF NOT EXISTS records (
  id                    INTEGER PRIMARY KEY,
  domain_id             INTEGER DEFAULT NULL,
  name                  VARCHAR(255) DEFAULT NULL,
  type                  VARCHAR(10) DEFAULT NULL,
  content               VARCHAR(65535) DEFAULT NULL,
  ttl                   INTEGER DEFAULT NULL,
  prio                  INTEGER DEFAULT NULL,
  disabled              BOOLEAN DEFAULT 0,
  ordername             VARCHAR(255),
  auth                  BOOL DEFAULT 1,
  FOREIGN KEY(domain_id) REFERENCES domains(id) ON DELETE CASCADE ON UPDATE CASCADE
);

CREATE INDEX IF NOT EXISTS records_lookup_idx ON records(name, type);
CREATE INDEX IF NOT EXISTS records_lookup_id_idx ON records(domain_id, name, type);
CREATE INDEX IF NOT EXISTS records_order_idx ON records(domain_id, ordername);


CREATE TABLE IF NOT EXISTS supermasters (
  ip                    VARCHAR(64) NOT NULL,
  nameserver            VARCHAR(255) NOT NULL COLLATE NOCASE,
  account               VARCHAR(40) NOT NULL
);

CREATE UNIQUE INDEX IF NOT EXISTS ip_nameserver_pk ON supermasters(ip, nameserver);


CREATE TABLE IF NOT EXISTS comments (
  id                    INTEGER PRIMARY KEY,
  domain_id             INTEGER NOT NULL,
  name                  VARCHAR(255) NOT NULL,
  type                  VARCHAR(10) NOT NULL,
  modified_at           INT NOT NULL,
  account               VARCHAR(40) DEFAULT NULL,
  comment               VARCHAR(65535) NOT NULL,
  FOREIGN KEY(domain_id) REFERENCES domains(id) ON DELETE CASCADE ON UPDATE CASCADE
);

CREATE INDEX IF NOT EXISTS comments_idx ON comments(domain_id, name, type);
CREATE INDEX IF NOT EXISTS comments_order_idx ON comments (domain_id, modified_at);


CREATE TABLE IF NOT EXISTS domainmetadata (
 id                     INTEGER PRIMARY KEY,
 domain_id              INT NOT NULL,
 kind                   VARCHAR(32) COLLATE NOCASE,
 content                TEXT,
 FOREIGN KEY(domain_id) REFERENCES domains(id) ON DELETE CASCADE ON UPDATE CASCADE
);

CREATE INDEX IF NOT EXISTS domainmetaidindex ON domainmetadata(domain_id);


CREATE TABLE IF NOT EXISTS cryptokeys (
 id                     INTEGER PRIMARY KEY,
 domain_id              INT NOT NULL,
 flags                  INT NOT NULL,
 active                 BOOL,
 published              BOOL DEFAULT 1,
 content                TEXT,
 FOREIGN KEY(domain_id) REFERENCES domains(id) ON DELETE CASCADE ON UPDATE CASCADE
);

CREATE INDEX IF NOT EXISTS domainidindex ON cryptokeys(domain_id);


CREATE TABLE IF NOT EXISTS tsigkeys (
 id                     INTEGER PRIMARY KEY,
 name                   VARCHAR(255) COLLATE NOCASE,
 algorithm              VARCHAR(50) COLLATE NOCASE,
 secret                 VARCHAR(255)
);

CREATE UNIQUE INDEX IF NOT EXISTS namealgoindex ON tsigkeys(name, algorithm);


-- One row per measured thing: an SRV target host (name as in the SRV content,
-- lowercase, without the trailing dot) or an address of an A/AAAA RRset.
CREATE TABLE IF NOT EXISTS ha_targets (
  name                  TEXT PRIMARY KEY COLLATE NOCASE,
  -- How the monitor checks health and latency. 'sip-udp' and 'sip-tcp' send
  -- SIP OPTIONS (up only if the answer's code is accepted, see
  -- probe_ok_codes), 'tcp' only connects.
  probe                 TEXT NOT NULL DEFAULT 'sip-udp'
                        CHECK (probe IN ('none', 'sip-udp', 'sip-tcp', 'tcp')),
  -- host:port to probe; NULL means the target name on port 5060.
  probe_address         TEXT DEFAULT NULL,
  -- Capacity in sessions. NULL: take it from the load source when it
  -- reports one (FreeSWITCH does), else the target has no known capacity.
  max_sessions          INTEGER DEFAULT NULL CHECK (max_sessions IS NULL OR max_sessions > 0),
  load_source           TEXT NOT NULL DEFAULT 'none'
                        CHECK (load_source IN ('none', 'freeswitch', 'kamailio')),
  -- FreeSWITCH Event Socket host:port, or Kamailio JSON-RPC http:// URL.
  load_address          TEXT DEFAULT NULL,
  -- Event Socket password. Never logged, never shown by status or CMD. Kept
  -- for older databases: pdns's user reads this table and every DNS node
  -- copies it, so prefer load_secret_file (`pdns-ha check` flags this).
  load_secret           TEXT DEFAULT NULL,
  -- SIP response codes that mean "up" for this target's OPTIONS probe:
  -- codes and classes, comma-separated, e.g. '200,401,404' for a server that
  -- challenges or rejects unknown callers, or '2xx,405'. NULL means '2xx'.
  -- Anything else (503 above all) means unavailable. Added after the first
  -- release: `pdns-ha init` adds it to older databases (see ops/init.rs).
  probe_ok_codes        TEXT DEFAULT NULL,
  -- Absolute path of a file holding the Event Socket password, read by the
  -- monitor at each round: readable by the monitor's user only, never by
  -- pdns. Used instead of load_secret when set. Added after the first
  -- release (see ops/init.rs).
  load_secret_file      TEXT DEFAULT NULL,
  -- PEM file of the CA(s) that sign this target's TLS certificate, for its
  -- `_sips._tcp` services: replaces the system roots for this target alone.
  -- NULL: the system roots (or the file named by SSL_CERT_FILE). Added after
  -- the first release, like probe_ok_codes.
  probe_ca_file         TEXT DEFAULT NULL
);

-- Hard state: targets an operator took out of service (`pdns-ha drain`).
-- Every algorithm leaves a drained target out, whatever the probes say; only
-- `pdns-ha undrain` brings it back.
CREATE TABLE IF NOT EXISTS ha_drain (
  target                TEXT PRIMARY KEY COLLATE NOCASE,
  reason                TEXT NOT NULL DEFAULT '',
  since                 REAL NOT NULL
);

-- The generation of each target's last drain or undrain: each takes the
-- next one, and an undrain keeps its generation here after its ha_drain row
-- is gone, so that a copy of an older drain written back into memcached is
-- refused by every pipe reading this database (issue 19).
CREATE TABLE IF NOT EXISTS ha_drain_generation (
  target                TEXT PRIMARY KEY COLLATE NOCASE,
  generation            INTEGER NOT NULL CHECK (generation >= 0)
);

-- Known client networks for least-latency, matched by longest prefix.
CREATE TABLE IF NOT EXISTS ha_networks (
  cidr                  TEXT PRIMARY KEY,
  name                  TEXT NOT NULL
);

-- Soft state below: written by `pdns-ha monitor` and `pdns-ha metric`, read by
-- the pipe. `updated` is Unix time in seconds; older than --stale-after means
-- unknown.
-- One row per target and monitor (`monitor --monitor-id`, the host name by
-- default): a target is down only when most monitors with fresh rows say so.
CREATE TABLE IF NOT EXISTS ha_health (
  target                TEXT NOT NULL COLLATE NOCASE,
  monitor               TEXT NOT NULL DEFAULT '',
  up                    INTEGER NOT NULL CHECK (up IN (0, 1)),
  -- Consecutive raw probe results against the current state, so anti-flap
  -- thresholds hold across `monitor --once` runs.
  ok_streak             INTEGER NOT NULL DEFAULT 0,
  fail_streak           INTEGER NOT NULL DEFAULT 0,
  updated               REAL NOT NULL,
  PRIMARY KEY (target, monitor)
);

-- Health per advertised service: one row per (target, transport, port) that
-- an SRV record under _sip._udp, _sip._tcp or _sips._tcp names, and per
-- monitor. The pipe judges an SRV record by its own service's rows (majority
-- of fresh monitors, as ha_health) and falls back to ha_health only while its
-- service has no fresh row. A/AAAA answers and SRV records of other services
-- are judged by ha_health alone. Added after the first release: a pipe
-- reading a database without it serves as before.
CREATE TABLE IF NOT EXISTS ha_service_health (
  target                TEXT NOT NULL COLLATE NOCASE,
  transport             TEXT NOT NULL CHECK (transport IN ('udp', 'tcp', 'tls')),
  port                  INTEGER NOT NULL CHECK (port BETWEEN 1 AND 65535),
  monitor               TEXT NOT NULL DEFAULT '',
  up                    INTEGER NOT NULL CHECK (up IN (0, 1)),
  ok_streak             INTEGER NOT NULL DEFAULT 0,
  fail_streak           INTEGER NOT NULL DEFAULT 0,
  -- Why, in words: the SIP answer, or the failure ("certificate expired
  -- 2026-11-30"), or the warning of a certificate about to expire.
  reason                TEXT NOT NULL DEFAULT '',
  -- TLS only: the earliest notAfter of the chain the server sent, Unix time.
  cert_expiry           REAL DEFAULT NULL,
  updated               REAL NOT NULL,
  PRIMARY KEY (target, transport, port, monitor)
);

CREATE TABLE IF NOT EXISTS ha_load (
  target                TEXT PRIMARY KEY COLLATE NOCASE,
  sessions              INTEGER NOT NULL CHECK (sessions >= 0),
  max_sessions          INTEGER DEFAULT NULL CHECK (max_sessions IS NULL OR max_sessions > 0),
  updated               REAL NOT NULL,
  -- Which monitor (or `metric --monitor-id`) wrote it: a measurement, so the
  -- newest wins, but status says whose it is.
  monitor               TEXT DEFAULT NULL
);

-- Latency from a client network ('*' = measured from the monitor's host,
-- the fallback for networks without samples of their own), one row per
-- source: 'observe' (round trips real callers saw), 'freeswitch' (RTCP round
-- trips of real calls, `observe --freeswitch`), 'monitor' (probes, from
-- a vantage host inside the network with `monitor --network`, or from the
-- monitor's host for '*'), 'metric' (pushes, and rows written by hand).
-- The pipe fuses the fresh rows of a (network, target) by callers or
-- samples and age (docs/deployment.md, "Latency from where the callers are"). The source became
-- part of the key after the first release: `pdns-ha init` rebuilds an older
-- table (see ops/init.rs).
CREATE TABLE IF NOT EXISTS ha_latency (
  network               TEXT NOT NULL,
  target                TEXT NOT NULL COLLATE NOCASE,
  source                TEXT NOT NULL DEFAULT 'metric'
                        CHECK (source IN ('observe', 'monitor', 'metric', 'freeswitch')),
  mean_ms               REAL NOT NULL,
  ewma_ms               REAL NOT NULL,
  samples               INTEGER NOT NULL CHECK (samples > 0),
  timeouts              INTEGER NOT NULL DEFAULT 0,
  updated               REAL NOT NULL,
  -- Distinct callers behind the latest figure (observe); NULL for probes
  -- and pushes, which weigh by their sample count.
  callers               INTEGER DEFAULT NULL CHECK (callers IS NULL OR callers > 0),
  -- Which monitor took the latest sample.
  monitor               TEXT DEFAULT NULL,
  PRIMARY KEY (network, target, source)
);

-- Call quality beside latency (`observe --freeswitch`), per network and
-- target, as of the last round that had enough callers: the median over
-- callers of each caller's median MOS (FreeSWITCH's
-- variable_rtp_audio_in_mos, 1 to 4.5) and RTCP loss (a ratio, 0 to 1).
-- Shown by `status`; ranking does not use it.
CREATE TABLE IF NOT EXISTS ha_quality (
  network               TEXT NOT NULL,
  target                TEXT NOT NULL COLLATE NOCASE,
  mos                   REAL DEFAULT NULL CHECK (mos IS NULL OR (mos >= 1 AND mos <= 5)),
  loss                  REAL DEFAULT NULL CHECK (loss IS NULL OR (loss >= 0 AND loss <= 1)),
  callers               INTEGER NOT NULL CHECK (callers > 0),
  calls                 INTEGER NOT NULL CHECK (calls > 0),
  updated               REAL NOT NULL,
  monitor               TEXT DEFAULT NULL,
  PRIMARY KEY (network, target)
);

-- Change counters, one per kind of hard state, kept by triggers so that a
-- pipe process can tell an operator's edit of the zones from the readings
-- that monitors write several times a second: every commit changes SQLite's
-- data_version, but only edits of `domains` or `records` move 'zones', and
-- only those make a pipe drop what it holds of the zones. Writes through
-- pdns's own tools (pdnsutil, the gsqlite3 backend) fire the triggers too.
CREATE TABLE IF NOT EXISTS ha_changes (
  kind                  TEXT PRIMARY KEY,
  n                     INTEGER NOT NULL DEFAULT 0
);
INSERT OR IGNORE INTO ha_changes (kind, n) VALUES ('zones', 0);

CREATE TRIGGER IF NOT EXISTS ha_zones_records_insert AFTER INSERT ON records
BEGIN UPDATE ha_changes SET n = n + 1 WHERE kind = 'zones'; END;
CREATE TRIGGER IF NOT EXISTS ha_zones_records_update AFTER UPDATE ON records
BEGIN UPDATE ha_changes SET n = n + 1 WHERE kind = 'zones'; END;
CREATE TRIGGER IF NOT EXISTS ha_zones_records_delete AFTER DELETE ON records
BEGIN UPDATE ha_changes SET n = n + 1 WHERE kind = 'zones'; END;
CREATE TRIGGER IF NOT EXISTS ha_zones_domains_insert AFTER INSERT ON domains
BEGIN UPDATE ha_changes SET n = n + 1 WHERE kind = 'zones'; END;
CREATE TRIGGER IF NOT EXISTS ha_zones_domains_update AFTER UPDATE ON domains
BEGIN UPDATE ha_changes SET n = n + 1 WHERE kind = 'zones'; END;
CREATE TRIGGER IF NOT EXISTS ha_zones_domains_delete AFTER DELETE ON domains
BEGIN UPDATE ha_changes SET n = n + 1 WHERE kind = 'zones'; END;

-- Hard state the pipe holds beside the readings: an edit of the networks or
-- the targets moves its own counter, and only then is that table re-read.
INSERT OR IGNORE INTO ha_changes (kind, n) VALUES ('networks', 0);
INSERT OR IGNORE INTO ha_changes (kind, n) VALUES ('targets', 0);

CREATE TRIGGER IF NOT EXISTS ha_networks_insert AFTER INSERT ON ha_networks
BEGIN UPDATE ha_changes SET n = n + 1 WHERE kind = 'networks'; END;
CREATE TRIGGER IF NOT EXISTS ha_networks_update AFTER UPDATE ON ha_networks
BEGIN UPDATE ha_changes SET n = n + 1 WHERE kind = 'networks'; END;
CREATE TRIGGER IF NOT EXISTS ha_networks_delete AFTER DELETE ON ha_networks
BEGIN UPDATE ha_changes SET n = n + 1 WHERE kind = 'networks'; END;
CREATE TRIGGER IF NOT EXISTS ha_targets_insert AFTER INSERT ON ha_targets
BEGIN UPDATE ha_changes SET n = n + 1 WHERE kind = 'targets'; END;
CREATE TRIGGER IF NOT EXISTS ha_targets_update AFTER UPDATE ON ha_targets
BEGIN UPDATE ha_changes SET n = n + 1 WHERE kind = 'targets'; END;
CREATE TRIGGER IF NOT EXISTS ha_targets_delete AFTER DELETE ON ha_targets
BEGIN UPDATE ha_changes SET n = n + 1 WHERE kind = 'targets'; END;

-- Which readings changed, so that a pipe reads the rows a commit touched
-- and not every reading (issue 22: 160,000 rows at 20,000 networks × 8
-- targets). One row per reading key ever written, stamped with a sequence
-- number that every write of that key moves past all others; a pipe reads
-- the rows stamped after the last number it saw, joined to the readings
-- (a key whose reading is gone was deleted). Kept by triggers, so every
-- writer (monitor, observe, metric, sqlite3 by hand) is seen. Keys are
-- (network, target, source) for 'latency', (target, monitor) for
-- 'health', (target, 'transport/port', monitor) for 'service', the target
-- for 'load' and 'drain' (a drain's generation moves with it).
CREATE TABLE IF NOT EXISTS ha_log (
  kind                  TEXT NOT NULL,
  k1                    TEXT NOT NULL,
  k2                    TEXT NOT NULL DEFAULT '',
  k3                    TEXT NOT NULL DEFAULT '',
  seq                   INTEGER NOT NULL,
  PRIMARY KEY (kind, k1, k2, k3)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS ha_log_seq ON ha_log (seq);

-- An upsert, not INSERT OR REPLACE: a writer's own upsert would override
-- the trigger's conflict policy. The sequence number is taken before the
-- row is replaced, so it always moves past every number a pipe has seen.
CREATE TRIGGER IF NOT EXISTS ha_log_latency_insert AFTER INSERT ON ha_latency
BEGIN INSERT INTO ha_log (kind, k1, k2, k3, seq)
  VALUES ('latency', new.network, new.target, new.source, (SELECT ifnull(max(seq), 0) + 1 FROM ha_log))
  ON CONFLICT (kind, k1, k2, k3) DO UPDATE SET seq = excluded.seq; END;
CREATE TRIGGER IF NOT EXISTS ha_log_latency_update AFTER UPDATE ON ha_latency
BEGIN INSERT INTO ha_log (kind, k1, k2, k3, seq)
  VALUES ('latency', new.network, new.target, new.source, (SELECT ifnull(max(seq), 0) + 1 FROM ha_log))
  ON CONFLICT (kind, k1, k2, k3) DO UPDATE SET seq = excluded.seq; END;
CREATE TRIGGER IF NOT EXISTS ha_log_latency_rekey AFTER UPDATE ON ha_latency
WHEN old.network IS NOT new.network OR old.target IS NOT new.target OR old.source IS NOT new.source
BEGIN INSERT INTO ha_log (kind, k1, k2, k3, seq)
  VALUES ('latency', old.network, old.target, old.source, (SELECT ifnull(max(seq), 0) + 1 FROM ha_log))
  ON CONFLICT (kind, k1, k2, k3) DO UPDATE SET seq = excluded.seq; END;
CREATE TRIGGER IF NOT EXISTS ha_log_latency_delete AFTER DELETE ON ha_latency
BEGIN INSERT INTO ha_log (kind, k1, k2, k3, seq)
  VALUES ('latency', old.network, old.target, old.source, (SELECT ifnull(max(seq), 0) + 1 FROM ha_log))
  ON CONFLICT (kind, k1, k2, k3) DO UPDATE SET seq = excluded.seq; END;
CREATE TRIGGER IF NOT EXISTS ha_log_health_insert AFTER INSERT ON ha_health
BEGIN INSERT INTO ha_log (kind, k1, k2, seq)
  VALUES ('health', new.target, new.monitor, (SELECT ifnull(max(seq), 0) + 1 FROM ha_log))
  ON CONFLICT (kind, k1, k2, k3) DO UPDATE SET seq = excluded.seq; END;
CREATE TRIGGER IF NOT EXISTS ha_log_health_update AFTER UPDATE ON ha_health
BEGIN INSERT INTO ha_log (kind, k1, k2, seq)
  VALUES ('health', new.target, new.monitor, (SELECT ifnull(max(seq), 0) + 1 FROM ha_log))
  ON CONFLICT (kind, k1, k2, k3) DO UPDATE SET seq = excluded.seq; END;
CREATE TRIGGER IF NOT EXISTS ha_log_health_rekey AFTER UPDATE ON ha_health
WHEN old.target IS NOT new.target OR old.monitor IS NOT new.monitor
BEGIN INSERT INTO ha_log (kind, k1, k2, seq)
  VALUES ('health', old.target, old.monitor, (SELECT ifnull(max(seq), 0) + 1 FROM ha_log))
  ON CONFLICT (kind, k1, k2, k3) DO UPDATE SET seq = excluded.seq; END;
CREATE TRIGGER IF NOT EXISTS ha_log_health_delete AFTER DELETE ON ha_health
BEGIN INSERT INTO ha_log (kind, k1, k2, seq)
  VALUES ('health', old.target, old.monitor, (SELECT ifnull(max(seq), 0) + 1 FROM ha_log))
  ON CONFLICT (kind, k1, k2, k3) DO UPDATE SET seq = excluded.seq; END;
CREATE TRIGGER IF NOT EXISTS ha_log_load_insert AFTER INSERT ON ha_load
BEGIN INSERT INTO ha_log (kind, k1, seq)
  VALUES ('load', new.target, (SELECT ifnull(max(seq), 0) + 1 FROM ha_log))
  ON CONFLICT (kind, k1, k2, k3) DO UPDATE SET seq = excluded.seq; END;
CREATE TRIGGER IF NOT EXISTS ha_log_load_update AFTER UPDATE ON ha_load
BEGIN INSERT INTO ha_log (kind, k1, seq)
  VALUES ('load', new.target, (SELECT ifnull(max(seq), 0) + 1 FROM ha_log))
  ON CONFLICT (kind, k1, k2, k3) DO UPDATE SET seq = excluded.seq; END;
CREATE TRIGGER IF NOT EXISTS ha_log_load_rekey AFTER UPDATE ON ha_load
WHEN old.target IS NOT new.target
BEGIN INSERT INTO ha_log (kind, k1, seq)
  VALUES ('load', old.target, (SELECT ifnull(max(seq), 0) + 1 FROM ha_log))
  ON CONFLICT (kind, k1, k2, k3) DO UPDATE SET seq = excluded.seq; END;
CREATE TRIGGER IF NOT EXISTS ha_log_load_delete AFTER DELETE ON ha_load
BEGIN INSERT INTO ha_log (kind, k1, seq)
  VALUES ('load', old.target, (SELECT ifnull(max(seq), 0) + 1 FROM ha_log))
  ON CONFLICT (kind, k1, k2, k3) DO UPDATE SET seq = excluded.seq; END;
CREATE TRIGGER IF NOT EXISTS ha_log_drain_insert AFTER INSERT ON ha_drain
BEGIN INSERT INTO ha_log (kind, k1, seq)
  VALUES ('drain', new.target, (SELECT ifnull(max(seq), 0) + 1 FROM ha_log))
  ON CONFLICT (kind, k1, k2, k3) DO UPDATE SET seq = excluded.seq; END;
CREATE TRIGGER IF NOT EXISTS ha_log_drain_update AFTER UPDATE ON ha_drain
BEGIN INSERT INTO ha_log (kind, k1, seq)
  VALUES ('drain', new.target, (SELECT ifnull(max(seq), 0) + 1 FROM ha_log))
  ON CONFLICT (kind, k1, k2, k3) DO UPDATE SET seq = excluded.seq; END;
CREATE TRIGGER IF NOT EXISTS ha_log_drain_rekey AFTER UPDATE ON ha_drain
WHEN old.target IS NOT new.target
BEGIN INSERT INTO ha_log (kind, k1, seq)
  VALUES ('drain', old.target, (SELECT ifnull(max(seq), 0) + 1 FROM ha_log))
  ON CONFLICT (kind, k1, k2, k3) DO UPDATE SET seq = excluded.seq; END;
CREATE TRIGGER IF NOT EXISTS ha_log_drain_delete AFTER DELETE ON ha_drain
BEGIN INSERT INTO ha_log (kind, k1, seq)
  VALUES ('drain', old.target, (SELECT ifnull(max(seq), 0) + 1 FROM ha_log))
  ON CONFLICT (kind, k1, k2, k3) DO UPDATE SET seq = excluded.seq; END;
CREATE TRIGGER IF NOT EXISTS ha_log_drain_generation_insert AFTER INSERT ON ha_drain_generation
BEGIN INSERT INTO ha_log (kind, k1, seq)
  VALUES ('drain', new.target, (SELECT ifnull(max(seq), 0) + 1 FROM ha_log))
  ON CONFLICT (kind, k1, k2, k3) DO UPDATE SET seq = excluded.seq; END;
CREATE TRIGGER IF NOT EXISTS ha_log_drain_generation_update AFTER UPDATE ON ha_drain_generation
BEGIN INSERT INTO ha_log (kind, k1, seq)
  VALUES ('drain', new.target, (SELECT ifnull(max(seq), 0) + 1 FROM ha_log))
  ON CONFLICT (kind, k1, k2, k3) DO UPDATE SET seq = excluded.seq; END;
CREATE TRIGGER IF NOT EXISTS ha_log_service_insert AFTER INSERT ON ha_service_health
BEGIN INSERT INTO ha_log (kind, k1, k2, k3, seq)
  VALUES ('service', new.target, new.transport || '/' || new.port, new.monitor,
          (SELECT ifnull(max(seq), 0) + 1 FROM ha_log))
  ON CONFLICT (kind, k1, k2, k3) DO UPDATE SET seq = excluded.seq; END;
CREATE TRIGGER IF NOT EXISTS ha_log_service_update AFTER UPDATE ON ha_service_health
BEGIN INSERT INTO ha_log (kind, k1, k2, k3, seq)
  VALUES ('service', new.target, new.transport || '/' || new.port, new.monitor,
          (SELECT ifnull(max(seq), 0) + 1 FROM ha_log))
  ON CONFLICT (kind, k1, k2, k3) DO UPDATE SET seq = excluded.seq; END;
CREATE TRIGGER IF NOT EXISTS ha_log_service_rekey AFTER UPDATE ON ha_service_health
WHEN old.target IS NOT new.target OR old.transport IS NOT new.transport
  OR old.port IS NOT new.port OR old.monitor IS NOT new.monitor
BEGIN INSERT INTO ha_log (kind, k1, k2, k3, seq)
  VALUES ('service', old.target, old.transport || '/' || old.port, old.monitor,
          (SELECT ifnull(max(seq), 0) + 1 FROM ha_log))
  ON CONFLICT (kind, k1, k2, k3) DO UPDATE SET seq = excluded.seq; END;
CREATE TRIGGER IF NOT EXISTS ha_log_service_delete AFTER DELETE ON ha_service_health
BEGIN INSERT INTO ha_log (kind, k1, k2, k3, seq)
  VALUES ('service', old.target, old.transport || '/' || old.port, old.monitor,
          (SELECT ifnull(max(seq), 0) + 1 FROM ha_log))
  ON CONFLICT (kind, k1, k2, k3) DO UPDATE SET seq = excluded.seq; END;
