-- Zones, for the apex check and AXFR (pipe, read-only).
SELECT id, CAST(name AS TEXT) FROM domains WHERE name IS NOT NULL
