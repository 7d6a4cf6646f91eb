-- The enterprise SRV example: _sip._udp.example.com over three data centres.
-- Tier 10: sip1 (weight 50), sip2 and sip3 (25 each), site A.
-- Tier 20: sip4 and sip5 (20 each), sip6 (10), site B.
-- Tier 30: sip7 and sip8 (10 each), site C.
-- Addresses are from the documentation ranges (RFC 5737, RFC 3849).
-- Safe to run again: it replaces its own zone and rows.

BEGIN;

DELETE FROM records WHERE domain_id IN (SELECT id FROM domains WHERE name = 'example.com');
INSERT OR IGNORE INTO domains (name, type) VALUES ('example.com', 'NATIVE');

INSERT INTO records (domain_id, name, type, content, ttl, prio)
SELECT d.id, r.name, r.type, r.content, r.ttl, r.prio
FROM (SELECT id FROM domains WHERE name = 'example.com') AS d,
(
  SELECT 'example.com' AS name, 'SOA' AS type,
         'ns1.example.com. hostmaster.example.com. 2026112201 10800 3600 604800 300' AS content,
         3600 AS ttl, NULL AS prio
  UNION ALL SELECT 'example.com', 'NS', 'ns1.example.com.', 3600, NULL
  UNION ALL SELECT 'example.com', 'NS', 'ns2.example.com.', 3600, NULL
  UNION ALL SELECT 'example.com', 'MX', 'mail.example.com.', 3600, 10
  UNION ALL SELECT 'example.com', 'TXT', '"v=spf1 -all"', 3600, NULL
  UNION ALL SELECT 'ns1.example.com', 'A', '192.0.2.1', 3600, NULL
  UNION ALL SELECT 'ns2.example.com', 'A', '198.51.100.1', 3600, NULL
  UNION ALL SELECT 'mail.example.com', 'A', '192.0.2.25', 3600, NULL
  UNION ALL SELECT 'www.example.com', 'A', '192.0.2.80', 3600, NULL
  UNION ALL SELECT 'www.example.com', 'AAAA', '2001:db8::80', 3600, NULL
  UNION ALL SELECT '_sip._udp.example.com', 'SRV', '50 5060 sip1.example.com.', 300, 10
  UNION ALL SELECT '_sip._udp.example.com', 'SRV', '25 5060 sip2.example.com.', 300, 10
  UNION ALL SELECT '_sip._udp.example.com', 'SRV', '25 5060 sip3.example.com.', 300, 10
  UNION ALL SELECT '_sip._udp.example.com', 'SRV', '20 5060 sip4.example.com.', 300, 20
  UNION ALL SELECT '_sip._udp.example.com', 'SRV', '20 5060 sip5.example.com.', 300, 20
  UNION ALL SELECT '_sip._udp.example.com', 'SRV', '10 5060 sip6.example.com.', 300, 20
  UNION ALL SELECT '_sip._udp.example.com', 'SRV', '10 5060 sip7.example.com.', 300, 30
  UNION ALL SELECT '_sip._udp.example.com', 'SRV', '10 5060 sip8.example.com.', 300, 30
  UNION ALL SELECT 'sip1.example.com', 'A', '192.0.2.11', 300, NULL
  UNION ALL SELECT 'sip2.example.com', 'A', '192.0.2.12', 300, NULL
  UNION ALL SELECT 'sip3.example.com', 'A', '192.0.2.13', 300, NULL
  UNION ALL SELECT 'sip4.example.com', 'A', '198.51.100.14', 300, NULL
  UNION ALL SELECT 'sip5.example.com', 'A', '198.51.100.15', 300, NULL
  UNION ALL SELECT 'sip6.example.com', 'A', '198.51.100.16', 300, NULL
  UNION ALL SELECT 'sip7.example.com', 'A', '203.0.113.17', 300, NULL
  UNION ALL SELECT 'sip8.example.com', 'A', '203.0.113.18', 300, NULL
  -- Two addresses for one name: least-latency and least-load rank A RRsets too.
  UNION ALL SELECT 'sip.example.com', 'A', '192.0.2.11', 300, NULL
  UNION ALL SELECT 'sip.example.com', 'A', '198.51.100.14', 300, NULL
) AS r;

-- Client networks: the offices that call in. Latency samples are kept per
-- network; '*' samples (measured from the monitor host) fill the gaps.
INSERT OR REPLACE INTO ha_networks (cidr, name) VALUES
  ('192.0.2.0/24', 'site-a'),
  ('198.51.100.0/24', 'site-b'),
  ('203.0.113.0/24', 'site-c');

-- sip1-3 are FreeSWITCH boxes (Event Socket on 8021), sip4-6 Kamailio
-- (JSON-RPC), sip7-8 only health-checked. Capacity of the FreeSWITCH boxes
-- comes from FreeSWITCH itself (max-sessions). The Event Socket password is
-- read from a file only the monitor's user reads (load_secret_file), never
-- from this database, which pdns's user reads (docs/operations.md).
INSERT OR REPLACE INTO ha_targets
  (name, probe, probe_address, max_sessions, load_source, load_address, load_secret_file) VALUES
  ('sip1.example.com', 'sip-udp', NULL, NULL, 'freeswitch', '192.0.2.11:8021', '/etc/pdns-ha/esl-password'),
  ('sip2.example.com', 'sip-udp', NULL, NULL, 'freeswitch', '192.0.2.12:8021', '/etc/pdns-ha/esl-password'),
  ('sip3.example.com', 'sip-udp', NULL, NULL, 'freeswitch', '192.0.2.13:8021', '/etc/pdns-ha/esl-password'),
  ('sip4.example.com', 'sip-udp', NULL, 1000, 'kamailio', 'http://198.51.100.14:5071/RPC', NULL),
  ('sip5.example.com', 'sip-udp', NULL, 1000, 'kamailio', 'http://198.51.100.15:5071/RPC', NULL),
  ('sip6.example.com', 'sip-udp', NULL, 500, 'kamailio', 'http://198.51.100.16:5071/RPC', NULL),
  ('sip7.example.com', 'sip-udp', NULL, NULL, 'none', NULL, NULL),
  ('sip8.example.com', 'sip-udp', NULL, NULL, 'none', NULL, NULL),
  ('192.0.2.11', 'sip-udp', NULL, NULL, 'none', NULL, NULL),
  ('198.51.100.14', 'sip-udp', NULL, NULL, 'none', NULL, NULL);

COMMIT;
