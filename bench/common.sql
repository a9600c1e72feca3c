-- bench/common.sql — installed by bench/run in database "bench" of every
-- bench node.
--
-- bench.time_calls(stmts, n, warmup, expect, every, every_stmt) runs the
-- statements of stmts one after the other, n times (after warmup untimed
-- rounds), inside this backend, and times each round with clock_timestamp().
-- "{i}" in a statement is replaced by the round number (1, 2, ...).  When
-- expect is not NULL, the first column of the last statement's first row
-- must equal it.  every_stmt runs, untimed, after every every-th round (a
-- cleanup).  Returns {"n", "median_ms", "p95_ms", "min_ms", "max_ms",
-- "mean_ms"} as json.
--
-- This measures what a caller inside the server sees — the way the peers'
-- figures of SPEC §9 were taken (a persistent dblink call in a loop) — so the
-- client's own round trip to this server is not part of the figure.
\set ON_ERROR_STOP 1
SET client_min_messages = warning;
CREATE SCHEMA IF NOT EXISTS bench;

CREATE FUNCTION bench.time_calls(stmts text[], n int, warmup int DEFAULT 1,
                                 expect text DEFAULT NULL, every int DEFAULT 0,
                                 every_stmt text DEFAULT NULL)
RETURNS json
LANGUAGE plpgsql AS $$
DECLARE
    ms float8[] := '{}';
    t0 timestamptz;
    t1 timestamptz;
    v text;
    s text;
BEGIN
    FOR i IN 1..warmup + n LOOP
        t0 := clock_timestamp();
        FOREACH s IN ARRAY stmts LOOP
            EXECUTE replace(s, '{i}', i::text) INTO v;
        END LOOP;
        t1 := clock_timestamp();
        IF expect IS NOT NULL AND v IS DISTINCT FROM expect THEN
            RAISE EXCEPTION 'round %: got %, expected %', i, v, expect;
        END IF;
        IF i > warmup THEN
            ms := ms || (extract(epoch FROM t1 - t0) * 1000)::float8;
        END IF;
        IF every > 0 AND i % every = 0 THEN
            EXECUTE replace(every_stmt, '{i}', i::text);
        END IF;
    END LOOP;
    RETURN (SELECT json_build_object(
                'n', count(*),
                'median_ms', percentile_cont(0.5) WITHIN GROUP (ORDER BY x),
                'p95_ms', percentile_disc(0.95) WITHIN GROUP (ORDER BY x),
                'min_ms', min(x), 'max_ms', max(x), 'mean_ms', avg(x))
            FROM unnest(ms) x);
END $$;
