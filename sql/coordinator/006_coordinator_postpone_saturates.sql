-- A postpone counts one more attempt without overflowing (replaces dtx_postpone of 002; 002 stays as applied). Apply by
-- hand with:
--   psql -v ON_ERROR_STOP=1 -d DB -f sql/coordinator/006_coordinator_postpone_saturates.sql
--
-- attempts is an integer an operator may have set by hand: at 2147483647, `attempts + 1` raised "integer out of
-- range", every postpone of the row failed, and the row was driven once per lease instead of after its backoff.

CREATE OR REPLACE FUNCTION dtx_postpone(
    p_id bigint, p_epoch bigint, p_expected_phase text, p_branches jsonb, p_delay_seconds double precision
) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    UPDATE worker_events
    SET branches = p_branches, attempts = least(attempts, 2147483646) + 1, updated_at = now(),
        next_retry_at = now() + make_interval(secs => p_delay_seconds), lease_holder = NULL, lease_expires_at = NULL
    WHERE id = p_id AND lease_epoch = p_epoch AND phase = p_expected_phase;
    RETURN FOUND;
END;
$$;
