-- Things and relationships. Times are Unix microseconds.
CREATE TABLE things (
  rowid      INTEGER PRIMARY KEY,
  ns         TEXT NOT NULL,
  id         TEXT NOT NULL,
  type       TEXT NOT NULL,
  data       TEXT NOT NULL,
  content    TEXT NOT NULL DEFAULT '',
  embedding  BLOB,
  version    INTEGER NOT NULL,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  expires_at INTEGER,
  UNIQUE (ns, id)
);
CREATE INDEX things_ns_created ON things (ns, created_at, id);
CREATE INDEX things_ns_type_created ON things (ns, type, created_at, id);
CREATE INDEX things_ns_updated ON things (ns, updated_at, id);
CREATE INDEX things_ns_type_updated ON things (ns, type, updated_at, id);
CREATE INDEX things_expires ON things (expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE relationships (
  ns         TEXT NOT NULL,
  from_id    TEXT NOT NULL,
  type       TEXT NOT NULL,
  to_id      TEXT NOT NULL,
  data       TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  PRIMARY KEY (ns, from_id, type, to_id)
) WITHOUT ROWID;
CREATE INDEX relationships_in ON relationships (ns, to_id, type, from_id);
