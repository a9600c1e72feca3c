-- Latency from assign_task to wait_for_tasks seeing "succeeded", one
-- "SELECT 1" task at a time; prints median and p95 in milliseconds.
-- Usage: psql -v n=1000 -v job=900000001 -f bench/tracker_latency.sql
CREATE TEMP TABLE tt_lat(ms float8);
SELECT set_config('tt_bench.n', :'n', false), set_config('tt_bench.job', :'job', false) \gset
DO $$
DECLARE
    t0 timestamptz;
    job bigint := current_setting('tt_bench.job')::bigint;
    r record;
BEGIN
    FOR i IN 1..current_setting('tt_bench.n')::int LOOP
        t0 := clock_timestamp();
        PERFORM task_tracker.assign_task(job, i, 'SELECT 1');
        SELECT * INTO r FROM task_tracker.wait_for_tasks(job, 10000);
        IF r.status IS DISTINCT FROM 'succeeded' THEN
            RAISE EXCEPTION 'task % ended %', i, r.status;
        END IF;
        INSERT INTO tt_lat VALUES (extract(epoch FROM clock_timestamp() - t0) * 1000);
    END LOOP;
    PERFORM task_tracker.cleanup_job(job);
END $$;
SELECT count(*) AS tasks,
       round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 3) AS median_ms,
       round(percentile_cont(0.95) WITHIN GROUP (ORDER BY ms)::numeric, 3) AS p95_ms
FROM tt_lat;
