-- The tail's partial index (ns, name, ts) WHERE rolled = 0 holds exactly
-- the unrolled events, so UpdateAnalytics finds them through it; the
-- separate unrolled-sequence index only cost every event one more insert.
DROP INDEX analytics_events_unrolled;
