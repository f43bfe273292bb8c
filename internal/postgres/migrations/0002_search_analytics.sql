-- Search and analytics (issue 4). Times are Unix microseconds.

-- search_config holds a namespace's search settings: the embedding
-- dimension (fixed by the first embedding written), whether things are
-- embedded on write, and the data fields indexed for full text (a JSON
-- array of dotted paths).
CREATE TABLE search_config (
  ns             text COLLATE "C" PRIMARY KEY,
  dims           integer,
  embed_on_write boolean NOT NULL DEFAULT false,
  fields         json NOT NULL DEFAULT '[]'
);

-- search is the thing's content (weight A) and configured data fields
-- (weight B) as English lexemes, kept by a trigger; setting it to NULL
-- makes the trigger recompute it (after a change of fields).
ALTER TABLE things ADD COLUMN search tsvector;

CREATE FUNCTION things_search() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'UPDATE' AND NEW.search IS NOT NULL AND NEW.content IS NOT DISTINCT FROM OLD.content
     AND NEW.data::text IS NOT DISTINCT FROM OLD.data::text THEN
    RETURN NEW;
  END IF;
  NEW.search := setweight(to_tsvector('english', NEW.content), 'A') ||
    setweight(to_tsvector('english', COALESCE((SELECT string_agg(NEW.data #>> string_to_array(f, '.'), ' ')
      FROM search_config c, json_array_elements_text(c.fields) f WHERE c.ns = NEW.ns), '')), 'B');
  RETURN NEW;
END $$;
CREATE TRIGGER things_search BEFORE INSERT OR UPDATE ON things FOR EACH ROW EXECUTE FUNCTION things_search();
UPDATE things SET search = NULL;
CREATE INDEX things_search ON things USING gin (search);

-- things_notify tells every db replica (LISTEN dotdo_things_<schema>) that
-- a thing with an embedding changed, so each keeps its vector index
-- current. The payload is "u <ns> <id>" or "d <ns> <id>".
CREATE FUNCTION things_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'DELETE' THEN
    IF OLD.embedding IS NOT NULL THEN
      PERFORM pg_notify('dotdo_things_' || current_schema(), 'd ' || OLD.ns || ' ' || OLD.id);
    END IF;
    RETURN OLD;
  END IF;
  IF NEW.embedding IS NOT NULL OR (TG_OP = 'UPDATE' AND OLD.embedding IS NOT NULL) THEN
    PERFORM pg_notify('dotdo_things_' || current_schema(), 'u ' || NEW.ns || ' ' || NEW.id);
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER things_notify AFTER INSERT OR UPDATE OR DELETE ON things FOR EACH ROW EXECUTE FUNCTION things_notify();

-- Analytics: raw events, and hourly ('h') and daily ('d') counts by event
-- name, in total (prop '') and by the one property analytics_config names
-- for the event. rolled marks events already counted in the rollups, so
-- refreshing is incremental and idempotent, and replicas refreshing at
-- once skip each other's rows.
CREATE TABLE analytics_events (
  seq    bigserial PRIMARY KEY,
  ns     text COLLATE "C" NOT NULL,
  name   text COLLATE "C" NOT NULL,
  ts     bigint NOT NULL,
  props  json NOT NULL,
  rolled boolean NOT NULL DEFAULT false
);
CREATE INDEX analytics_events_name_ts ON analytics_events (ns, name, ts);
CREATE INDEX analytics_events_tail ON analytics_events (ns, name, ts) WHERE NOT rolled;
CREATE INDEX analytics_events_unrolled ON analytics_events (seq) WHERE NOT rolled;

CREATE TABLE analytics_rollups (
  ns     text COLLATE "C" NOT NULL,
  name   text COLLATE "C" NOT NULL,
  gran   text NOT NULL,
  bucket bigint NOT NULL,
  prop   text COLLATE "C" NOT NULL,
  value  text COLLATE "C" NOT NULL,
  count  bigint NOT NULL,
  PRIMARY KEY (ns, name, gran, prop, bucket, value)
);

CREATE TABLE analytics_config (
  ns   text COLLATE "C" NOT NULL,
  name text COLLATE "C" NOT NULL,
  prop text COLLATE "C" NOT NULL,
  PRIMARY KEY (ns, name)
);
INSERT INTO analytics_config (ns, name, prop) VALUES ('_analytics', 'request', 'route');
