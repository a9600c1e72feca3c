#!/usr/bin/env python3
"""bench/report.py RESDIR OUT.json QUICK SECONDS

Turns the measurements bench/run left in RESDIR (one json file per
measurement) into the table printed at the end of the bench and the same
figures in OUT.json.  Every ratio is taken against a yardstick measured in the
same run.  Targets are those of SPEC section 9.
"""
import json
import os
import platform
import statistics
import sys
import time

resdir, out_path, quick, seconds = sys.argv[1], sys.argv[2], sys.argv[3] == "1", int(sys.argv[4])
raw = {}
for name in sorted(os.listdir(resdir)):
    if name.endswith(".json"):
        try:
            with open(os.path.join(resdir, name)) as f:
                raw[name[:-5]] = json.loads(f.read().strip().splitlines()[-1])
        except Exception as e:  # a broken fragment is reported, not fatal
            raw[name[:-5]] = {"na": "unreadable result: %s" % e}

rows = []


def get(key):
    d = raw.get(key)
    if d is None:
        return None, "not measured"
    if "na" in d:
        return None, d["na"]
    return d, None


def fmt_ms(v):
    return "%.3f ms" % v if v < 10 else "%.1f ms" % v


def add(rid, name, figure=None, yard=None, ratio=None, target="", status="", na=None, data=None):
    rows.append({"row": rid, "workload": name, "figure": figure if na is None else "n/a (%s)" % na,
                 "yardstick": yard or "", "ratio": ratio, "target": target,
                 "result": status if na is None else ("MISS" if target else ""), "data": data})


def verdict(ok):
    return "PASS" if ok else "MISS"


# ---------------------------------------------------------------- row 1
r1, na1 = get("r1_raw")
rc, _ = get("r1_raw_coord")
base = r1["median_ms"] if r1 else None
if r1:
    add("1", "raw SELECT 1 round trip, client -> worker (libpq, TCP)",
        "%s (p95 %s)" % (fmt_ms(r1["median_ms"]), fmt_ms(r1["p95_ms"])), "physical yardstick", None,
        data={"worker": r1, "coordinator": rc})
else:
    add("1", "raw SELECT 1 round trip", na=na1)


def lat_row(rid, name, key, target_ratio=None, target_ms=None, yard_ms=base, yard_name="row 1"):
    d, na = get(key)
    if d is None:
        add(rid, name, na=na, target=target_text(target_ratio, target_ms))
        return None
    ratio = d["median_ms"] / yard_ms if yard_ms else None
    ok = True
    if target_ratio is not None:
        ok = ok and ratio is not None and ratio <= target_ratio
    if target_ms is not None:
        ok = ok and d["median_ms"] <= target_ms
    has_target = target_ratio is not None or target_ms is not None
    add(rid, name, "%s (p95 %s)" % (fmt_ms(d["median_ms"]), fmt_ms(d["p95_ms"])),
        "%s %s" % (yard_name, fmt_ms(yard_ms)) if yard_ms else "", ratio,
        target_text(target_ratio, target_ms), verdict(ok) if has_target else "", data=d)
    return d


def target_text(tr, tm):
    parts = []
    if tm is not None:
        parts.append("<= %g ms" % tm)
    if tr is not None:
        parts.append("<= %gx" % tr)
    return " and ".join(parts)


# ---------------------------------------------------------------- row 2
# 2a's yardstick is the persistent dblink call of the same run (SPEC 9): what
# an in-server caller can reach today; the floor (2h) is printed next to it
dbl2, _ = get("r2_dblink")
fl, _ = get("r2_floor")
lat_row("2a", "one trivial task, real-time, warm (in coordinator)", "r2_real_time", 1.0,
        yard_ms=dbl2["median_ms"] if dbl2 else None, yard_name="dblink (2e)")
if fl and base and rows[-1]["data"]:
    rows[-1]["figure"] += "; floor %s" % fmt_ms(fl["median_ms"] + base)
lat_row("2b", "one trivial task, task-tracker, warm (in coordinator)", "r2_task_tracker", 7, 0.5)
client_yard = (rc["median_ms"] + base) if (rc and base) else None
lat_row("2c", "  real-time, end to end from the client", "r2_real_time_client",
        yard_ms=client_yard, yard_name="client->coord + row 1")
