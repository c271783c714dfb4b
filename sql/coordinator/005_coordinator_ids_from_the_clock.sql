-- A new log's transaction ids start from the clock, so that they never repeat ids an earlier log handed out to the
-- same participants. Apply by hand with:
--   psql -v ON_ERROR_STOP=1 -d DB -f sql/coordinator/005_coordinator_ids_from_the_clock.sql
--
-- Participants know a branch by its coordinator's transaction id. A log that starts again from 1 (a coordinator given
-- a new, empty database while its participants keep theirs: a reset, a restore of an old backup, a second
-- installation) hands out ids they have seen: a try for such an id finds the old branch's barrier row and is answered
-- as its duplicate, and no stock moves, while the coordinator takes it as done. So an empty log starts at the current
-- time in milliseconds times 1,000 (about 1.8e15 in 2026): an earlier log would have had to hand out more than
-- 1,000 ids a millisecond, every millisecond since it began, to reach it. Ids below that start were never handed out
-- here: pruned_through moves to just below it, so asking about one is answered "not found" (the outcome is not known
-- here), never "never began" (presumed abort), which a participant would act on. (The benchmark's baselines use ids
-- from 9e15 up, which this reaches in the 23rd century.)
--
-- A log that has rows keeps its numbering.

UPDATE worker_event_ids
SET next_id = greatest(next_id, (extract(epoch FROM now()) * 1000)::bigint * 1000),
    pruned_through = greatest(pruned_through, (extract(epoch FROM now()) * 1000)::bigint * 1000 - 1)
WHERE NOT EXISTS (SELECT 1 FROM worker_events);
