-- Every branch operation as ONE statement: a server-side function that does the barrier insert, the stock change and
-- the row change in the statement's own transaction (autocommit), so that a branch operation costs one database round
-- trip. Apply by hand with: psql -v ON_ERROR_STOP=1 -d DB -f sql/participant/004_participant_branch_functions.sql
--
-- Refusals of the first phase are raised with a SQLSTATE of dtx's own class 'DX', so that the statement rolls back
-- (nothing of a refused try stays behind, not even its barrier row). Callers read the code, never the message text:
--   DX001 insufficient_stock   DX002 unknown_product    DX003 branch_cancelled   DX004 branch_confirmed
--   DX005 branch_not_tried     DX006 branch_conflict    DX007 invalid_state      DX008 deadline_passed
--   DX009 branch_pruned        DX010 xa_already_prepared (a duplicate prepare: answered as a duplicate)
--   DX011 xa_already_committed (a duplicate prepare after COMMIT PREPARED: answered as a duplicate)
-- Second-phase functions never need to undo a write to refuse, so they return their refusals as values (`refusal`),
-- one per item: a batch of many items is one statement in which one item's refusal never fails another.

-- Where the branch came from: the coordinator that called (learnt from its calls, so that the reconciler always knows
-- whom to ask) and the time after which its first phase must not be applied (the coordinator's global deadline).
ALTER TABLE transactions ADD COLUMN IF NOT EXISTS coordinator_url text;
ALTER TABLE barrier ADD COLUMN IF NOT EXISTS not_after timestamptz;

-- Coordinators seen by this participant, for in-doubt XA branches, whose row is inside the prepared transaction.
CREATE TABLE IF NOT EXISTS coordinators (
    url          text PRIMARY KEY,
    last_seen_at timestamptz NOT NULL DEFAULT now()
);

-- Retention (see dtx_prune in 005): gids at or below pruned_gid_watermark that this participant has no barrier row for
-- were pruned (or belong to a transaction whose first phase ended long before them): a first phase for one is refused.
CREATE TABLE IF NOT EXISTS retention_state (
    singleton            boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    pruned_gid_watermark bigint  NOT NULL DEFAULT 0
);
INSERT INTO retention_state DEFAULT VALUES ON CONFLICT DO NOTHING;

-- The one definition of a branch still open at this participant: a row the reconciler or the coordinator must still
-- move (try, confirm_pending) or a prepared transaction of this database left in doubt. The bench, `dtx verify` and the
-- tests count this view.
CREATE OR REPLACE VIEW open_branches AS
    SELECT worker_event_id, product_id, status, updated_at AS since, NULL::text AS gid
    FROM transactions WHERE status IN ('try', 'confirm_pending')
    UNION ALL
    SELECT NULL::bigint, NULL::bigint, 'prepared', prepared, gid FROM pg_prepared_xacts WHERE database = current_database();

-- First phase: try (TCC), reserve (Saga), prepare (XA: the caller runs it between BEGIN and PREPARE TRANSACTION).
-- p_row_status is the row it writes ('try'; XA writes 'confirm', visible only at COMMIT PREPARED).
-- Returns one row: effect 'applied' or 'duplicate', and the branch row's status.
CREATE OR REPLACE FUNCTION dtx_first_phase(
    p_op text, p_mode text, p_row_status text, p_gid bigint, p_branch bigint, p_quantity bigint, p_service text,
    p_lock_timeout_ms integer, p_not_after timestamptz, p_coordinator_url text, p_xa_gid text
) RETURNS TABLE (effect text, status text) LANGUAGE plpgsql AS $$
DECLARE
    v_status text;
BEGIN
    PERFORM set_config('lock_timeout', p_lock_timeout_ms || 'ms', true);
    IF p_not_after IS NOT NULL AND p_not_after < now() THEN
        RAISE EXCEPTION 'the first phase of branch %/% ended at %: this % is too late', p_gid, p_branch, p_not_after, p_op
            USING ERRCODE = 'DX008';
    END IF;
    IF p_xa_gid IS NOT NULL AND EXISTS (SELECT 1 FROM pg_prepared_xacts x WHERE x.gid = p_xa_gid) THEN
        RAISE EXCEPTION 'branch %/% is prepared already', p_gid, p_branch USING ERRCODE = 'DX010';
    END IF;
    INSERT INTO barrier (gid, branch_id, op, not_after) VALUES (p_gid, p_branch, p_op, p_not_after) ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        SELECT t.status INTO v_status FROM transactions t WHERE t.worker_event_id = p_gid AND t.product_id = p_branch;
        IF v_status IS NULL THEN
            RAISE EXCEPTION 'branch %/% was cancelled before this % arrived', p_gid, p_branch, p_op USING ERRCODE = 'DX003';
        END IF;
        IF p_xa_gid IS NOT NULL THEN
            RAISE EXCEPTION 'branch %/% is committed already', p_gid, p_branch USING ERRCODE = 'DX011';
        END IF;
        RETURN QUERY SELECT 'duplicate'::text, v_status;
        RETURN;
    END IF;
    IF p_gid <= (SELECT r.pruned_gid_watermark FROM retention_state r) THEN
        RAISE EXCEPTION 'branch %/% is older than what this participant keeps: this % is too late', p_gid, p_branch, p_op
            USING ERRCODE = 'DX009';
    END IF;
    UPDATE products SET stock = stock - p_quantity WHERE id = p_branch AND stock >= p_quantity;
    IF NOT FOUND THEN
        IF EXISTS (SELECT 1 FROM products WHERE id = p_branch) THEN
            RAISE EXCEPTION 'product % has less than % in stock at %', p_branch, p_quantity, p_service USING ERRCODE = 'DX001';
        END IF;
        RAISE EXCEPTION 'product % does not exist at %', p_branch, p_service USING ERRCODE = 'DX002';
    END IF;
    INSERT INTO transactions (service, product_id, quantity, status, worker_event_id, mode, coordinator_url)
    VALUES (p_service, p_branch, p_quantity, p_row_status, p_gid, p_mode, p_coordinator_url)
    ON CONFLICT (worker_event_id, product_id) DO NOTHING;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'worker_event % already has a branch for product % in another mode', p_gid, p_branch USING ERRCODE = 'DX006';
    END IF;
    RETURN QUERY SELECT 'applied'::text, p_row_status;
END;
$$;

-- Forward moves of existing rows (confirm, finalize, saga confirm): from p_from to p_to; p_done are the statuses that
-- mean the move has happened already. One result row per item, in the items' order:
--   effect 'applied' | 'duplicate' | 'refused' | 'busy'; status after; refusal code when refused.
-- p_skip_locked (batches): an item whose row another transaction holds is answered 'busy' without waiting; the caller
-- runs it alone. Rows are locked before the barrier insert, in both paths, so two calls never wait on each other in
-- opposite orders.
CREATE OR REPLACE FUNCTION dtx_advance(
    p_op text, p_gids bigint[], p_branches bigint[], p_from text, p_to text, p_done text[],
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
        ELSIF v_status = p_from THEN
            INSERT INTO barrier (gid, branch_id, op) VALUES (p_gids[i], p_branches[i], p_op) ON CONFLICT DO NOTHING;
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

-- Undo (cancel, compensate): gives the stock of a row in one of p_undoable back and sets it to p_to.
-- The barrier: the origin op's row is inserted too; inserted now means the origin never ran: a null compensation,
-- no stock touched, and the late origin then finds its row taken. A row past the commit point (not undoable) is
-- refused: 'branch_confirmed', nothing changed.
-- p_skip_locked (batches): an item whose row is missing or held, or whose product row is held, is answered 'busy'
-- without waiting (null compensations and origins still in flight are left to the single path, which waits).
CREATE OR REPLACE FUNCTION dtx_undo(
    p_op text, p_origin text, p_gids bigint[], p_branches bigint[], p_undoable text[], p_to text,
    p_lock_timeout_ms integer, p_skip_locked boolean
) RETURNS TABLE (item integer, effect text, status text, refusal text) LANGUAGE plpgsql AS $$
DECLARE
    v_status   text;
    v_quantity bigint;
    v_origin_new boolean;
    v_op_new     boolean;
BEGIN
    PERFORM set_config('lock_timeout', p_lock_timeout_ms || 'ms', true);
    FOR i IN 1 .. coalesce(array_length(p_gids, 1), 0) LOOP
        item := i;
        v_status := NULL;
        v_quantity := NULL;
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
            INSERT INTO barrier (gid, branch_id, op) VALUES (p_gids[i], p_branches[i], p_origin) ON CONFLICT DO NOTHING;
            v_origin_new := FOUND;
        ELSE
            INSERT INTO barrier (gid, branch_id, op) VALUES (p_gids[i], p_branches[i], p_origin) ON CONFLICT DO NOTHING;
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
        INSERT INTO barrier (gid, branch_id, op) VALUES (p_gids[i], p_branches[i], p_op) ON CONFLICT DO NOTHING;
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

-- XA rollback, after ROLLBACK PREPARED (or its "does not exist"): the barrier rows that make a late prepare do nothing.
-- A branch already committed (its row exists, origin barrier there) is refused: 'branch_confirmed'.
CREATE OR REPLACE FUNCTION dtx_xa_rollback_barrier(
    p_gid bigint, p_branch bigint, p_rolled_back_now boolean, p_lock_timeout_ms integer
) RETURNS TABLE (effect text, refusal text) LANGUAGE plpgsql AS $$
DECLARE
    v_origin_new boolean;
    v_op_new     boolean;
BEGIN
    PERFORM set_config('lock_timeout', p_lock_timeout_ms || 'ms', true);
    INSERT INTO barrier (gid, branch_id, op) VALUES (p_gid, p_branch, 'prepare') ON CONFLICT DO NOTHING;
    v_origin_new := FOUND;
    IF NOT v_origin_new AND EXISTS (SELECT 1 FROM transactions t WHERE t.worker_event_id = p_gid AND t.product_id = p_branch) THEN
        RETURN QUERY SELECT 'refused'::text, 'branch_confirmed'::text;
        RETURN;
    END IF;
    INSERT INTO barrier (gid, branch_id, op) VALUES (p_gid, p_branch, 'rollback') ON CONFLICT DO NOTHING;
    v_op_new := FOUND;
    RETURN QUERY SELECT CASE
        WHEN p_rolled_back_now THEN 'applied'
        WHEN NOT v_op_new THEN 'duplicate'
        WHEN v_origin_new THEN 'null_compensation'
        ELSE 'applied' END, NULL::text;
END;
$$;

-- XA commit whose COMMIT PREPARED found no such gid: committed before (duplicate), rolled back, or never prepared.
-- A branch pruned here (retention, 005) was committed if a commit comes for it: a duplicate.
CREATE OR REPLACE FUNCTION dtx_xa_commit_missing(p_gid bigint, p_branch bigint)
RETURNS TABLE (effect text, refusal text) LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN EXISTS (SELECT 1 FROM transactions t WHERE t.worker_event_id = p_gid AND t.product_id = p_branch AND t.status = 'confirm')
          OR p_gid <= (SELECT r.pruned_gid_watermark FROM retention_state r)
            THEN 'duplicate' ELSE 'refused' END,
        CASE
        WHEN EXISTS (SELECT 1 FROM transactions t WHERE t.worker_event_id = p_gid AND t.product_id = p_branch AND t.status = 'confirm')
          OR p_gid <= (SELECT r.pruned_gid_watermark FROM retention_state r)
            THEN NULL
        WHEN EXISTS (SELECT 1 FROM barrier b WHERE b.gid = p_gid AND b.branch_id = p_branch AND b.op = 'rollback')
            THEN 'branch_cancelled'
        ELSE 'branch_not_tried' END;
$$;
