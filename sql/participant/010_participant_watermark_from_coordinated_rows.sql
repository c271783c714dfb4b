-- The pruned-gid watermark can no longer be moved by a call anyone could make, nor block what carries a deadline;
-- retention no longer stalls behind old open branches; branch calls are checked against the branch's quantity and
-- mode. Replaces dtx_first_phase (004), dtx_xa_commit_missing (004), dtx_prune (008), dtx_move and
-- dtx_confirm_finalize (007) and dtx_undo (009), which stay as applied; adds the mode to dtx_move, dtx_advance and
-- dtx_undo. Apply by hand with:
--   psql -v ON_ERROR_STOP=1 -d DB -f sql/participant/010_participant_watermark_from_coordinated_rows.sql
--
-- Before: since 009 a null compensation keeps the not_after its request carried, and the prune raised the watermark
-- from any pruned barrier row with a not_after. So one cancel with a made-up gid (9e18) and a not_after, once pruned,
-- moved the watermark above every id a coordinator would ever send, and from then on every try, reserve and prepare
-- was refused as pruned (409 branch_pruned), every global transaction aborted, until someone edited retention_state.
-- Now:
-- - the watermark rises only from pruned branch rows a coordinator made (coordinator_url noted, a deadline in the
--   barrier);
-- - a first phase that carries its deadline (every coordinator call) is judged by that deadline only (DX008), never by
--   the watermark, which is for the documented body alone;
-- - an XA commit that finds its branch rolled back is refused (branch_cancelled) whatever the watermark says;
-- - a repeated first phase with another quantity or mode than the branch's row is refused (DX006, branch_conflict), not
--   answered as a duplicate of a call it is not;
-- - a second phase of another mode than its branch's is refused (branch_conflict) and writes nothing (at the end of
--   this file);
-- - the prune's candidates with barrier rows only are filtered before their LIMIT: 1,000 old open branches (a
--   coordinator gone, the bench's never-confirmed baselines on a kept server) filled that list on every pass, so null
--   compensations and rolled-back XA branches behind them were never pruned.

CREATE OR REPLACE FUNCTION dtx_first_phase(
    p_op text, p_mode text, p_row_status text, p_gid bigint, p_branch bigint, p_quantity bigint, p_service text,
    p_lock_timeout_ms integer, p_not_after timestamptz, p_coordinator_url text, p_xa_gid text
) RETURNS TABLE (effect text, status text) LANGUAGE plpgsql AS $$
DECLARE
    v_status text;
    v_quantity bigint;
    v_mode text;
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
        SELECT t.status, t.quantity, t.mode INTO v_status, v_quantity, v_mode FROM transactions t
        WHERE t.worker_event_id = p_gid AND t.product_id = p_branch;
        IF v_status IS NULL THEN
            RAISE EXCEPTION 'branch %/% was cancelled before this % arrived', p_gid, p_branch, p_op USING ERRCODE = 'DX003';
        END IF;
        -- a repeat is the same call: another quantity or mode is another branch under the same name, not a duplicate
        IF v_quantity <> p_quantity OR v_mode <> p_mode THEN
            RAISE EXCEPTION 'branch %/% was taken with quantity % in %, not % in %', p_gid, p_branch, v_quantity, v_mode, p_quantity, p_mode
                USING ERRCODE = 'DX006';
        END IF;
        IF p_xa_gid IS NOT NULL THEN
            RAISE EXCEPTION 'branch %/% is committed already', p_gid, p_branch USING ERRCODE = 'DX011';
        END IF;
        RETURN QUERY SELECT 'duplicate'::text, v_status;
        RETURN;
    END IF;
    -- the watermark judges only a first phase without its deadline (the documented body alone): one with it is judged
    -- by the deadline above, which a replay of a pruned branch has passed
    IF p_not_after IS NULL AND p_gid <= (SELECT r.pruned_gid_watermark FROM retention_state r) THEN
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