lat_row("2d", "  task-tracker, end to end from the client", "r2_task_tracker_client",
        yard_ms=client_yard, yard_name="client->coord + row 1")
lat_row("2e", "  peer: persistent dblink call (in coordinator)", "r2_dblink")
lat_row("2f", "  peer: PL/Proxy RUN ON 0 (in coordinator)", "r2_plproxy")
lat_row("2g", "  the in-server loop alone: EXECUTE of a local SELECT 1", "r2_loop")
# the best any in-server caller can do: the loop calling a local one-row SRF
# (no remote work) plus one raw round trip
if fl and base:
    add("2h", "  floor: row 1 + the loop calling a local one-row SRF",
        "%s (SRF loop %s)" % (fmt_ms(fl["median_ms"] + base), fmt_ms(fl["median_ms"])),
        "row 1 %s" % fmt_ms(base), (fl["median_ms"] + base) / base, "", "", data=fl)
else:
    add("2h", "  floor: row 1 + the loop calling a local one-row SRF", na="not measured")

# ---------------------------------------------------------------- row 3
lat_row("3", "tracker alone: assign_task -> wait_for_tasks succeeded (in worker)", "r3_tracker",
        target_ms=0.3, yard_ms=None)
lat_row("3b", "  the same from a client, one round trip per task", "r3_tracker_client")

# ---------------------------------------------------------------- row 4
ntasks = 10000


def tput(key, tasks=ntasks):
    d, na = get(key)
    if d is None:
        return None, na
    return tasks / (d["median_ms"] / 1000.0), d


# the yardstick: the best hand-written dblink fan-out of the same run
dbl = [t for t in (tput("r4_dblink_rr")[0], tput("r4_dblink_poll")[0], tput("r4_dblink_poll4")[0]) if t]
best_dbl = max(dbl) if dbl else None
yard4 = "best dblink %.0f/s" % best_dbl if best_dbl else ""
for rid, name, key, tgt in (("4a", "10,000 trivial tasks, real-time", "r4_real_time", 1.0),
                            ("4b", "10,000 trivial tasks, task-tracker", "r4_task_tracker", 0.5),
                            ("4c", "  dblink fan-out, round robin, 8 conns/worker", "r4_dblink_rr", None),
                            ("4d", "  dblink fan-out, dblink_is_busy polling, 8 conns/worker", "r4_dblink_poll", None),
                            ("4d'", "  dblink fan-out, dblink_is_busy polling, 4 conns/worker", "r4_dblink_poll4", None),
                            ("4e", "  PL/Proxy RUN ON <g>, 8 sessions x 1,250 calls", "r4_plproxy_on", None),
                            ("4f", "  PL/Proxy RUN ON ALL, 8 sessions x 625 calls", "r4_plproxy_all", None)):
    t, d = tput(key)
    target = ">= %gx" % tgt if tgt else ""
    if t is None:
        add(rid, name, na=d, target=target)
        continue
    ratio = t / best_dbl if best_dbl else None
    ok = None
    if tgt:
        ok = ratio is not None and ratio >= tgt
    add(rid, name, "%.0f tasks/s (median of %d, %s/run)" % (t, d["n"], fmt_ms(d["median_ms"])), yard4, ratio,
        target, verdict(ok) if ok is not None else "", data=d)

# ---------------------------------------------------------------- row 5
ideal = 200.0
lat_row("5a", "64 x pg_sleep(0.05), 8 per node, real-time", "r5_real_time", 1.05, yard_ms=ideal, yard_name="ideal")
lat_row("5b", "64 x pg_sleep(0.05), 8 per node, task-tracker", "r5_task_tracker", 1.10, yard_ms=ideal,
        yard_name="ideal")
lat_row("5c", "  dblink fan-out, 8 conns/worker", "r5_dblink", yard_ms=ideal, yard_name="ideal")

# ---------------------------------------------------------------- row 6
d, na = get("r6_idle")
if d is None:
    add("6", "idle tracker wake-ups per idle minute", na=na, target="<= 1/min")
