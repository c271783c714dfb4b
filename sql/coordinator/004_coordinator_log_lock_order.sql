-- The log's many-item writes take their locks in a fixed order (replaces dtx_begin_many and dtx_record_many of 002,
-- which stays as applied). Apply by hand with:
--   psql -v ON_ERROR_STOP=1 -d DB -f sql/coordinator/004_coordinator_log_lock_order.sql
--
-- 002 wrote the items in the order they came. Two group commits carrying the same two Idempotency-Keys in opposite
-- order (clients retrying at once) could deadlock on the keys' unique index, and PostgreSQL then failed one of the
-- statements with every item in it, unrelated transactions included. Now the items are written in key order (first
-- records) or id order (moves), and the rows still come back one per item in item order, as 002's callers (coordinators
-- of the previous version, running next to new ones during an upgrade) read them.

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
            RETURN QUERY
            SELECT i, false, w.request = p_requests[i]::jsonb, w.id, w.status, w.mode, w.phase, w.error_message, w.branches::text,
                   w.deadline_at, w.attempts, w.created_at, w.lease_epoch
            FROM worker_events w WHERE w.idempotency_key = p_idempotency_keys[i];
        END IF;
    END LOOP;
END;
$$;

CREATE OR REPLACE FUNCTION dtx_record_many(
    p_ids bigint[], p_epochs bigint[], p_expected_phases text[], p_statuses text[], p_phases text[], p_errors text[],
    p_branches text[], p_release boolean[], p_lease_seconds double precision, p_durable boolean
) RETURNS TABLE (item integer, written boolean) LANGUAGE plpgsql AS $$
DECLARE
    v_written boolean[] := '{}';
    i integer;
BEGIN
    IF NOT p_durable THEN
        PERFORM set_config('synchronous_commit', 'off', true);
    END IF;
    -- rows in id order: two batches that move the same rows (two drivers of one transaction, one of them stale) lock
    -- them in the same order, so they wait for each other instead of deadlocking
    FOR i IN SELECT k.n FROM generate_subscripts(p_ids, 1) AS k(n) ORDER BY p_ids[k.n], k.n LOOP
        UPDATE worker_events
        SET status = p_statuses[i], phase = p_phases[i], error_message = nullif(p_errors[i], ''), branches = p_branches[i]::jsonb,
            updated_at = now(),
            lease_holder = CASE WHEN p_release[i] THEN NULL ELSE lease_holder END,
            lease_expires_at = CASE WHEN p_release[i] THEN NULL ELSE now() + make_interval(secs => p_lease_seconds) END
        WHERE worker_events.id = p_ids[i] AND lease_epoch = p_epochs[i] AND phase = p_expected_phases[i];
        v_written[i] := FOUND;
    END LOOP;
    -- one row per item, in item order (what 002 promised its callers)
    RETURN QUERY SELECT k.n::integer, coalesce(v_written[k.n], false) FROM generate_subscripts(p_ids, 1) AS k(n) ORDER BY k.n;
END;
$$;
