-- bench/queue_cost.sql — row 8 of bench/run, on one worker:
--   psql -v n=100000 -v job=800001 -v qlen=8 -f bench/queue_cost.sql
--
-- 1. Take advisory lock 4242 in this session and assign as many blocker tasks
--    as the tracker runs at once (citus.max_running_tasks_per_node), each
--    waiting for a shared lock on 4242; wait until they all wait on it.
--    Everything assigned after them stays queued.
-- 2. Queue :n tasks of a query :qlen bytes long with assign_tasks, 1,000 per
--    call, timing each call.
-- 3. Read the tracker's shared memory figures, release the lock and time
--    until wait_for_tasks has reported every task (the drain), then time
--    cleanup_job.
-- Prints one json line.
\set ON_ERROR_STOP 1
SET client_min_messages = warning;
SELECT set_config('bench.n', :'n', false), set_config('bench.job', :'job', false),
       set_config('bench.qlen', :'qlen', false) \gset
SELECT pg_advisory_lock(4242) \gset
SELECT running_limit AS nblock, tasks_capacity AS cap, shared_memory_bytes AS shm,
       query_text_bytes AS text0, tasks_tracked AS tracked0
FROM task_tracker.tracker \gset
SELECT set_config('bench.nblock', :'nblock', false) \gset
SELECT task_tracker.assign_tasks(:job, array_agg(g),
       array_agg('SELECT pg_advisory_xact_lock_shared(4242)'::text))
FROM generate_series(1, :nblock) g \gset
DO $$
DECLARE
    deadline timestamptz := clock_timestamp() + interval '30 s';
BEGIN
    WHILE (SELECT count(*) FROM pg_stat_activity
           WHERE wait_event_type = 'Lock' AND wait_event = 'advisory')
          < current_setting('bench.nblock')::int LOOP
        IF clock_timestamp() > deadline THEN
            RAISE EXCEPTION 'blocker tasks did not start';
        END IF;
        PERFORM pg_sleep(0.005);
        -- pg_stat_activity is a snapshot per transaction: take a new one
        PERFORM pg_stat_clear_snapshot();
    END LOOP;
END $$;
SELECT query_text_bytes AS text0 FROM task_tracker.tracker \gset

CREATE TEMP TABLE qc_assign(queued_before int, tasks int, ms float8);
DO $$
DECLARE
    n int := current_setting('bench.n')::int;
    job bigint := current_setting('bench.job')::bigint;
    qlen int := current_setting('bench.qlen')::int;
    q text := CASE WHEN qlen > 17 THEN 'SELECT length(''' || repeat('x', qlen - 17) || ''')'
                   ELSE 'SELECT 1' END;
    k int := 0;
    b int;
    ids int[];
    qs text[];
    t0 timestamptz;
BEGIN
    WHILE k < n LOOP
        b := least(1000, n - k);
        ids := ARRAY(SELECT 1000 + k + g FROM generate_series(1, b) g);
        qs := array_fill(q, ARRAY[b]);
        t0 := clock_timestamp();
        PERFORM task_tracker.assign_tasks(job, ids, qs);
        INSERT INTO qc_assign VALUES (k, b, extract(epoch FROM clock_timestamp() - t0) * 1000);
        k := k + b;
    END LOOP;
END $$;
SELECT query_text_bytes AS text1, tasks_tracked AS tracked1, shared_memory_bytes AS shm1
FROM task_tracker.tracker \gset

CREATE TEMP TABLE qc_drain(ms float8, failed int, cleanup_ms float8);
DO $$
DECLARE
    total int := current_setting('bench.n')::int + current_setting('bench.nblock')::int;
    job bigint := current_setting('bench.job')::bigint;
    got int := 0;
    bad int := 0;
    c int;
    f int;
    t0 timestamptz;
    t1 timestamptz;
BEGIN
    t0 := clock_timestamp();
    PERFORM pg_advisory_unlock(4242);
    WHILE got < total LOOP
        SELECT count(*), count(*) FILTER (WHERE status <> 'succeeded') INTO c, f
        FROM task_tracker.wait_for_tasks(job, 60000);
        IF c = 0 THEN
            RAISE EXCEPTION 'no task finished within 60 s (% of % reported)', got, total;
        END IF;
        got := got + c;
        bad := bad + f;
    END LOOP;
    t1 := clock_timestamp();
    PERFORM task_tracker.cleanup_job(job);
    INSERT INTO qc_drain VALUES (extract(epoch FROM t1 - t0) * 1000, bad,
                                 extract(epoch FROM clock_timestamp() - t1) * 1000);
END $$;

WITH a AS (SELECT *, row_number() OVER (ORDER BY queued_before DESC) AS from_end FROM qc_assign)
SELECT json_build_object(
    'tasks', :n, 'query_length', :qlen, 'blockers', :nblock,
    'capacity', :cap, 'shared_memory_bytes', :shm,
    'text_bytes_per_task', (:text1 - :text0)::float8 / :n,
    'tracked_while_queued', :tracked1,
    'assign_ms_per_task_first_batch',
        (SELECT ms / tasks FROM a WHERE queued_before = 0),
    'assign_ms_per_task_last_batches',
        (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms / tasks) FROM a WHERE from_end <= 5),
    'assign_ms_total', (SELECT sum(ms) FROM a),
    'drain_ms', d.ms, 'drain_ms_per_task', d.ms / (:n + :nblock),
    'failed', d.failed, 'cleanup_ms', d.cleanup_ms)
FROM qc_drain d;
