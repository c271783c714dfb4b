-- One function for every forward move of branch rows, and batched TCC's confirm + finalize with one write per item.
-- Apply by hand with:
--   psql -v ON_ERROR_STOP=1 -d DB -f sql/participant/007_participant_confirm_finalize_one_write.sql
--
-- dtx_confirm_finalize (006) ran dtx_advance('confirm') and then dtx_advance('finalize') over the items: two row locks,
-- two barrier inserts and two UPDATEs of each branch row, and since status is in an index's predicate neither UPDATE
-- can be HOT (each writes a new entry in every index of transactions). Measured in the bench (pg_stat_statements,
-- tcc+batch, 16 clients) it was the participant's most expensive statement, above the first phase. Now each item is
-- locked once and moves try -> confirm (or confirm_pending -> confirm) in one UPDATE, with both barrier rows in one
-- INSERT. The row never stands in confirm_pending where anyone could see it: the two steps were in one transaction in
-- 006 too. Answers and refusals are those of 006, item by item, now in item order.
--
-- dtx_move is dtx_advance (004) with a list of barrier ops and a list of statuses to move from; dtx_advance is now
-- that with one of each, so both keep one body. Its answers are unchanged.

-- Forward moves of existing rows: from any of p_from to p_to, writing a barrier row for each of p_ops; p_done are the
-- statuses that mean the move has happened already. One result row per item, in the items' order:
--   effect 'applied' | 'duplicate' | 'refused' | 'busy'; status after; refusal code when refused.
-- p_skip_locked (batches): an item whose row another transaction holds is answered 'busy' without waiting; the caller
-- runs it alone. Rows are locked before the barrier insert, in both paths, so two calls never wait on each other in
-- opposite orders.
CREATE OR REPLACE FUNCTION dtx_move(
    p_ops text[], p_gids bigint[], p_branches bigint[], p_from text[], p_to text, p_done text[],
    p_lock_timeout_ms integer, p_skip_locked boolean
) RETURNS TABLE (item integer, effect text, status text, refusal text) LANGUAGE plpgsql AS $$
DECLARE
    v_status text;
BEGIN
    PERFORM set_config('lock_timeout', p_lock_timeout_ms || 'ms', true);
    FOR i IN 1 .. coalesce(array_length(p_gids, 1), 0) LOOP
        item := i;
        v_status := NULL;
        IF p_skip_locked THEN
            SELECT t.status INTO v_status FROM transactions t
            WHERE t.worker_event_id = p_gids[i] AND t.product_id = p_branches[i] FOR UPDATE SKIP LOCKED;
            IF v_status IS NULL AND EXISTS (
                SELECT 1 FROM transactions t WHERE t.worker_event_id = p_gids[i] AND t.product_id = p_branches[i]
            ) THEN
                effect := 'busy'; status := NULL; refusal := NULL;
                RETURN NEXT;
                CONTINUE;
            END IF;
        ELSE
            SELECT t.status INTO v_status FROM transactions t
            WHERE t.worker_event_id = p_gids[i] AND t.product_id = p_branches[i] FOR UPDATE;
        END IF;
        IF v_status IS NULL AND p_gids[i] <= (SELECT r.pruned_gid_watermark FROM retention_state r) THEN
            -- pruned here (retention, 005) once final: a commit only follows a try that stood, so this is a duplicate
            effect := 'duplicate'; status := NULL; refusal := NULL;
        ELSIF v_status IS NULL THEN
            effect := 'refused'; status := NULL; refusal := 'branch_not_tried';
        ELSIF v_status = ANY (p_from) THEN
            INSERT INTO barrier (gid, branch_id, op) SELECT p_gids[i], p_branches[i], o FROM unnest(p_ops) AS o
            ON CONFLICT DO NOTHING;
            UPDATE transactions SET status = p_to, updated_at = now()
            WHERE worker_event_id = p_gids[i] AND product_id = p_branches[i];
            effect := 'applied'; status := p_to; refusal := NULL;
        ELSIF v_status = ANY (p_done) THEN
            effect := 'duplicate'; status := v_status; refusal := NULL;
        ELSIF v_status IN ('cancel', 'compensated') THEN
            effect := 'refused'; status := v_status; refusal := 'branch_cancelled';
        ELSE
            effect := 'refused'; status := v_status; refusal := 'invalid_state';
        END IF;
        RETURN NEXT;
    END LOOP;
END;
$$;

-- confirm, finalize, saga confirm: one op, one status to move from (the signature and answers of 004).
CREATE OR REPLACE FUNCTION dtx_advance(
    p_op text, p_gids bigint[], p_branches bigint[], p_from text, p_to text, p_done text[],
    p_lock_timeout_ms integer, p_skip_locked boolean
) RETURNS TABLE (item integer, effect text, status text, refusal text) LANGUAGE sql AS $$
    SELECT * FROM dtx_move(ARRAY[p_op], p_gids, p_branches, ARRAY[p_from], p_to, p_done, p_lock_timeout_ms, p_skip_locked);
$$;

-- TCC confirm and finalize of many branches in one statement: both barrier rows, one UPDATE to confirm.
CREATE OR REPLACE FUNCTION dtx_confirm_finalize(
    p_gids bigint[], p_branches bigint[], p_lock_timeout_ms integer, p_skip_locked boolean
) RETURNS TABLE (item integer, effect text, status text, refusal text) LANGUAGE sql AS $$
    SELECT * FROM dtx_move(ARRAY['confirm', 'finalize'], p_gids, p_branches, ARRAY['try', 'confirm_pending'], 'confirm',
                           ARRAY['confirm'], p_lock_timeout_ms, p_skip_locked);
$$;