-- XA commit whose COMMIT PREPARED found no such gid: committed before (duplicate), rolled back (refused, whatever the
-- watermark), or never prepared. A branch pruned here with no rollback left was committed if a commit comes for it.
CREATE OR REPLACE FUNCTION dtx_xa_commit_missing(p_gid bigint, p_branch bigint)
RETURNS TABLE (effect text, refusal text) LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN EXISTS (SELECT 1 FROM transactions t WHERE t.worker_event_id = p_gid AND t.product_id = p_branch AND t.status = 'confirm')
            THEN 'duplicate'
        WHEN EXISTS (SELECT 1 FROM barrier b WHERE b.gid = p_gid AND b.branch_id = p_branch AND b.op = 'rollback')
            THEN 'refused'
        WHEN p_gid <= (SELECT r.pruned_gid_watermark FROM retention_state r)
            THEN 'duplicate'
        ELSE 'refused' END,
        CASE
        WHEN EXISTS (SELECT 1 FROM transactions t WHERE t.worker_event_id = p_gid AND t.product_id = p_branch AND t.status = 'confirm')
            THEN NULL
        WHEN EXISTS (SELECT 1 FROM barrier b WHERE b.gid = p_gid AND b.branch_id = p_branch AND b.op = 'rollback')
            THEN 'branch_cancelled'
        WHEN p_gid <= (SELECT r.pruned_gid_watermark FROM retention_state r)
            THEN NULL
        ELSE 'branch_not_tried' END;
$$;

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
        -- branches with a row come through the second list once final, and old open ones must not fill this one
        (SELECT b.gid, b.branch_id FROM barrier b
         WHERE b.created_at < v_cutoff AND (b.not_after IS NULL OR b.not_after < v_cutoff)
           AND NOT EXISTS (SELECT 1 FROM transactions t WHERE t.worker_event_id = b.gid AND t.product_id = b.branch_id)
         ORDER BY b.created_at LIMIT p_limit)
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
END;
$$;

-- Second phases check the branch's mode (sql/participant/010 too): a TCC confirm or cancel for a Saga branch (or the
-- reverse) is refused (branch_conflict) and writes nothing. Before, a TCC confirm moved a Saga's row to
-- confirm_pending, which the reconciler then finalized, and the Saga could neither confirm nor compensate it: a
-- split outcome from one misdirected call. dtx_move and dtx_undo take the mode as a last argument; dtx_advance gets
-- an overload that passes it; dtx_confirm_finalize is TCC's alone.

CREATE OR REPLACE FUNCTION dtx_move(
    p_ops text[], p_gids bigint[], p_branches bigint[], p_from text[], p_to text, p_done text[],
    p_lock_timeout_ms integer, p_skip_locked boolean, p_mode text
) RETURNS TABLE (item integer, effect text, status text, refusal text) LANGUAGE plpgsql AS $$
DECLARE
    v_status text;
    v_mode text;
BEGIN
    PERFORM set_config('lock_timeout', p_lock_timeout_ms || 'ms', true);
    FOR i IN 1 .. coalesce(array_length(p_gids, 1), 0) LOOP
        item := i;
        v_status := NULL;
        IF p_skip_locked THEN
            SELECT t.status, t.mode INTO v_status, v_mode FROM transactions t
            WHERE t.worker_event_id = p_gids[i] AND t.product_id = p_branches[i] FOR UPDATE SKIP LOCKED;
            IF v_status IS NULL AND EXISTS (
                SELECT 1 FROM transactions t WHERE t.worker_event_id = p_gids[i] AND t.product_id = p_branches[i]
            ) THEN
                effect := 'busy'; status := NULL; refusal := NULL;
                RETURN NEXT;
                CONTINUE;
            END IF;
        ELSE
            SELECT t.status, t.mode INTO v_status, v_mode FROM transactions t
            WHERE t.worker_event_id = p_gids[i] AND t.product_id = p_branches[i] FOR UPDATE;
        END IF;
        IF v_status IS NULL AND p_gids[i] <= (SELECT r.pruned_gid_watermark FROM retention_state r) THEN
            -- pruned here (retention, 005) once final: a commit only follows a try that stood, so this is a duplicate
            effect := 'duplicate'; status := NULL; refusal := NULL;
        ELSIF v_status IS NULL THEN
            effect := 'refused'; status := NULL; refusal := 'branch_not_tried';
        ELSIF p_mode IS NOT NULL AND v_mode <> p_mode THEN
            -- another mode's branch under this name: nothing written (its own coordinator moves it)
            effect := 'refused'; status := v_status; refusal := 'branch_conflict';
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

