-- An XA commit or rollback of a branch of another mode is refused (branch_conflict) and writes nothing, as TCC's and
-- Saga's second phases have been since 010 (replaces dtx_xa_rollback_barrier of 009 and dtx_xa_commit_missing of 010;
-- both stay as applied). Apply by hand with:
--   psql -v ON_ERROR_STOP=1 -d DB -f sql/participant/012_participant_xa_second_phase_checks_mode.sql
--
-- Before, `/xa/rollback` naming a TCC branch still in try wrote prepare and rollback barrier rows and answered 200
-- null_compensation while the try kept its stock, and `/xa/commit` of a confirmed Saga branch answered 200 duplicate.
-- A prepared XA branch's own row is inside its prepared transaction, invisible here: only rows of other modes, which
-- are committed, are seen, so the check never refuses an XA branch.

CREATE OR REPLACE FUNCTION dtx_xa_rollback_barrier(
    p_gid bigint, p_branch bigint, p_rolled_back_now boolean, p_lock_timeout_ms integer, p_not_after timestamptz
) RETURNS TABLE (effect text, refusal text) LANGUAGE plpgsql AS $$
DECLARE
    v_origin_new boolean;
    v_op_new     boolean;
BEGIN
    PERFORM set_config('lock_timeout', p_lock_timeout_ms || 'ms', true);
    IF EXISTS (SELECT 1 FROM transactions t WHERE t.worker_event_id = p_gid AND t.product_id = p_branch AND t.mode <> 'xa') THEN
        RETURN QUERY SELECT 'refused'::text, 'branch_conflict'::text;
        RETURN;
    END IF;
    INSERT INTO barrier (gid, branch_id, op, not_after) VALUES (p_gid, p_branch, 'prepare', p_not_after) ON CONFLICT DO NOTHING;
    v_origin_new := FOUND;
    IF NOT v_origin_new AND EXISTS (SELECT 1 FROM transactions t WHERE t.worker_event_id = p_gid AND t.product_id = p_branch) THEN
        RETURN QUERY SELECT 'refused'::text, 'branch_confirmed'::text;
        RETURN;
    END IF;
    INSERT INTO barrier (gid, branch_id, op, not_after) VALUES (p_gid, p_branch, 'rollback', p_not_after) ON CONFLICT DO NOTHING;
    v_op_new := FOUND;
    RETURN QUERY SELECT CASE
        WHEN p_rolled_back_now THEN 'applied'
        WHEN NOT v_op_new THEN 'duplicate'
        WHEN v_origin_new THEN 'null_compensation'
        ELSE 'applied' END, NULL::text;
END;
$$;

-- XA commit whose COMMIT PREPARED found no such gid: a branch of another mode (refused), committed before
-- (duplicate), rolled back (refused, whatever the watermark), or never prepared. A branch pruned here with no rollback
-- left was committed if a commit comes for it.
CREATE OR REPLACE FUNCTION dtx_xa_commit_missing(p_gid bigint, p_branch bigint)
RETURNS TABLE (effect text, refusal text) LANGUAGE sql STABLE AS $$
    WITH row AS (SELECT t.mode, t.status FROM transactions t WHERE t.worker_event_id = p_gid AND t.product_id = p_branch)
    SELECT CASE
        WHEN EXISTS (SELECT 1 FROM row WHERE row.mode <> 'xa') THEN 'refused'
        WHEN EXISTS (SELECT 1 FROM row WHERE row.status = 'confirm') THEN 'duplicate'
        WHEN EXISTS (SELECT 1 FROM barrier b WHERE b.gid = p_gid AND b.branch_id = p_branch AND b.op = 'rollback') THEN 'refused'
        WHEN p_gid <= (SELECT r.pruned_gid_watermark FROM retention_state r) THEN 'duplicate'
        ELSE 'refused' END,
        CASE
        WHEN EXISTS (SELECT 1 FROM row WHERE row.mode <> 'xa') THEN 'branch_conflict'
        WHEN EXISTS (SELECT 1 FROM row WHERE row.status = 'confirm') THEN NULL
        WHEN EXISTS (SELECT 1 FROM barrier b WHERE b.gid = p_gid AND b.branch_id = p_branch AND b.op = 'rollback') THEN 'branch_cancelled'
        WHEN p_gid <= (SELECT r.pruned_gid_watermark FROM retention_state r) THEN NULL
        ELSE 'branch_not_tried' END;
$$;
