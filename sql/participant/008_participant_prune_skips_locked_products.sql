-- Retention no longer waits for a product row (replaces dtx_prune of 005; 005 stays as applied). Apply by hand with:
--   psql -v ON_ERROR_STOP=1 -d DB -f sql/participant/008_participant_prune_skips_locked_products.sql
--
-- Pruning a committed branch adds its quantity to products.committed_pruned, which takes the product's row lock.
-- 005 waited for it with no lock_timeout: a prepared XA branch holds its product's row until COMMIT PREPARED (an
-- in-doubt one until the reconciler resolves it, minutes), and while the prune waited it held the rows of the
-- products it had already counted, so every try, reserve, prepare and cancel on those answered 503 at its own
-- lock_timeout until the XA branch was resolved. Now the products are locked without waiting (FOR UPDATE SKIP
-- LOCKED, in id order) before anything is deleted, and the branches of a product someone else holds are left for
-- the next pass. What may be pruned, and why nothing late can be applied afterwards, is unchanged (see 005).

CREATE OR REPLACE FUNCTION dtx_prune(p_horizon_seconds double precision, p_limit bigint, p_dry_run boolean)
RETURNS TABLE (branches bigint, barrier_rows bigint, transaction_rows bigint, watermark bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v_cutoff timestamptz := now() - make_interval(secs => p_horizon_seconds);
    v_gids bigint[];
    v_branches bigint[];
    v_busy bigint[] := '{}';
BEGIN
    -- a safety net only: nothing below waits for a lock another branch operation holds for long
    PERFORM set_config('lock_timeout', '5s', true);
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
    )
    SELECT coalesce(array_agg(p.gid), '{}'), coalesce(array_agg(p.branch_id), '{}') INTO v_gids, v_branches FROM prunable p;

    IF NOT p_dry_run THEN
        -- the products whose committed quantities this batch adds up (a branch's id is its product's id)
        WITH wanted AS (
            SELECT DISTINCT t.product_id FROM transactions t
            JOIN unnest(v_gids, v_branches) AS p(gid, branch_id) ON t.worker_event_id = p.gid AND t.product_id = p.branch_id
            WHERE t.status = 'confirm'
        ), got AS (
            SELECT pr.id FROM products pr WHERE pr.id IN (SELECT w.product_id FROM wanted w) ORDER BY pr.id FOR UPDATE SKIP LOCKED
        )
        SELECT coalesce(array_agg(w.product_id), '{}') INTO v_busy FROM wanted w WHERE w.product_id NOT IN (SELECT g.id FROM got g);
    END IF;

    RETURN QUERY
    WITH prunable AS (
        SELECT p.gid, p.branch_id FROM unnest(v_gids, v_branches) AS p(gid, branch_id) WHERE p.branch_id <> ALL (v_busy)
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