CREATE OR REPLACE FUNCTION dtx_undo(
    p_op text, p_origin text, p_gids bigint[], p_branches bigint[], p_undoable text[], p_to text,
    p_lock_timeout_ms integer, p_skip_locked boolean, p_not_afters text[], p_mode text
) RETURNS TABLE (item integer, effect text, status text, refusal text) LANGUAGE plpgsql AS $$
DECLARE
    v_mode     text;
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
        -- another mode's branch under this name: refused before anything is written (a row's mode never changes)
        IF p_mode IS NOT NULL THEN
            SELECT t.mode, t.status INTO v_mode, v_status FROM transactions t WHERE t.worker_event_id = p_gids[i] AND t.product_id = p_branches[i];
            IF v_mode IS NOT NULL AND v_mode <> p_mode THEN
                effect := 'refused'; status := v_status; refusal := 'branch_conflict';
                RETURN NEXT;
                CONTINUE;
            END IF;
            v_status := NULL;
        END IF;
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

-- The signatures without the mode (007, 009) stay for participants of the previous version during a rolling upgrade:
-- they check no mode.
CREATE OR REPLACE FUNCTION dtx_move(
    p_ops text[], p_gids bigint[], p_branches bigint[], p_from text[], p_to text, p_done text[],
    p_lock_timeout_ms integer, p_skip_locked boolean
) RETURNS TABLE (item integer, effect text, status text, refusal text) LANGUAGE sql AS $$
    SELECT * FROM dtx_move(p_ops, p_gids, p_branches, p_from, p_to, p_done, p_lock_timeout_ms, p_skip_locked, NULL::text);
$$;

-- confirm, finalize, saga confirm of branches of mode p_mode.
CREATE OR REPLACE FUNCTION dtx_advance(
    p_op text, p_gids bigint[], p_branches bigint[], p_from text, p_to text, p_done text[],
    p_lock_timeout_ms integer, p_skip_locked boolean, p_mode text
) RETURNS TABLE (item integer, effect text, status text, refusal text) LANGUAGE sql AS $$
    SELECT * FROM dtx_move(ARRAY[p_op], p_gids, p_branches, ARRAY[p_from], p_to, p_done, p_lock_timeout_ms, p_skip_locked, p_mode);
$$;

-- TCC's confirm and finalize in one statement: TCC branches only.
CREATE OR REPLACE FUNCTION dtx_confirm_finalize(
    p_gids bigint[], p_branches bigint[], p_lock_timeout_ms integer, p_skip_locked boolean
) RETURNS TABLE (item integer, effect text, status text, refusal text) LANGUAGE sql AS $$
    SELECT * FROM dtx_move(ARRAY['confirm', 'finalize'], p_gids, p_branches, ARRAY['try', 'confirm_pending'], 'confirm',
                           ARRAY['confirm'], p_lock_timeout_ms, p_skip_locked, 'tcc');
$$;

CREATE OR REPLACE FUNCTION dtx_undo(
    p_op text, p_origin text, p_gids bigint[], p_branches bigint[], p_undoable text[], p_to text,
    p_lock_timeout_ms integer, p_skip_locked boolean, p_not_afters text[]
) RETURNS TABLE (item integer, effect text, status text, refusal text) LANGUAGE sql AS $$
    SELECT * FROM dtx_undo(p_op, p_origin, p_gids, p_branches, p_undoable, p_to, p_lock_timeout_ms, p_skip_locked, p_not_afters, NULL::text);
$$;
