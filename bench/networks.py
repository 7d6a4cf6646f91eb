"""bench/networks.py: thousands of known networks (issue 22), `--only networks`.

For 100, 2,000 and 20,000 known networks (each with an `observe` latency
reading for each of the example's 8 SRV targets), on one database per size
built once and copied for each binary:

1. One pipe (`--algorithm least-latency`, ABI 3) asked for the example's SRV
   by clients from random known networks (ECS /32), one question at a time,
   for --networks-duration seconds, while another process commits 50
   readings every 100 ms as observe rounds do. Lookups per second, p50,
   p99, the slowest lookup, and the pipe's peak memory (VmHWM).
2. The same with `--memcached` on a local memcached that holds an
   `observe` reading for every (network, target), with clients from 100
   distinct networks: keys fetched per second by that one pipe (memcached's
   own `cmd_get`, sizes and values both counted) and the slowest lookup.
3. What a round of `observe` costs in SQLite at that size: the statements
   src/state/writer.rs runs per network (read the row, upsert it), for every
   network, in one transaction; and what `pdns-ha status` prints and takes.

With --baseline, each part also runs the older binary (e.g. 0accc5b, built
by bench/run.sh with BASELINE_REV) on a copy of the same database without
the change log (as that version's `init` made it), in the same sitting. Times include the Python driver's own round trip (write, read,
parse). Writes bench/results-networks.md.
"""
import array
import gc
import multiprocessing
import os
import random
import shutil
import socket
import sqlite3
import subprocess
import time

import large

TARGETS = [f"sip{i}.example.com" for i in range(1, 9)]
SIZES = [100, 2_000, 20_000]
SRV = "_sip._udp.example.com"


def cidr(i):
    return f"10.{i // 256}.{i % 256}.0/24"


def build_db(bin_, path, n, example_sql):
    for f in (path, path + "-wal", path + "-shm"):
        if os.path.exists(f):
            os.remove(f)
    subprocess.run([bin_, "init", "--db", path, example_sql], check=True, stdout=subprocess.DEVNULL)
    db = sqlite3.connect(path, isolation_level=None)
    now = time.time()
    db.execute("BEGIN")
    db.executemany("INSERT INTO ha_networks (cidr, name) VALUES (?, ?)",
                   ((cidr(i), f"site{i}") for i in range(n)))
    db.executemany("INSERT INTO ha_latency (network, target, source, mean_ms, ewma_ms, samples, updated, callers) "
                   "VALUES (?, ?, 'observe', ?, ?, 10, ?, 5)",
                   ((cidr(i), t, 10.0 + k * 5 + i % 7, 10.0 + k * 5 + i % 7, now)
                    for i in range(n) for k, t in enumerate(TARGETS)))
    for k, t in enumerate(TARGETS):
        db.execute("INSERT OR REPLACE INTO ha_health (target, monitor, up, updated) VALUES (?, 'bench', 1, ?)", (t, now))
        db.execute("INSERT OR REPLACE INTO ha_load (target, sessions, max_sessions, updated) VALUES (?, ?, 1000, ?)",
                   (t, (k + 1) * 50, now))
    db.execute("COMMIT")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


UPSERT = ("INSERT INTO ha_latency (network, target, source, mean_ms, ewma_ms, samples, timeouts, updated, callers, monitor) "
          "VALUES (?1, ?2, 'observe', ?3, ?4, ?5, 0, ?6, 5, 'bench') ON CONFLICT (network, target, source) DO UPDATE SET "
          "mean_ms = ?3, ewma_ms = ?4, samples = ?5, updated = ?6, callers = 5, monitor = 'bench'")
SELECT = "SELECT mean_ms, ewma_ms, samples, timeouts FROM ha_latency WHERE network = ? AND target = ? AND source = 'observe'"


def observe_round(db, networks, target, rng):
    """What observe's round does per network (src/observe/mod.rs through
    src/state/writer.rs): read the row, fold the sample in, upsert it."""
    for net in networks:
        old = db.execute(SELECT, (net, target)).fetchone()
        ms = 10.0 + rng.random() * 30
        n = (old[2] if old else 0) + 1
        mean = ms if not old else old[0] + (ms - old[0]) / n
        ewma = mean if n < 10 or not old else old[1] * 0.9 + ms * 0.1
        db.execute(UPSERT, (net, target, mean, ewma, n, time.time()))


