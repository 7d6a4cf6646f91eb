-- Every servable record (pipe, read-only). Rows with a NULL type are pdns's
-- empty non-terminals, which the pipe ABI of 4.7 cannot express; disabled
-- rows are never served, as in gsqlite3 (`disabled=0`).
SELECT CAST(name AS TEXT), CAST(type AS TEXT), CAST(content AS TEXT), ttl, prio, domain_id,
       COALESCE(auth, 1) != 0
FROM records
WHERE disabled = 0 AND type IS NOT NULL AND type != '' AND name IS NOT NULL
  AND domain_id IS NOT NULL
ORDER BY id
