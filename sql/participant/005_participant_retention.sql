-- Retention: barrier rows, branch rows and what they prove, pruned safely. Apply by hand with:
--   psql -v ON_ERROR_STOP=1 -d DB -f sql/participant/005_participant_retention.sql
--
-- A branch (gid, branch_id) may go once it is final here (its row confirm, cancel or compensated, or no row: a null
-- compensation or a rolled-back XA branch), every row of it is older than the horizon, and its first phase ended
-- (not_after) before the horizon too. No late or replayed request can then be applied:
-- - a first phase (try, reserve, prepare) that carries not_after is refused once that time has passed (DX008);
-- - one without it is refused when its gid is at or below pruned_gid_watermark, the highest gid pruned that a
--   coordinator sent (DX009): coordinator ids rise with the time their transactions begin (blocks of ids taken in
--   order, each used for at most 10 s), so such a gid's first phase ended long before the horizon;
-- - a second phase of a pruned branch finds no row: at or below the watermark it is answered as the duplicate it is
--   (the branch was final, and a commit can only follow a try that stood, an undo only a decision to abort).
-- The quantities of pruned committed rows are added to products.committed_pruned, so that
--   initial_stock - committed_pruned - (committed and held quantities of the rows kept) = stock
-- still holds for `dtx verify`.

ALTER TABLE products ADD COLUMN IF NOT EXISTS committed_pruned bigint NOT NULL DEFAULT 0;

-- Index-driven pruning (oldest first, a bounded number per statement) and the oldest row's age for the metrics.
CREATE INDEX IF NOT EXISTS barrier_created_idx ON barrier (created_at);
CREATE INDEX IF NOT EXISTS transactions_created_idx ON transactions (created_at);

-- Prunes up to p_limit branches older than the horizon; with p_dry_run counts what it would prune and changes
-- nothing. One statement: the deletes, the watermark and the stock arithmetic commit together.
CREATE OR REPLACE FUNCTION dtx_prune(p_horizon_seconds double precision, p_limit bigint, p_dry_run boolean)
RETURNS TABLE (branches bigint, barrier_rows bigint, transaction_rows bigint, watermark bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v_cutoff timestamptz := now() - make_interval(secs => p_horizon_seconds);
BEGIN
    RETURN QUERY
    WITH candidates AS (
        (SELECT b.gid, b.branch_id FROM barrier b WHERE b.created_at < v_cutoff ORDER BY b.created_at LIMIT p_limit)
        UNION
        (SELECT t.worker_event_id, t.product_id FROM transactions t
         WHERE t.created_at < v_cutoff AND t.status IN ('confirm', 'cancel', 'compensated') ORDER BY t.created_at LIMIT p_limit)
    ), prunable AS (
        SELECT c.gid, c.branch_id FROM candidates c
        WHERE NOT EXISTS (
                SELECT 1 FROM barrier b WHERE b.gid = c.gid AND b.branch_id = c.branch_id
                  AND (b.created_at >= v_cutoff OR b.not_after >= v_cutoff))
          AND NOT EXISTS (
                SELECT 1 FROM transactions t WHERE t.worker_event_id = c.gid AND t.product_id = c.branch_id
                  AND (t.status IN ('try', 'confirm_pending') OR t.updated_at >= v_cutoff))
        LIMIT p_limit
    ), gone_barrier AS (
        DELETE FROM barrier b USING prunable p
        WHERE NOT p_dry_run AND b.gid = p.gid AND b.branch_id = p.branch_id
        RETURNING b.gid, b.not_after
    ), gone_rows AS (
        DELETE FROM transactions t USING prunable p
        WHERE NOT p_dry_run AND t.worker_event_id = p.gid AND t.product_id = p.branch_id
        RETURNING t.product_id, t.quantity, t.status
    ), counted AS (
        UPDATE products pr SET committed_pruned = pr.committed_pruned + s.quantity
        FROM (SELECT g.product_id, sum(g.quantity) AS quantity FROM gone_rows g WHERE g.status = 'confirm' GROUP BY g.product_id) s
        WHERE pr.id = s.product_id
        RETURNING 1
    ), marked AS (
        UPDATE retention_state r
        SET pruned_gid_watermark = greatest(r.pruned_gid_watermark, (SELECT max(g.gid) FROM gone_barrier g WHERE g.not_after IS NOT NULL))
        WHERE EXISTS (SELECT 1 FROM gone_barrier g WHERE g.not_after IS NOT NULL)
        RETURNING r.pruned_gid_watermark
    )
    SELECT (SELECT count(*) FROM prunable),
           (SELECT count(*) FROM barrier b JOIN prunable p ON b.gid = p.gid AND b.branch_id = p.branch_id),
           (SELECT count(*) FROM transactions t JOIN prunable p ON t.worker_event_id = p.gid AND t.product_id = p.branch_id),
           coalesce((SELECT max(m.pruned_gid_watermark) FROM marked m), (SELECT r.pruned_gid_watermark FROM retention_state r));
END;
$$;

-- The age in seconds of each table's oldest row (0 when empty), for the metrics.
CREATE OR REPLACE FUNCTION dtx_oldest_rows() RETURNS TABLE (table_name text, age_seconds double precision) LANGUAGE sql STABLE AS $$
    SELECT 'barrier', coalesce(extract(epoch FROM now() - (SELECT min(created_at) FROM barrier)), 0)::double precision
    UNION ALL
    SELECT 'transactions', coalesce(extract(epoch FROM now() - (SELECT min(created_at) FROM transactions)), 0)::double precision;
$$;
