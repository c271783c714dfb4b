-- dtx coordinator database. Apply by hand with:
--   psql -v ON_ERROR_STOP=1 -d DB -f sql/coordinator/001_coordinator_schema.sql
-- The coordinator applies the same file at start-up (recorded in schema_migrations). Safe to run twice.

-- One row per global transaction (the documented worker_events table).
-- status: pending -> completed; pending -> failed (TCC, XA: final); pending -> failed -> compensated (Saga).
-- The documented enum forgot 'compensated', which the documented code sets: it is here.
-- phase is the controller's own log (the documented service='TCCController' rows):
--   TCC  try -> confirm_pending (commit point) -> confirm | try -> cancel
--   Saga reserve -> confirm (commit point: every step reserved) | reserve -> compensate
-- A transaction is final when its status says so; the phase then tells which way it went.
--   XA   prepare -> commit (commit point) | prepare -> rollback
-- branches holds every branch with its state, attempts and last error (the equivalent of a branch table,
-- written in the same UPDATE as the phase so that a phase change is one write).
CREATE TABLE IF NOT EXISTS worker_events (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    status           text        NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'completed', 'failed', 'compensated')),
    error_message    text,
    mode             text        NOT NULL CHECK (mode IN ('tcc', 'saga', 'xa')),
    phase            text        NOT NULL CHECK (phase IN (
        'try', 'confirm_pending', 'confirm', 'cancel',
        'reserve', 'compensate',
        'prepare', 'commit', 'rollback')),
    request          jsonb       NOT NULL,
    branches         jsonb       NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    -- deadline of the first phase (try / reserve / prepare): past it the transaction is aborted
    deadline_at      timestamptz NOT NULL,
    attempts         integer     NOT NULL DEFAULT 0,
    next_retry_at    timestamptz NOT NULL DEFAULT now(),
    lease_owner      text,
    lease_expires_at timestamptz
);

-- The recovery loop's scan: transactions that are not final, by next attempt time.
CREATE INDEX IF NOT EXISTS worker_events_recovery_idx
    ON worker_events (next_retry_at)
    WHERE status = 'pending' OR (status = 'failed' AND mode = 'saga');

-- GET /v1/transactions?status=
CREATE INDEX IF NOT EXISTS worker_events_status_idx ON worker_events (status, id DESC);
