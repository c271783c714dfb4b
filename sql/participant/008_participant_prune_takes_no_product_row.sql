-- Retention never waits for a product row (replaces dtx_prune of 005; 005 stays as applied). Apply by hand with:
--   psql -v ON_ERROR_STOP=1 -d DB -f sql/participant/008_participant_prune_takes_no_product_row.sql
--
-- 005 added each pruned committed branch's quantity to products.committed_pruned, which takes the product's row lock,
-- and waited for it with no lock_timeout. A prepared XA branch holds its product's row until COMMIT PREPARED (an
-- in-doubt one until the reconciler resolves it, minutes), and while the prune waited it held the rows of the products
-- it had already counted, so every try, reserve, prepare and cancel on those answered 503 at its own lock_timeout
-- until the XA branch was resolved. Now the quantities go to pruned_quantities, a table only retention writes (one
-- row per product per batch), so the prune takes no product row at all. `dtx verify`'s stock arithmetic reads
--   initial_stock - committed_pruned - sum(pruned_quantities) - (committed and held quantities of the rows kept) = stock.
-- What may be pruned, and why nothing late can be applied afterwards, is unchanged (see 005).

CREATE TABLE IF NOT EXISTS pruned_quantities (
    product_id bigint      NOT NULL REFERENCES products (id),
    quantity   bigint      NOT NULL,
    pruned_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS pruned_quantities_product_idx ON pruned_quantities (product_id);

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
        INSERT INTO pruned_quantities (product_id, quantity)
        SELECT g.product_id, sum(g.quantity) FROM gone_rows g WHERE g.status = 'confirm' GROUP BY g.product_id
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
