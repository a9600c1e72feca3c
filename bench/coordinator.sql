-- bench/coordinator.sql — the peers' side of the comparison, installed on the
-- bench coordinator by bench/run:
--   psql -v w1='host=127.0.0.1 port=N dbname=bench' -v w2='...' -f bench/coordinator.sql
--
-- * dblink fan-out (bench.dblink_fanout_rr / bench.dblink_fanout_poll): one
--   PL/pgSQL call runs ntasks copies of a query over persistent dblink
--   connections, per_node per worker, each task to the slot that frees up.
-- * PL/Proxy: cluster "bench" with partition 0 = worker 1, partition 1 =
--   worker 2 (SQL/MED server), bench.px_on(k) = RUN ON k (k & 1 picks the
--   partition), bench.px_all(k) = RUN ON ALL; both run SELECT 1 remotely;
--   bench.px_sleep_all() = RUN ON ALL of pg_sleep(30), for the cancel row.
\set ON_ERROR_STOP 1
SET client_min_messages = warning;

CREATE EXTENSION IF NOT EXISTS dblink;
CREATE EXTENSION IF NOT EXISTS plproxy;
CREATE SCHEMA IF NOT EXISTS bench;

CREATE TABLE bench.workers (node int PRIMARY KEY, conninfo text NOT NULL);
INSERT INTO bench.workers VALUES (1, :'w1'), (2, :'w2');

-- Open (once per session) per_node dblink connections to each worker, named
-- w<node>_<slot>; returns the slot names interleaved w1_1, w2_1, w1_2, ...
-- so consecutive tasks alternate between the workers.
CREATE FUNCTION bench.dblink_slots(per_node int) RETURNS text[]
LANGUAGE plpgsql AS $$
DECLARE
    names text[] := '{}';
    open text[] := coalesce(dblink_get_connections(), '{}');
    w record;
BEGIN
    FOR s IN 1..per_node LOOP
        FOR w IN SELECT * FROM bench.workers ORDER BY node LOOP
            IF NOT ('w' || w.node || '_' || s) = ANY (open) THEN
                PERFORM dblink_connect('w' || w.node || '_' || s, w.conninfo);
            END IF;
            names := names || ('w' || w.node || '_' || s);
        END LOOP;
    END LOOP;
    RETURN names;
END $$;

-- Round robin: send one task to every slot, then visit the slots in turn:
-- collect the slot's result (blocking until that task is done), send it the
-- next task.  Slots further on keep running meanwhile.  Returns the number of
-- rows received.
CREATE FUNCTION bench.dblink_fanout_rr(ntasks int, query text, per_node int) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    slots text[] := bench.dblink_slots(per_node);
    nslots int := array_length(slots, 1);
    sent int := 0;
    done int := 0;
    nrows bigint := 0;
    c bigint;
    s int := 1;
BEGIN
    FOR i IN 1..least(nslots, ntasks) LOOP
        PERFORM dblink_send_query(slots[i], query);
        sent := sent + 1;
    END LOOP;
    WHILE done < ntasks LOOP
        SELECT count(*) INTO c FROM dblink_get_result(slots[s]) AS t(x text);
        -- the extra call that returns the empty set and frees the connection
        PERFORM * FROM dblink_get_result(slots[s]) AS t(x text);
        nrows := nrows + c;
        done := done + 1;
        IF sent < ntasks THEN
            PERFORM dblink_send_query(slots[s], query);
            sent := sent + 1;
        END IF;
        s := s % nslots + 1;
    END LOOP;
    RETURN nrows;
END $$;

-- Polling: loop over the slots, collect from every slot that is no longer
-- busy (dblink_is_busy) and give it the next task at once.  Spins while all
-- slots are busy (what a hand-written fan-out without a socket wait does).
CREATE FUNCTION bench.dblink_fanout_poll(ntasks int, query text, per_node int) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    slots text[] := bench.dblink_slots(per_node);
    nslots int := array_length(slots, 1);
    active boolean[] := array_fill(false, ARRAY[nslots]);
    sent int := 0;
    done int := 0;
    nrows bigint := 0;
    c bigint;
BEGIN
    FOR i IN 1..least(nslots, ntasks) LOOP
        PERFORM dblink_send_query(slots[i], query);
        active[i] := true;
        sent := sent + 1;
    END LOOP;
    WHILE done < ntasks LOOP
        FOR s IN 1..nslots LOOP
            IF active[s] AND dblink_is_busy(slots[s]) = 0 THEN
                SELECT count(*) INTO c FROM dblink_get_result(slots[s]) AS t(x text);
                PERFORM * FROM dblink_get_result(slots[s]) AS t(x text);
                nrows := nrows + c;
                done := done + 1;
                active[s] := false;
                IF sent < ntasks THEN
                    PERFORM dblink_send_query(slots[s], query);
                    active[s] := true;
                    sent := sent + 1;
                END IF;
            END IF;
        END LOOP;
    END LOOP;
    RETURN nrows;
END $$;

-- PL/Proxy cluster: partition 0 = worker 1, partition 1 = worker 2.
CREATE SERVER bench FOREIGN DATA WRAPPER plproxy
    OPTIONS (connection_lifetime '3600', p0 :'w1', p1 :'w2');
CREATE USER MAPPING FOR PUBLIC SERVER bench;

-- one remote SELECT 1 on partition (k & 1)
CREATE FUNCTION bench.px_on(k int) RETURNS SETOF int
LANGUAGE plproxy AS $$
    CLUSTER 'bench';
    RUN ON k;
    SELECT 1;
$$;

-- one remote SELECT 1 on every partition, in parallel (k is not used; it
-- only makes the planner call the function once per row of the caller)
CREATE FUNCTION bench.px_all(k int) RETURNS SETOF int
LANGUAGE plproxy AS $$
    CLUSTER 'bench';
    RUN ON ALL;
    SELECT 1;
$$;

-- one remote pg_sleep(30) on every partition, in parallel: row 7 cancels it
CREATE FUNCTION bench.px_sleep_all() RETURNS SETOF text
LANGUAGE plproxy AS $$
    CLUSTER 'bench';
    RUN ON ALL;
    SELECT pg_sleep(30)::text;
$$;
