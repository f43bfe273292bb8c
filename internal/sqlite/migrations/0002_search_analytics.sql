-- Search and analytics (issue 4). Times are Unix microseconds.

-- search_config holds a namespace's search settings: the embedding
-- dimension (fixed by the first embedding written), whether things are
-- embedded on write, and the data fields indexed for full text (a JSON
-- array of dotted paths).
CREATE TABLE search_config (
  ns             TEXT PRIMARY KEY,
  dims           INTEGER,
  embed_on_write INTEGER NOT NULL DEFAULT 0,
  fields         TEXT NOT NULL DEFAULT '[]'
);

-- things_fts indexes a thing's content, its configured data fields and a
-- tags column of one token for its namespace and one for its type, so a
-- MATCH is restricted to a namespace (and type) inside the index. rowid is
-- things.rowid. Triggers keep it in step with every write.
CREATE VIRTUAL TABLE things_fts USING fts5(content, fields, tags, tokenize = 'porter unicode61 remove_diacritics 2');

CREATE TRIGGER things_fts_insert AFTER INSERT ON things BEGIN
  INSERT INTO things_fts (rowid, content, fields, tags) VALUES (new.rowid, new.content,
    COALESCE((SELECT group_concat(json_extract(new.data, '$.' || f.value), ' ') FROM search_config c, json_each(c.fields) f WHERE c.ns = new.ns), ''),
    'n' || hex(new.ns) || 'q t' || hex(new.type) || 'q');
END;

CREATE TRIGGER things_fts_delete AFTER DELETE ON things BEGIN
  DELETE FROM things_fts WHERE rowid = old.rowid;
END;

CREATE TRIGGER things_fts_update AFTER UPDATE OF content, data, type ON things
WHEN old.content IS NOT new.content OR old.data IS NOT new.data OR old.type IS NOT new.type BEGIN
  DELETE FROM things_fts WHERE rowid = old.rowid;
  INSERT INTO things_fts (rowid, content, fields, tags) VALUES (new.rowid, new.content,
    COALESCE((SELECT group_concat(json_extract(new.data, '$.' || f.value), ' ') FROM search_config c, json_each(c.fields) f WHERE c.ns = new.ns), ''),
    'n' || hex(new.ns) || 'q t' || hex(new.type) || 'q');
END;

INSERT INTO things_fts (rowid, content, fields, tags)
  SELECT rowid, content, '', 'n' || hex(ns) || 'q t' || hex(type) || 'q' FROM things;

-- Analytics: raw events, and hourly ('h') and daily ('d') counts by event
-- name, in total (prop '') and by the one property analytics_config names
-- for the event. rolled marks events already counted in the rollups, so
-- refreshing is incremental and idempotent.
CREATE TABLE analytics_events (
  seq    INTEGER PRIMARY KEY,
  ns     TEXT NOT NULL,
  name   TEXT NOT NULL,
  ts     INTEGER NOT NULL,
  props  TEXT NOT NULL,
  rolled INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX analytics_events_name_ts ON analytics_events (ns, name, ts);
CREATE INDEX analytics_events_tail ON analytics_events (ns, name, ts) WHERE rolled = 0;
CREATE INDEX analytics_events_unrolled ON analytics_events (seq) WHERE rolled = 0;

CREATE TABLE analytics_rollups (
  ns     TEXT NOT NULL,
  name   TEXT NOT NULL,
  gran   TEXT NOT NULL,
  bucket INTEGER NOT NULL,
  prop   TEXT NOT NULL,
  value  TEXT NOT NULL,
  count  INTEGER NOT NULL,
  PRIMARY KEY (ns, name, gran, prop, bucket, value)
) WITHOUT ROWID;

CREATE TABLE analytics_config (
  ns   TEXT NOT NULL,
  name TEXT NOT NULL,
  prop TEXT NOT NULL,
  PRIMARY KEY (ns, name)
) WITHOUT ROWID;
INSERT INTO analytics_config (ns, name, prop) VALUES ('_analytics', 'request', 'route');