else:
    per_min = lambda v: v * 60.0 / d["window_s"]
    worst_node = max(("coord", "w1", "w2"), key=lambda n: d.get(n + "_ctxt", 0))
    worst = per_min(d[worst_node + "_ctxt"])
    cron = per_min(d["cron_ctxt"])
    add("6", "idle tracker: voluntary context switches per idle minute (worst of 3)",
        "%.1f/min (%s; ctxt %s; own wakeups counter %s)" % (
            worst, worst_node, "/".join(str(d[n + "_ctxt"]) for n in ("coord", "w1", "w2")),
            "/".join(str(d.get(n + "_wakeups")) for n in ("coord", "w1", "w2"))),
        "pg_cron launcher %.1f/min" % cron, worst / cron if cron else None, "<= 1/min", verdict(worst <= 1), data=d)

# ---------------------------------------------------------------- row 7
# server clocks: pg_cancel_backend's clock_timestamp() on the coordinator to
# the last "canceling statement" line (%n) in the workers' logs; no polling
lat_row("7a", "cancel: pg_cancel_backend -> last remote stop, real-time", "r7_real_time", target_ms=20,
        yard_ms=None)
lat_row("7b", "cancel: pg_cancel_backend -> last remote stop, task-tracker", "r7_task_tracker", target_ms=20,
        yard_ms=None)
lat_row("7c", "  peer: PL/Proxy RUN ON ALL, same method", "r7_plproxy", yard_ms=None)
d, na = get("r7_dblink_rr")
if d is None:
    add("7d", "  dblink fan-out (reference)", na=na)
else:
    add("7d", "  dblink fan-out (reference)",
        "not stopped within 10 s" if d["median_ms"] >= 10000 else "%s" % fmt_ms(d["median_ms"]), data=d)

# ---------------------------------------------------------------- row 8
w1shm = raw.get("r8_w1_shm") or {}
qs = {k: get(k)[0] for k in ("r8_short_1k", "r8_short_1k_2", "r8_short_1k_3", "r8_long_1k", "r8_short_large")}
slot = None
anyq = next((v for v in qs.values() if v), None)
if anyq and w1shm.get("capacity") and anyq["capacity"] != w1shm["capacity"]:
    slot = (anyq["shared_memory_bytes"] - w1shm["shared_memory_bytes"]) / float(
        anyq["capacity"] - w1shm["capacity"])
for rid, key, label in (("8a", "r8_short_1k", "short query"), ("8b", "r8_long_1k", "10 KB query")):
    q = qs[key]
    if q is None or slot is None:
        add(rid, "memory per tracked task, " + label, na=get(key)[1] or "no slot size", target="<= 512 B + query")
        continue
    per_task = slot + q["text_bytes_per_task"]
    over = per_task - q["query_length"]
    add(rid, "memory per tracked task, %s (%d B)" % (label, q["query_length"]),
        "%.0f B = %.0f slot + %.0f text" % (per_task, slot, q["text_bytes_per_task"]),
        "512 B + %d B query" % q["query_length"], per_task / (512 + q["query_length"]),
        "<= 512 B + query", verdict(over <= 512),
        data={"slot_bytes": slot, "text_bytes_per_task": q["text_bytes_per_task"],
              "shared_memory_bytes_per_capacity": q["shared_memory_bytes"] / q["capacity"]})
small = [qs[k] for k in ("r8_short_1k", "r8_short_1k_2", "r8_short_1k_3") if qs[k]]
large = qs["r8_short_large"]
nlarge = large["tasks"] if large else 0
for rid, what, fs, fl in (("8c", "assign_tasks cost per task", "assign_ms_per_task_first_batch",
                           "assign_ms_per_task_last_batches"),
                          ("8d", "drain (scheduling) cost per task", "drain_ms_per_task", "drain_ms_per_task")):
    if not small or not large:
        add(rid, what, na=get("r8_short_large")[1] or get("r8_short_1k")[1], target="flat (<= 1.25x)")
        continue
    s = statistics.median(x[fs] for x in small)
    l = large[fl]
    add(rid, "%s at %d vs 1,000 queued" % (what, nlarge),
        "%.2f us at %d" % (l * 1000, nlarge), "%.2f us at 1,000" % (s * 1000), l / s if s else None,
        "flat (<= 1.25x)", verdict(s and l / s <= 1.25), data={"at_1000": s, "at_large": l, "large": nlarge})

