-- A first record whose Idempotency-Key row is pruned while it is being written still gets its row (replaces
-- dtx_begin_many of 004; 004 stays as applied). Apply by hand with:
--   psql -v ON_ERROR_STOP=1 -d DB -f sql/coordinator/007_coordinator_begin_key_pruned_meanwhile.sql
--
-- 004 inserted a keyed item with ON CONFLICT DO NOTHING and, when the key was taken, read the row under that key in a
-- later statement, with a new snapshot. Had retention deleted that row in between (a key reused after the horizon,
-- at the moment of a prune), the item returned no row: the coordinator, which matches one row to each item, then
-- failed the whole group commit, answering 503 "nothing logged" to every client in it although their rows were
-- written (recovery would then have driven transactions their clients took for never begun). Now such an item is
-- inserted after all; one row per item, in item order, as before.

CREATE OR REPLACE FUNCTION dtx_begin_many(
    p_ids bigint[], p_modes text[], p_phases text[], p_requests text[], p_branches text[], p_timeout_seconds double precision,
    p_owner text, p_holder bigint, p_lease_seconds double precision, p_idempotency_keys text[]
) RETURNS TABLE (
    item integer, created boolean, same_request boolean, id bigint, status text, mode text, phase text, error_message text,
    branches text, deadline_at timestamptz, attempts integer, created_at timestamptz, lease_epoch bigint
) LANGUAGE plpgsql AS $$
DECLARE
    v_created boolean[] := '{}';
    i integer;
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    -- first the items with an idempotency key, in key order: two batches that carry the same keys take their
    -- unique-index entries in the same order, so they wait for each other instead of deadlocking (which failed every
    -- item of one of them)
    FOR i IN SELECT k.n FROM generate_subscripts(p_ids, 1) AS k(n) WHERE nullif(p_idempotency_keys[k.n], '') IS NOT NULL
             ORDER BY p_idempotency_keys[k.n], k.n LOOP
        INSERT INTO worker_events (id, status, mode, phase, request, branches, deadline_at, lease_owner, lease_holder,
                                   lease_expires_at, lease_epoch, idempotency_key)
        VALUES (p_ids[i], 'pending', p_modes[i], p_phases[i], p_requests[i]::jsonb, p_branches[i]::jsonb,
                now() + make_interval(secs => p_timeout_seconds), p_owner, p_holder, now() + make_interval(secs => p_lease_seconds),
                1, p_idempotency_keys[i])
        ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING;
        v_created[i] := FOUND;
    END LOOP;
    -- then one row per item, in item order (what 002 promised its callers): the keyed items' rows as written above or
    -- found under their key, the others inserted now (their ids are new: nothing to wait for)
    FOR i IN 1 .. coalesce(array_length(p_ids, 1), 0) LOOP
        IF nullif(p_idempotency_keys[i], '') IS NULL THEN
            RETURN QUERY
            INSERT INTO worker_events AS w (id, status, mode, phase, request, branches, deadline_at, lease_owner, lease_holder,
                                            lease_expires_at, lease_epoch, idempotency_key)
            VALUES (p_ids[i], 'pending', p_modes[i], p_phases[i], p_requests[i]::jsonb, p_branches[i]::jsonb,
                    now() + make_interval(secs => p_timeout_seconds), p_owner, p_holder, now() + make_interval(secs => p_lease_seconds),
                    1, NULL)
            RETURNING i, true, true, w.id, w.status, w.mode, w.phase, w.error_message, w.branches::text, w.deadline_at, w.attempts,
                      w.created_at, w.lease_epoch;
        ELSIF v_created[i] THEN
            RETURN QUERY
            SELECT i, true, true, w.id, w.status, w.mode, w.phase, w.error_message, w.branches::text, w.deadline_at, w.attempts,
                   w.created_at, w.lease_epoch
            FROM worker_events w WHERE w.id = p_ids[i];
        ELSE
            LOOP
                RETURN QUERY
                SELECT i, false, w.request = p_requests[i]::jsonb, w.id, w.status, w.mode, w.phase, w.error_message, w.branches::text,
                       w.deadline_at, w.attempts, w.created_at, w.lease_epoch
                FROM worker_events w WHERE w.idempotency_key = p_idempotency_keys[i];
                EXIT WHEN FOUND;
                -- the row under this key was pruned since the insert above found it (this statement reads with a new
                -- snapshot): the key is free again, so this item begins its transaction after all
                RETURN QUERY
                INSERT INTO worker_events AS w (id, status, mode, phase, request, branches, deadline_at, lease_owner, lease_holder,
                                                lease_expires_at, lease_epoch, idempotency_key)
                VALUES (p_ids[i], 'pending', p_modes[i], p_phases[i], p_requests[i]::jsonb, p_branches[i]::jsonb,
                        now() + make_interval(secs => p_timeout_seconds), p_owner, p_holder, now() + make_interval(secs => p_lease_seconds),
                        1, p_idempotency_keys[i])
                ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
                RETURNING i, true, true, w.id, w.status, w.mode, w.phase, w.error_message, w.branches::text, w.deadline_at, w.attempts,
                          w.created_at, w.lease_epoch;
                EXIT WHEN FOUND;
                -- another request took the key in between: read its row
            END LOOP;
        END IF;
    END LOOP;
END;
$$;
