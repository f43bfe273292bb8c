-- Things with no content, in a namespace that indexes no data fields, have
-- nothing to search: keep them out of things_fts, so the writes of the
-- services' own state (mostly data only) pay no full-text upkeep.
DROP TRIGGER things_fts_insert;
DROP TRIGGER things_fts_update;

CREATE TRIGGER things_fts_insert AFTER INSERT ON things
WHEN new.content <> '' OR EXISTS (SELECT 1 FROM search_config c WHERE c.ns = new.ns AND c.fields <> '[]') BEGIN
  INSERT INTO things_fts (rowid, content, fields, tags) VALUES (new.rowid, new.content,
    COALESCE((SELECT group_concat(json_extract(new.data, '$.' || f.value), ' ') FROM search_config c, json_each(c.fields) f WHERE c.ns = new.ns), ''),
    'n' || hex(new.ns) || 'q t' || hex(new.type) || 'q');
END;

CREATE TRIGGER things_fts_update AFTER UPDATE OF content, data, type ON things
WHEN old.content IS NOT new.content OR old.data IS NOT new.data OR old.type IS NOT new.type BEGIN
  DELETE FROM things_fts WHERE rowid = old.rowid;
  INSERT INTO things_fts (rowid, content, fields, tags)
  SELECT new.rowid, new.content,
    COALESCE((SELECT group_concat(json_extract(new.data, '$.' || f.value), ' ') FROM search_config c, json_each(c.fields) f WHERE c.ns = new.ns), ''),
    'n' || hex(new.ns) || 'q t' || hex(new.type) || 'q'
  WHERE new.content <> '' OR EXISTS (SELECT 1 FROM search_config c WHERE c.ns = new.ns AND c.fields <> '[]');
END;

DELETE FROM things_fts WHERE rowid IN (SELECT rowid FROM things WHERE content = '')
  AND rowid NOT IN (SELECT t.rowid FROM things t JOIN search_config c ON c.ns = t.ns WHERE c.fields <> '[]');