def writer(db_path, n, stop, written):
    """50 readings every 100 ms, one transaction each, as observe rounds do."""
    db = sqlite3.connect(db_path, isolation_level=None, timeout=5)
    rng = random.Random(3)
    i, next_t = 0, time.monotonic()
    while not stop.is_set():
        db.execute("BEGIN IMMEDIATE")
        for _ in range(50):
            observe_round(db, [cidr(rng.randrange(n))], rng.choice(TARGETS), rng)
        db.execute("COMMIT")
        i += 1
        written.value = i * 50
        next_t += 0.1
        time.sleep(max(0.0, next_t - time.monotonic()))
    db.close()


class Writer:
    def __init__(self, db_path, n):
        ctx = multiprocessing.get_context("fork")
        self.stop, self.written = ctx.Event(), ctx.Value("l", 0)
        self.proc = ctx.Process(target=writer, args=(db_path, n, self.stop, self.written))
        self.proc.start()

    def finish(self):
        self.stop.set()
        self.proc.join()
        return self.written.value


def question(i, rng):
    net = cidr(i)
    client = net.rsplit(".", 1)[0] + f".{rng.randrange(1, 255)}"
    return f"Q\t{SRV}\tIN\tSRV\t-1\t{client}\t127.0.0.1\t{client}/32\n".encode()


def stream(cmd, db_path, n, duration, log, distinct=None, mc_port=None):
    rng = random.Random(1)
    nets = rng.sample(range(n), distinct) if distinct else None
    p = large.Pipe(cmd, log)
    p.ask(b"HELO\t3\n")
    lat = array.array("q")
    w = Writer(db_path, n)
    gets0 = memcached_stat(mc_port, "cmd_get") if mc_port else 0
    gc.disable()
    start = time.perf_counter()
    end = start + duration
    try:
        while time.perf_counter() < end:
            i = rng.choice(nets) if nets else rng.randrange(n)
            out, ns = p.ask(question(i, rng))
            lat.append(ns)
    finally:
        gc.enable()
        elapsed = time.perf_counter() - start
        written = w.finish()
    gets = (memcached_stat(mc_port, "cmd_get") - gets0) if mc_port else None
    mem = large.smaps_rollup(p.proc.pid)
    p.close()
    ms = sorted(x / 1e6 for x in lat)
    return dict(lookups=len(lat), per_s=len(lat) / elapsed, p50=large.pct(ms, 0.5), p99=large.pct(ms, 0.99),
                max=ms[-1] if ms else float("nan"), over50=sum(1 for x in ms if x > 50),
                hwm=mem["VmHWM"], private=mem["Private"], written=written,
                keys_per_s=gets / elapsed if gets is not None else None)


def memcached_stat(port, name):
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"stats\r\n")
        buf = b""
        while not buf.endswith(b"END\r\n"):
            buf += s.recv(65536)
    for line in buf.decode().splitlines():
        f = line.split()
        if len(f) == 3 and f[1] == name:
            return int(f[2])
    raise SystemExit(f"memcached has no stat {name}")


