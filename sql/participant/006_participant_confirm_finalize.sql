-- TCC confirm and finalize of many branches in one statement: the coordinator's batched second phase. Apply by hand with:
--   psql -v ON_ERROR_STOP=1 -d DB -f sql/participant/006_participant_confirm_finalize.sql
--
-- Each item is confirmed (try -> confirm_pending) exactly as dtx_advance('confirm', ...) does, barrier row
-- included; every item that then stands in confirm_pending (confirmed now, or by an earlier call) is finalized
-- (confirm_pending -> confirm) as dtx_advance('finalize', ...) does, in the same transaction. So the two steps of
-- the design keep their barrier rows and their refusals, and a later single confirm or finalize of the same branch
-- is a duplicate. An item answers with its finalize result when it got that far, else with its confirm result
-- (refused, busy, or already confirm).
CREATE OR REPLACE FUNCTION dtx_confirm_finalize(
    p_gids bigint[], p_branches bigint[], p_lock_timeout_ms integer, p_skip_locked boolean
) RETURNS TABLE (item integer, effect text, status text, refusal text) LANGUAGE plpgsql AS $$
DECLARE
    v_confirmed record;
    v_finalized record;
    v_items    integer[] := '{}';
    v_gids     bigint[]  := '{}';
    v_branches bigint[]  := '{}';
BEGIN
    FOR v_confirmed IN
        SELECT * FROM dtx_advance('confirm', p_gids, p_branches, 'try', 'confirm_pending',
                                  ARRAY['confirm_pending', 'confirm'], p_lock_timeout_ms, p_skip_locked)
    LOOP
        IF v_confirmed.refusal IS NULL AND v_confirmed.status = 'confirm_pending' THEN
            v_items    := v_items || v_confirmed.item;
            v_gids     := v_gids || p_gids[v_confirmed.item];
            v_branches := v_branches || p_branches[v_confirmed.item];
        ELSE
            item := v_confirmed.item; effect := v_confirmed.effect; status := v_confirmed.status; refusal := v_confirmed.refusal;
            RETURN NEXT;
        END IF;
    END LOOP;
    -- the rows confirmed above are locked by this transaction already: no wait, nothing busy
    FOR v_finalized IN
        SELECT * FROM dtx_advance('finalize', v_gids, v_branches, 'confirm_pending', 'confirm',
                                  ARRAY['confirm'], p_lock_timeout_ms, false)
    LOOP
        item := v_items[v_finalized.item]; effect := v_finalized.effect; status := v_finalized.status; refusal := v_finalized.refusal;
        RETURN NEXT;
    END LOOP;
END;
$$;