# ---------------------------------------------------------------- row 9
c, na = get("r9_copy")
if c is None:
    add("9", "1,000,000-row result", na=na)
else:
    mb = c["bytes"] / 1e6
    add("9", "raw COPY ... TO STDOUT, 1,000,000 rows (%.0f MB)" % mb,
        "%s (%.0f MB/s)" % (fmt_ms(c["median_ms"]), mb / (c["median_ms"] / 1000)), "yardstick", None, data=c)
    for rid, name, key, tr in (("9a", "  run_job real-time, count(*) on the coordinator", "r9_real_time", 1.5),
                               ("9b", "  run_job task-tracker, count(*) on the coordinator", "r9_task_tracker", 2),
                               ("9c", "  tracker alone: assign + wait + task_result count(*)", "r9_tracker", None)):
        d = lat_row(rid, name, key, tr, yard_ms=c["median_ms"], yard_name="COPY")
        if d:
            rows[-1]["figure"] += " %.0f MB/s" % (mb / (d["median_ms"] / 1000))

# ---------------------------------------------------------------- row 10
for rid, ex in (("10a", "real_time"), ("10b", "task_tracker")):
    name = "4/16/64 sessions of 16-task jobs, %s: jobs/s (failed)" % ex.replace("_", "-")
    runs = {c: get("r10_%s_%d" % (ex, c)) for c in (4, 16, 64)}
    na = next((r[1] for r in runs.values() if r[0] is None), None)
    if na is not None:
        add(rid, name, na=na, target=">= 0.8x, 0 failed")
        continue
    d = {c: r[0] for c, r in runs.items()}
    failed = sum(x["failed"] for x in d.values())
    ratio = d[64]["jobs_per_s"] / d[4]["jobs_per_s"] if d[4]["jobs_per_s"] else None
    add(rid, name, "  ".join("%d: %.1f/s (%d)" % (c, d[c]["jobs_per_s"], d[c]["failed"]) for c in (4, 16, 64)) +
        "; every session's first job done after %s s" % "/".join(
            "-" if d[c].get("first_all_s") is None else "%.1f" % d[c]["first_all_s"] for c in (4, 16, 64)),
        "4 sessions %.1f/s" % d[4]["jobs_per_s"], ratio, ">= 0.8x, 0 failed",
        verdict(ratio is not None and ratio >= 0.8 and failed == 0), data=d)

# ---------------------------------------------------------------- print
headers = ["row", "workload", "figure", "yardstick", "ratio", "target", "result"]
table = []
for r in rows:
    table.append([r["row"], r["workload"], r["figure"], r["yardstick"],
                  "" if r["ratio"] is None else "%.2fx" % r["ratio"], r["target"], r["result"]])
widths = [max(len(h), *(len(t[i]) for t in table)) for i, h in enumerate(headers)]
widths[2] = min(widths[2], 60)


def line(cells):
    return " | ".join(str(c).ljust(w) if i < 6 else str(c) for i, (c, w) in enumerate(zip(cells, widths)))


print()
print("task_tracker bench (%s mode, %d s, %s, %d cores)" % ("quick" if quick else "full", seconds,
                                                             platform.node(), os.cpu_count()))
print(line(headers))
print("-+-".join("-" * w for w in widths))
for t in table:
    print(line(t))
missed = [r["row"] for r in rows if r["result"] == "MISS"]
passed = [r["row"] for r in rows if r["result"] == "PASS"]
print()
print("%d targets met, %d missed%s" % (len(passed), len(missed), (": " + ", ".join(missed)) if missed else ""))

with open(out_path, "w") as f:
    json.dump({"generated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "mode": "quick" if quick else "full",
               "seconds": seconds, "cores": os.cpu_count(), "rows": rows, "measurements": raw,
               "targets_met": passed, "targets_missed": missed}, f, indent=1)