def start_memcached(n):
    port = large_free_port()
    args = ["memcached", "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-m", "256", "-t", "1"]
    if os.geteuid() == 0:
        args += ["-u", "root"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 5
    while True:
        try:
            socket.create_connection(("127.0.0.1", port)).close()
            break
        except OSError:
            if time.time() > deadline:
                raise SystemExit("memcached did not start")
            time.sleep(0.05)
    # What observe publishes: one latency key per (network, target).
    now = time.time()
    with socket.create_connection(("127.0.0.1", port)) as s:
        batch = []
        for i in range(n):
            for k, t in enumerate(TARGETS):
                v = f"{10.0 + k * 5} {10.0 + k * 5} 10 0 {now} 5".encode()
                key = f"pdns-ha:latency:{cidr(i)}|{t}|observe".encode()
                batch.append(b"set %s 0 0 %d noreply\r\n%s\r\n" % (key, len(v), v))
                if len(batch) >= 1000:
                    s.sendall(b"".join(batch))
                    batch = []
        s.sendall(b"".join(batch))
    memcached_stat(port, "curr_items")  # every set above is in before this answers
    return proc, port


def large_free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def without_log(db_path):
    """The database as the baseline's `pdns-ha init` made it: no change log."""
    db = sqlite3.connect(db_path, isolation_level=None)
    for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'ha_log_%'").fetchall():
        db.execute(f"DROP TRIGGER {name}")
    db.execute("DROP TABLE ha_log")
    db.close()


def round_cost(db_path, n):
    """Seconds for one observe round over every network, one transaction."""
    db = sqlite3.connect(db_path, isolation_level=None, timeout=5)
    rng = random.Random(4)
    nets = [cidr(i) for i in range(n)]
    t = time.perf_counter()
    db.execute("BEGIN IMMEDIATE")
    observe_round(db, nets, TARGETS[0], rng)
    db.execute("COMMIT")
    took = time.perf_counter() - t
    db.close()
    return took


def status_cost(bin_, db_path):
    t = time.perf_counter()
    out = subprocess.run([bin_, "status", "--db", db_path, "--stale-after", "100000000"],
                         capture_output=True, text=True)
    took = time.perf_counter() - t
    return took, len(out.stdout), out.returncode


def run(args, bins, example_sql, workdir, forever):
    sizes = [int(s) for s in args.networks_sizes.split(",")] if args.networks_sizes else SIZES
    log = open(os.path.join(workdir, "networks-stderr.log"), "w")
    rows = []
    for n in sizes:
        base = os.path.join(workdir, f"networks-{n}.db")
        build_db(bins[0][1], base, n, example_sql)
        mc = start_memcached(n) if n == max(sizes) else None
        for label, bin_ in bins:
            db = os.path.join(workdir, f"networks-{n}-{label}.db")
            for f in (db + "-wal", db + "-shm"):
                if os.path.exists(f):
                    os.remove(f)
            shutil.copy(base, db)
            if label != bins[0][0]:
                without_log(db)
            cmd = [bin_, "--db", db, "--stale-after", forever, "--algorithm", "least-latency"]
            r = dict(label=label, n=n)
            r.update(stream(cmd, db, n, args.networks_duration, log))
            print(f"networks {n} {label}: {r['per_s']:.0f} lookups/s, p50 {r['p50']:.3f} p99 {r['p99']:.3f} "
                  f"max {r['max']:.1f} ms ({r['over50']} over 50 ms), VmHWM {r['hwm']} KiB, private {r['private']} KiB, "
                  f"{r['written']} readings written", flush=True)
            r["round_s"] = round_cost(db, n)
            r["status_s"], r["status_bytes"], rc = status_cost(bin_, db)
            print(f"networks {n} {label}: observe round over {n} networks {r['round_s']:.3f} s; "
                  f"status {r['status_s']:.2f} s, {r['status_bytes']} bytes (exit {rc})", flush=True)
            if mc:
                proc, port = mc
                mcmd = cmd + ["--memcached", f"127.0.0.1:{port}"]
                m = stream(mcmd, db, n, args.networks_duration, log, distinct=100, mc_port=port)
                r["mc"] = m
                print(f"networks {n} {label} memcached, 100 client networks: {m['keys_per_s']:.0f} keys/s, "
                      f"{m['per_s']:.0f} lookups/s, p99 {m['p99']:.3f} max {m['max']:.1f} ms, "
                      f"VmHWM {m['hwm']} KiB", flush=True)
            rows.append(r)
        if mc:
            mc[0].terminate()
            mc[0].wait()
    log.close()
    write_report(args, rows, bins)
    return rows


def write_report(args, rows, bins):
    base100 = {r["label"]: r["per_s"] for r in rows if r["n"] == min(r2["n"] for r2 in rows)}
    lines = ["# Thousands of networks (bench/run.sh --only networks)", "",
             f"One sitting, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; binaries: "
             + ", ".join(f"{l} = {b}" for l, b in bins) + f"; {args.networks_duration} s per run.", "",
             "| binary | known networks (× 8 targets) | lookups/s | vs fewest networks | p50 ms | p99 ms | slowest ms "
             "| lookups over 50 ms | VmHWM MiB | observe round s | status s (bytes) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['label']} | {r['n']:,} | {r['per_s']:,.0f} | {r['per_s'] / base100[r['label']]:.2f}× | "
                     f"{r['p50']:.3f} | {r['p99']:.3f} | {r['max']:.1f} | {r['over50']} of {r['lookups']:,} | "
                     f"{r['hwm'] / 1024:.1f} | "
                     f"{r['round_s']:.3f} | {r['status_s']:.2f} ({r['status_bytes']:,}) |")
    mc = [r for r in rows if "mc" in r]
    if mc:
        lines += ["", "With `--memcached`, clients from 100 distinct networks:", "",
                  "| binary | known networks | keys fetched/s (cmd_get) | lookups/s | p99 ms | slowest ms "
                  "| lookups over 50 ms | VmHWM MiB |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in mc:
            m = r["mc"]
            lines.append(f"| {r['label']} | {r['n']:,} | {m['keys_per_s']:,.0f} | {m['per_s']:,.0f} | {m['p99']:.3f} | "
                         f"{m['max']:.1f} | {m['over50']} of {m['lookups']:,} | {m['hwm'] / 1024:.1f} |")
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results-networks.md")
    with open(out, "w") as f:
        f.write(text)
