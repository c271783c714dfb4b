-- A null compensation keeps its barrier rows until the first phase has ended (new overloads of dtx_undo and
-- dtx_xa_rollback_barrier; 004's stay for participants of the previous version during a rolling upgrade). Apply by
-- hand with:
--   psql -v ON_ERROR_STOP=1 -d DB -f sql/participant/009_participant_undo_keeps_first_phase_end.sql
--
-- An undo that finds no first phase (a null compensation: cancel, compensate or XA rollback before the try, reserve
-- or prepare arrived) writes the origin's barrier row, so that the late first phase does nothing. 004 wrote that row
-- with no not_after, and retention (005, 008) keeps a branch only until its rows are a horizon old and its first
-- phase's end (not_after) is: with a horizon shorter than the coordinator's global timeout, the rows could go while
-- the first phase could still arrive, and that try then held stock until the reconciler cancelled it. The coordinator
-- sends not_after with every call, undos included: it is now written with the barrier rows an undo inserts.
-- '' in p_not_afters is none (PostgresNIO sends no NULL in arrays).

CREATE OR REPLACE FUNCTION dtx_undo(
    p_op text, p_origin text, p_gids bigint[], p_branches bigint[], p_undoable text[], p_to text,
    p_lock_timeout_ms integer, p_skip_locked boolean, p_not_afters text[]
) RETURNS TABLE (item integer, effect text, status text, refusal text) LANGUAGE plpgsql AS $$
DECLARE
    v_status   text;
    v_quantity bigint;
    v_origin_new boolean;
    v_op_new     boolean;
    v_not_after  timestamptz;
BEGIN
    PERFORM set_config('lock_timeout', p_lock_timeout_ms || 'ms', true);
    FOR i IN 1 .. coalesce(array_length(p_gids, 1), 0) LOOP
        item := i;
        v_status := NULL;
        v_quantity := NULL;
        v_not_after := nullif(p_not_afters[i], '')::timestamptz;
        IF p_skip_locked THEN
            SELECT t.status, t.quantity INTO v_status, v_quantity FROM transactions t
            WHERE t.worker_event_id = p_gids[i] AND t.product_id = p_branches[i] FOR UPDATE SKIP LOCKED;
            IF v_status IS NOT NULL AND v_status = ANY (p_undoable) THEN
                PERFORM 1 FROM products p WHERE p.id = p_branches[i] FOR UPDATE SKIP LOCKED;
                IF NOT FOUND THEN
                    v_status := NULL;
                END IF;
            END IF;
            IF v_status IS NULL THEN
                effect := 'busy'; status := NULL; refusal := NULL;
                RETURN NEXT;
                CONTINUE;
            END IF;
            INSERT INTO barrier (gid, branch_id, op, not_after) VALUES (p_gids[i], p_branches[i], p_origin, v_not_after) ON CONFLICT DO NOTHING;
            v_origin_new := FOUND;
        ELSE
            INSERT INTO barrier (gid, branch_id, op, not_after) VALUES (p_gids[i], p_branches[i], p_origin, v_not_after) ON CONFLICT DO NOTHING;
            v_origin_new := FOUND;
            SELECT t.status, t.quantity INTO v_status, v_quantity FROM transactions t
            WHERE t.worker_event_id = p_gids[i] AND t.product_id = p_branches[i] FOR UPDATE;
        END IF;
        IF v_status IS NOT NULL AND v_status <> p_to AND NOT (v_status = ANY (p_undoable)) THEN
            -- past the commit point: refused, and nothing written (the origin's barrier row was there already)
            effect := 'refused'; status := v_status;
            refusal := CASE WHEN v_status IN ('confirm', 'confirm_pending') THEN 'branch_confirmed' ELSE 'invalid_state' END;
            RETURN NEXT;
            CONTINUE;
        END IF;
        INSERT INTO barrier (gid, branch_id, op, not_after) VALUES (p_gids[i], p_branches[i], p_op, v_not_after) ON CONFLICT DO NOTHING;
        v_op_new := FOUND;
        IF NOT v_op_new OR v_status = p_to THEN
            effect := 'duplicate'; status := v_status; refusal := NULL;
        ELSIF v_origin_new OR v_status IS NULL THEN
            effect := 'null_compensation'; status := v_status; refusal := NULL;
        ELSE
            UPDATE products SET stock = stock + v_quantity WHERE id = p_branches[i];
            UPDATE transactions SET status = p_to, updated_at = now()
            WHERE worker_event_id = p_gids[i] AND product_id = p_branches[i];
            effect := 'applied'; status := p_to; refusal := NULL;
        END IF;
        RETURN NEXT;
    END LOOP;
END;
$$;

CREATE OR REPLACE FUNCTION dtx_xa_rollback_barrier(
    p_gid bigint, p_branch bigint, p_rolled_back_now boolean, p_lock_timeout_ms integer, p_not_after timestamptz
) RETURNS TABLE (effect text, refusal text) LANGUAGE plpgsql AS $$
DECLARE
    v_origin_new boolean;
    v_op_new     boolean;
BEGIN
    PERFORM set_config('lock_timeout', p_lock_timeout_ms || 'ms', true);
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
