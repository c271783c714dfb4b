-- dtx_confirm_finalize (006) again, with one write per item instead of two. Apply by hand with:
--   psql -v ON_ERROR_STOP=1 -d DB -f sql/participant/007_participant_confirm_finalize_one_write.sql
--
-- 006 ran dtx_advance('confirm') and then dtx_advance('finalize') over the items: two row locks, two barrier inserts
-- and two UPDATEs of each branch row, and since status is in an index's predicate neither UPDATE can be HOT (each
-- writes a new entry in every index of transactions). Measured in the bench (pg_stat_statements, tcc+batch, 16
-- clients) it was the participant's most expensive statement, above the first phase. Here each item is locked once
-- and moves try -> confirm (or confirm_pending -> confirm) in one UPDATE, with both barrier rows in one INSERT. The
-- row never stands in confirm_pending where anyone could see it: the two steps were in one transaction in 006 too.
-- Answers and refusals are those of 006, item by item (a later single confirm or finalize is a duplicate; a row that
-- was never tried is refused branch_not_tried; a cancelled one branch_cancelled; another transaction's row is busy
-- when p_skip_locked), now in item order.
CREATE OR REPLACE FUNCTION dtx_confirm_finalize(
    p_gids bigint[], p_branches bigint[], p_lock_timeout_ms integer, p_skip_locked boolean
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
        ELSIF v_status IN ('try', 'confirm_pending') THEN
            INSERT INTO barrier (gid, branch_id, op) VALUES (p_gids[i], p_branches[i], 'confirm'), (p_gids[i], p_branches[i], 'finalize')
            ON CONFLICT DO NOTHING;
            UPDATE transactions SET status = 'confirm', updated_at = now()
            WHERE worker_event_id = p_gids[i] AND product_id = p_branches[i];
            effect := 'applied'; status := 'confirm'; refusal := NULL;
        ELSIF v_status = 'confirm' THEN
            effect := 'duplicate'; status := 'confirm'; refusal := NULL;
        ELSIF v_status IN ('cancel', 'compensated') THEN
            effect := 'refused'; status := v_status; refusal := 'branch_cancelled';
        ELSE
            effect := 'refused'; status := v_status; refusal := 'invalid_state';
        END IF;
        RETURN NEXT;
    END LOOP;
END;
$$;
