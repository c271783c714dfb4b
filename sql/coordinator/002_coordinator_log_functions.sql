-- The coordinator's log writes as ONE statement each (one database round trip), fenced by a per-claim lease epoch.
-- Apply by hand with: psql -v ON_ERROR_STOP=1 -d DB -f sql/coordinator/002_coordinator_log_functions.sql
--
-- Fencing: every claim of a row (the first record, a recovery claim, a takeover) increments lease_epoch, and every
-- write to the row is conditional on the epoch its writer got (and on the phase it read), so a driver that lost its
-- claim (it stalled past its lease, or another coordinator took the row over) finds its write refused and stops.
-- Who holds a row is lease_holder, a number unique to one coordinator process, which holds the session advisory lock
-- (dtx_holder_lock_namespace(), lease_holder) for its whole life: a row whose holder no longer holds that lock (the
-- process died) may be claimed at once, without waiting for the lease to end. lease_owner is only a label (the
-- coordinator's --instance-id) for people.

ALTER TABLE worker_events ADD COLUMN IF NOT EXISTS lease_epoch bigint NOT NULL DEFAULT 0;
ALTER TABLE worker_events ADD COLUMN IF NOT EXISTS lease_holder bigint;
ALTER TABLE worker_events ADD COLUMN IF NOT EXISTS idempotency_key text;
-- The one definition of "still open": what the recovery loop must still drive. A Saga is failed while its
-- compensations run (phase compensate); any other failed row is final.
ALTER TABLE worker_events ADD COLUMN IF NOT EXISTS open boolean
    GENERATED ALWAYS AS (status = 'pending' OR (status = 'failed' AND mode = 'saga' AND phase = 'compensate')) STORED;

DROP INDEX IF EXISTS worker_events_recovery_idx;
CREATE INDEX IF NOT EXISTS worker_events_open_idx ON worker_events (next_retry_at) WHERE open;
CREATE UNIQUE INDEX IF NOT EXISTS worker_events_idempotency_key_idx ON worker_events (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS worker_events_mode_idx ON worker_events (mode, id DESC);

-- Transaction ids. The first record is written without waiting for its WAL flush (presumed abort: if a crash loses
-- it, the transaction never happened, and a participant that asks about it is told so), so ids cannot come from the
-- identity sequence, whose state can go back after such a crash and hand out an id twice. Ids are taken in blocks
-- from this row instead, each block a durable write: after a crash every new id is above every id handed out before.
ALTER TABLE worker_events ALTER COLUMN id DROP IDENTITY IF EXISTS;
CREATE TABLE IF NOT EXISTS worker_event_ids (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    next_id   bigint  NOT NULL
);
INSERT INTO worker_event_ids (next_id) SELECT coalesce(max(id), 0) + 1 FROM worker_events ON CONFLICT DO NOTHING;

CREATE SEQUENCE IF NOT EXISTS coordinator_holders;

CREATE OR REPLACE FUNCTION dtx_holder_lock_namespace() RETURNS integer LANGUAGE sql IMMUTABLE AS $$ SELECT 1685288035 $$;

-- A block of p_count ids: the first one. Durable before it answers (synchronous_commit as the server says: on).
CREATE OR REPLACE FUNCTION dtx_allocate_ids(p_count bigint) RETURNS bigint LANGUAGE sql AS $$
    UPDATE worker_event_ids SET next_id = next_id + p_count RETURNING next_id - p_count;
$$;

-- The first records of global transactions, pending in their first phase, held by the caller with epoch 1; one row
-- per item, in order. Not waited for on disk (see above). An item whose idempotency key is in the log already writes
-- nothing and returns the existing row (created = false; same_request says whether its request equals this one).
-- Many items in one call are the coordinator's group commit: the first records of transactions that began together.
CREATE OR REPLACE FUNCTION dtx_begin_many(
    p_ids bigint[], p_modes text[], p_phases text[], p_requests text[], p_branches text[], p_timeout_seconds double precision,
    p_owner text, p_holder bigint, p_lease_seconds double precision, p_idempotency_keys text[]
) RETURNS TABLE (
    item integer, created boolean, same_request boolean, id bigint, status text, mode text, phase text, error_message text,
    branches text, deadline_at timestamptz, attempts integer, created_at timestamptz, lease_epoch bigint
) LANGUAGE plpgsql AS $$
DECLARE
    v_found boolean;
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    FOR i IN 1 .. coalesce(array_length(p_ids, 1), 0) LOOP
        RETURN QUERY
        INSERT INTO worker_events AS w (id, status, mode, phase, request, branches, deadline_at, lease_owner, lease_holder,
                                        lease_expires_at, lease_epoch, idempotency_key)
        VALUES (p_ids[i], 'pending', p_modes[i], p_phases[i], p_requests[i]::jsonb, p_branches[i]::jsonb,
                now() + make_interval(secs => p_timeout_seconds), p_owner, p_holder, now() + make_interval(secs => p_lease_seconds),
                1, nullif(p_idempotency_keys[i], ''))
        ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
        RETURNING i, true, true, w.id, w.status, w.mode, w.phase, w.error_message, w.branches::text, w.deadline_at, w.attempts,
                  w.created_at, w.lease_epoch;
        GET DIAGNOSTICS v_found = ROW_COUNT;
        IF NOT v_found THEN
            RETURN QUERY
            SELECT i, false, w.request = p_requests[i]::jsonb, w.id, w.status, w.mode, w.phase, w.error_message, w.branches::text,
                   w.deadline_at, w.attempts, w.created_at, w.lease_epoch
            FROM worker_events w WHERE w.idempotency_key = nullif(p_idempotency_keys[i], '');
        END IF;
    END LOOP;
END;
$$;

-- Moves of transactions: status, phase, error and branches of each item, written if the caller still holds the row
-- with that item's epoch and the row is still in the phase the caller read. p_release[i] gives the row back (it is no
-- longer open). p_durable = false does not wait for the WAL flush (writes recovery can redo). One row per item, in
-- order: whether it was written. Many items in one call are the coordinator's group commit. An empty error or
-- idempotency key stands for none (arrays from the client carry no NULL).
CREATE OR REPLACE FUNCTION dtx_record_many(
    p_ids bigint[], p_epochs bigint[], p_expected_phases text[], p_statuses text[], p_phases text[], p_errors text[],
    p_branches text[], p_release boolean[], p_lease_seconds double precision, p_durable boolean
) RETURNS TABLE (item integer, written boolean) LANGUAGE plpgsql AS $$
BEGIN
    IF NOT p_durable THEN
        PERFORM set_config('synchronous_commit', 'off', true);
    END IF;
    FOR i IN 1 .. coalesce(array_length(p_ids, 1), 0) LOOP
        UPDATE worker_events
        SET status = p_statuses[i], phase = p_phases[i], error_message = nullif(p_errors[i], ''), branches = p_branches[i]::jsonb,
            updated_at = now(),
            lease_holder = CASE WHEN p_release[i] THEN NULL ELSE lease_holder END,
            lease_expires_at = CASE WHEN p_release[i] THEN NULL ELSE now() + make_interval(secs => p_lease_seconds) END
        WHERE worker_events.id = p_ids[i] AND lease_epoch = p_epochs[i] AND phase = p_expected_phases[i];
        item := i;
        written := FOUND;
        RETURN NEXT;
    END LOOP;
END;
$$;

-- Gives a transaction back to the recovery loop, to be tried again after p_delay_seconds. Not waited for on disk: if
-- a crash loses it, the transaction is only tried again sooner.
CREATE OR REPLACE FUNCTION dtx_postpone(
    p_id bigint, p_epoch bigint, p_expected_phase text, p_branches jsonb, p_delay_seconds double precision
) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    UPDATE worker_events
    SET branches = p_branches, attempts = attempts + 1, updated_at = now(),
        next_retry_at = now() + make_interval(secs => p_delay_seconds), lease_holder = NULL, lease_expires_at = NULL
    WHERE id = p_id AND lease_epoch = p_epoch AND phase = p_expected_phase;
    RETURN FOUND;
END;
$$;

-- The coordinator processes alive now: those holding their advisory lock in this database.
CREATE OR REPLACE FUNCTION dtx_live_holders() RETURNS SETOF bigint LANGUAGE sql STABLE AS $$
    SELECT l.objid::bigint FROM pg_locks l
    WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 AND l.classid = dtx_holder_lock_namespace()::oid
      AND l.database = (SELECT d.oid FROM pg_database d WHERE d.datname = current_database());
$$;

-- Claims up to p_limit open transactions that are due and held by nobody alive (or whose lease ended): a new epoch
-- each. Durable before it answers, so that an epoch is never handed out twice.
CREATE OR REPLACE FUNCTION dtx_claim(p_owner text, p_holder bigint, p_limit bigint, p_lease_seconds double precision)
RETURNS TABLE (
    id bigint, status text, mode text, phase text, error_message text, branches text, deadline_at timestamptz,
    attempts integer, created_at timestamptz, lease_epoch bigint
) LANGUAGE sql AS $$
    WITH live AS MATERIALIZED (SELECT dtx_live_holders() AS holder)
    UPDATE worker_events w
    SET lease_owner = p_owner, lease_holder = p_holder, lease_epoch = w.lease_epoch + 1,
        lease_expires_at = now() + make_interval(secs => p_lease_seconds)
    WHERE w.id IN (
        SELECT c.id FROM worker_events c
        WHERE c.open AND c.next_retry_at <= now()
          AND (c.lease_holder IS NULL OR c.lease_expires_at < now() OR c.lease_holder NOT IN (SELECT holder FROM live))
        ORDER BY c.next_retry_at
        LIMIT p_limit
        FOR UPDATE SKIP LOCKED
    )
    RETURNING w.id, w.status, w.mode, w.phase, w.error_message, w.branches::text, w.deadline_at, w.attempts,
              w.created_at, w.lease_epoch;
$$;
