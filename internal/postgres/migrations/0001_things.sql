-- Things and relationships. Times are Unix microseconds. Text keys use the
-- "C" collation so that ordering and keyset pagination are byte-wise, as
-- on SQLite. data is json, not jsonb: the db service stores a canonical
-- encoding and json keeps it byte for byte, so both backends return the
-- same text (jsonb would reorder keys and respell numbers).
CREATE TABLE things (
  ns         text COLLATE "C" NOT NULL,
  id         text COLLATE "C" NOT NULL,
  type       text COLLATE "C" NOT NULL,
  data       json NOT NULL,
  content    text NOT NULL DEFAULT '',
  embedding  bytea,
  version    bigint NOT NULL,
  created_at bigint NOT NULL,
  updated_at bigint NOT NULL,
  expires_at bigint,
  PRIMARY KEY (ns, id)
);
CREATE INDEX things_ns_created ON things (ns, created_at, id);
CREATE INDEX things_ns_type_created ON things (ns, type, created_at, id);
CREATE INDEX things_ns_updated ON things (ns, updated_at, id);
CREATE INDEX things_ns_type_updated ON things (ns, type, updated_at, id);
CREATE INDEX things_expires ON things (expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE relationships (
  ns         text COLLATE "C" NOT NULL,
  from_id    text COLLATE "C" NOT NULL,
  type       text COLLATE "C" NOT NULL,
  to_id      text COLLATE "C" NOT NULL,
  data       json NOT NULL,
  created_at bigint NOT NULL,
  PRIMARY KEY (ns, from_id, type, to_id)
);
CREATE INDEX relationships_in ON relationships (ns, to_id, type, from_id);
