-- Retention's final-branch candidates are filtered before their LIMIT (replaces dtx_prune of 010; 010 stays as
-- applied). Apply by hand with:
--   psql -v ON_ERROR_STOP=1 -d DB -f sql/participant/011_participant_prune_final_rows_filtered_first.sql
--
-- 010 filtered the barrier-only candidates before the LIMIT but took the final branches (confirm, cancel,
-- compensated) oldest first and only then dropped those that must stay: a row updated within the horizon, or one
-- whose barrier row carries a first-phase end (not_after) still to come. p_limit such rows at the head (a caller's
-- not_after years ahead, say) filled every batch: each pass pruned nothing and ended, and nothing behind them was
-- ever pruned. The same conditions now apply before the LIMIT; what is pruned, and the watermark, are unchanged.
-- And each pass folds pruned_quantities to one row per product (each batch added one per product it counted, and
-- nothing removed them: the table grew with the traffic). The sums, which `dtx verify` reads, are unchanged.

CREATE OR REPLACE FUNCTION dtx_prune(p_horizon_seconds double precision, p_limit bigint, p_dry_run boolean)
RETURNS TABLE (branches bigint, barrier_rows bigint, transaction_rows bigint, watermark bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v_cutoff timestamptz := now() - make_interval(secs => p_horizon_seconds);
BEGIN
    -- a safety net only: nothing below waits for a lock a branch operation holds for long
    PERFORM set_config('lock_timeout', '5s', true);
    RETURN QUERY
    WITH candidates AS (
        -- branches with barrier rows only (null compensations, rolled-back XA branches), filtered before the LIMIT:
        -- branches with a row come through the second list once final, and old open ones must not fill this one.
        -- The second list, final branches with a row, is filtered before its LIMIT too (new in 011)
        (SELECT b.gid, b.branch_id FROM barrier b
         WHERE b.created_at < v_cutoff AND (b.not_after IS NULL OR b.not_after < v_cutoff)
           AND NOT EXISTS (SELECT 1 FROM transactions t WHERE t.worker_event_id = b.gid AND t.product_id = b.branch_id)
         ORDER BY b.created_at LIMIT p_limit)
        UNION
        (SELECT t.worker_event_id, t.product_id FROM transactions t
         WHERE t.created_at < v_cutoff AND t.updated_at < v_cutoff AND t.status IN ('confirm', 'cancel', 'compensated')
           AND NOT EXISTS (
                SELECT 1 FROM barrier b WHERE b.gid = t.worker_event_id AND b.branch_id = t.product_id
                  AND (b.created_at >= v_cutoff OR b.not_after >= v_cutoff))
         ORDER BY t.created_at LIMIT p_limit)
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
        RETURNING t.worker_event_id, t.product_id, t.quantity, t.status, t.coordinator_url
    ), coordinated AS (
        -- gids a coordinator sent: a branch row it made (its URL noted), with a deadline in the barrier
        SELECT r.worker_event_id AS gid FROM gone_rows r
        WHERE r.coordinator_url IS NOT NULL AND EXISTS (SELECT 1 FROM gone_barrier g WHERE g.gid = r.worker_event_id AND g.not_after IS NOT NULL)
    ), counted AS (
        INSERT INTO pruned_quantities (product_id, quantity)
        SELECT g.product_id, sum(g.quantity) FROM gone_rows g WHERE g.status = 'confirm' GROUP BY g.product_id
        RETURNING 1
    ), marked AS (
        UPDATE retention_state r
        SET pruned_gid_watermark = greatest(r.pruned_gid_watermark, (SELECT max(c.gid) FROM coordinated c))
        WHERE EXISTS (SELECT 1 FROM coordinated)
        RETURNING r.pruned_gid_watermark
    )
    SELECT (SELECT count(*) FROM prunable),
           (SELECT count(*) FROM barrier b JOIN prunable p ON b.gid = p.gid AND b.branch_id = p.branch_id),
           (SELECT count(*) FROM transactions t JOIN prunable p ON t.worker_event_id = p.gid AND t.product_id = p.branch_id),
           coalesce((SELECT max(m.pruned_gid_watermark) FROM marked m), (SELECT r.pruned_gid_watermark FROM retention_state r));
    -- one row per product in pruned_quantities: each batch adds one per product it counted, and nothing else removed
    -- them, so the table grew with the traffic retention was there to drop (new in 011)
    IF NOT p_dry_run THEN
        WITH gone AS (
            DELETE FROM pruned_quantities q
            WHERE q.product_id IN (SELECT p.product_id FROM pruned_quantities p GROUP BY p.product_id HAVING count(*) > 1)
            RETURNING q.product_id, q.quantity
        )
        INSERT INTO pruned_quantities (product_id, quantity)
        SELECT g.product_id, sum(g.quantity) FROM gone g GROUP BY g.product_id;
    END IF;
END;
$$;
