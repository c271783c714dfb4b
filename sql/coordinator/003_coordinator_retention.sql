-- Retention of the coordinator's log. Apply by hand with:
--   psql -v ON_ERROR_STOP=1 -d DB -f sql/coordinator/003_coordinator_retention.sql
--
-- Only rows that are no longer open go, once older than the horizon: a participant asks only about branches still
-- open at its end, and a transaction is final here only after every branch answered its second phase, which
-- participants make durable before they answer; so nobody asks about a pruned row. Should one be asked about anyway,
-- ids at or below pruned_through are answered "not found" (the outcome is no longer known), never "never began"
-- (which a participant takes as an abort).

ALTER TABLE worker_event_ids ADD COLUMN IF NOT EXISTS pruned_through bigint NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS worker_events_created_idx ON worker_events (created_at);

-- Prunes up to p_limit finished rows older than the horizon; with p_dry_run counts them and changes nothing.
CREATE OR REPLACE FUNCTION dtx_prune(p_horizon_seconds double precision, p_limit bigint, p_dry_run boolean)
RETURNS TABLE (worker_event_rows bigint, pruned_through bigint) LANGUAGE plpgsql AS $$
DECLARE
    v_cutoff timestamptz := now() - make_interval(secs => p_horizon_seconds);
BEGIN
    RETURN QUERY
    WITH prunable AS (
        SELECT w.id FROM worker_events w
        WHERE w.created_at < v_cutoff AND NOT w.open AND w.updated_at < v_cutoff
        ORDER BY w.created_at LIMIT p_limit
    ), gone AS (
        DELETE FROM worker_events w USING prunable p WHERE NOT p_dry_run AND w.id = p.id RETURNING w.id
    ), marked AS (
        UPDATE worker_event_ids i SET pruned_through = greatest(i.pruned_through, (SELECT max(g.id) FROM gone g))
        WHERE EXISTS (SELECT 1 FROM gone) RETURNING i.pruned_through
    )
    SELECT (SELECT count(*) FROM prunable),
           coalesce((SELECT max(m.pruned_through) FROM marked m), (SELECT i.pruned_through FROM worker_event_ids i));
END;
$$;

-- The age in seconds of the log's oldest row (0 when empty), for the metrics.
CREATE OR REPLACE FUNCTION dtx_oldest_rows() RETURNS TABLE (table_name text, age_seconds double precision) LANGUAGE sql STABLE AS $$
    SELECT 'worker_events', coalesce(extract(epoch FROM now() - (SELECT min(created_at) FROM worker_events)), 0)::double precision;
$$;
