"""bench/large.py: the large-zone scenario of bench/run.py (`--only large`).

A database of the example plus one zone of N A records (1,000,000 by
default), built in one SQLite transaction. Then, for the binary under test
and, with --baseline, for an older build on a copy of the same database:

1. Start-up: spawn to first answer of a pipe process, three times.
2. A pipe answering a recorded pdns question stream over the zone's names
   (hot names, cold names, misses, the example's SRV with its SOA walk and
   additional-section lookups), one line at a time, each answer timed, while
   a separate process writes a latency reading 10 times a second as
   `pdns-ha metric latency` does. Half-way, one operator edit of a hot record:
   time until the pipe serves it and the slowest lookup around it. After the
   stream, the pipe's own memory (smaps_rollup) and its `CMD status`.
3. pdns_server (caches off, pipe ABI 3) over the same database with a
   monitor-like writer committing a round of readings every second, driven
   by dnsperf: qps, latency, response codes (SERVFAIL must be 0), and each
   coprocess's memory.

Times include the Python driver's own round trip (write, read, parse); the C
responder answering the same stream gives that floor.
"""
import array
import gc
import multiprocessing
import os
import random
import shutil
import sqlite3
import subprocess
import time

TARGETS = [f"sip{i}.example.com" for i in range(1, 9)]
NETS = ["198.51.100.0/24", "203.0.113.0/24"]
EDIT_NAME = "h77.big.example"
EDIT_OLD, EDIT_NEW = "10.0.0.77", "192.0.2.77"
HOT = 1000  # names h0..h999 take most questions, as real traffic does


def build_db(bin_, path, n, example_sql):
    """The example plus zone big.example with n A records h0..h(n-1), one
    transaction; readings for every target. Returns seconds taken."""
    for f in (path, path + "-wal", path + "-shm"):
        if os.path.exists(f):
            os.remove(f)
    t = time.perf_counter()
    subprocess.run([bin_, "init", "--db", path, example_sql], check=True, stdout=subprocess.DEVNULL)
    db = sqlite3.connect(path, isolation_level=None)
    db.executescript(f"""
        BEGIN;
        INSERT INTO domains (name, type) VALUES ('big.example', 'NATIVE');
        INSERT INTO records (domain_id, name, type, content, ttl)
        SELECT d.id, 'big.example', 'SOA', 'ns1.big.example. h.big.example. 1 10800 3600 604800 300', 300
        FROM domains d WHERE d.name = 'big.example';
        INSERT INTO records (domain_id, name, type, content, ttl)
        SELECT d.id, 'big.example', 'NS', 'ns1.example.com.', 300 FROM domains d WHERE d.name = 'big.example';
        WITH RECURSIVE i(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM i WHERE n < {n - 1})
        INSERT INTO records (domain_id, name, type, content, ttl)
        SELECT d.id, 'h' || n || '.big.example', 'A',
               '10.' || (n / 65536) || '.' || (n / 256 % 256) || '.' || (n % 256), 300
        FROM i, domains d WHERE d.name = 'big.example';
        COMMIT;""")
    for i, t_ in enumerate(TARGETS):
        for net in NETS + ["*"]:
            write_latency(db, net, t_, 10.0 + i * 5)
        db.execute("INSERT OR REPLACE INTO ha_health (target, up, ok_streak, fail_streak, updated) "
                   "VALUES (?, 1, 0, 0, ?)", (t_, time.time()))
        db.execute("INSERT OR REPLACE INTO ha_load (target, sessions, max_sessions, updated) VALUES (?, ?, 1000, ?)",
                   (t_, (i + 1) * 90, time.time()))
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return time.perf_counter() - t


def write_latency(db, network, target, ms):
    """What `pdns-ha metric latency` does (src/state/writer.rs): read the
    row, fold the sample into mean and EWMA, upsert; autocommit."""
    old = db.execute("SELECT mean_ms, ewma_ms, samples FROM ha_latency WHERE network = ? AND target = ?",
                     (network, target)).fetchone()
    if old is None:
        mean, ewma, n = ms, ms, 1
    else:
        n = max(old[2], 0) + 1
        mean = old[0] + (ms - old[0]) / n
        ewma = mean if n < 10 else old[1] * 0.9 + ms * 0.1
    db.execute("INSERT INTO ha_latency (network, target, mean_ms, ewma_ms, samples, timeouts, updated) "
               "VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6) ON CONFLICT (network, target) DO UPDATE SET "
               "mean_ms = ?3, ewma_ms = ?4, samples = ?5, updated = ?6",
               (network, target, mean, ewma, n, time.time()))


def writer(db_path, every, monitor_round, stop, written):
    """A separate process: one latency reading per `every` seconds, or (a
    monitor round) a transaction with a latency and a health row per target."""
    db = sqlite3.connect(db_path, isolation_level=None, timeout=5)
    i, next_t = 0, time.monotonic()
    while not stop.is_set():
        if monitor_round:
            db.execute("BEGIN IMMEDIATE")
            for k, t_ in enumerate(TARGETS):
                write_latency(db, "*", t_, 10.0 + k * 5 + i % 3)
                db.execute("INSERT OR REPLACE INTO ha_health (target, up, ok_streak, fail_streak, updated) "
                           "VALUES (?, 1, 0, 0, ?)", (t_, time.time()))
            db.execute("COMMIT")
        else:
            write_latency(db, NETS[i % 2], TARGETS[i % 8], 10.0 + (i % 8) * 5 + i % 3)
        i += 1
        written.value = i
        next_t += every
        time.sleep(max(0.0, next_t - time.monotonic()))
    db.close()


class Writer:
    def __init__(self, db_path, every, monitor_round=False):
        ctx = multiprocessing.get_context("fork")
        self.stop, self.written = ctx.Event(), ctx.Value("l", 0)
        self.proc = ctx.Process(target=writer, args=(db_path, every, monitor_round, self.stop, self.written))
        self.proc.start()

    def finish(self):
        self.stop.set()
        self.proc.join()
        return self.written.value


def client_queries(n, rng):
    """What pdns asks its backend per client query (reference §3.2), tagged:
    hot (h0..h999), cold (any of the n names), miss, srv (the example)."""
    ecs = "\t127.0.0.1\t127.0.0.1\t"
    soa = lambda name: f"Q\t{name}\tIN\tSOA\t-1\t0.0.0.0\t0.0.0.0\t0.0.0.0/0"
    k = 0
    while True:
        net = NETS[k % 2]
        anyq = lambda name: f"Q\t{name}\tIN\tANY\t1{ecs}{net}"
        r = rng.random()
        if r < 0.60:
            name, kind = f"h{rng.randrange(HOT)}.big.example", "hot"
        elif r < 0.85:
            name, kind = f"h{rng.randrange(n)}.big.example", "cold"
        elif r < 0.95:
            name, kind = f"nx{rng.randrange(10 * n)}.big.example", "miss"
        else:
            name, kind = None, "srv"
        if kind == "srv":
            lines = [soa("_sip._udp.example.com"), soa("_udp.example.com"), soa("example.com"),
                     anyq("_sip._udp.example.com"), anyq("_udp.example.com"), anyq("_sip._udp.example.com")]
            lines += [anyq(t) for t in TARGETS]
        else:
            lines = [soa(name), soa("big.example"), anyq(name), anyq(name)]
            if kind == "miss":
                lines.append(anyq("*.big.example"))
        yield kind, [(l + "\n").encode() for l in lines]
        k += 1


class Pipe:
    """A pipe process driven one line at a time."""

    def __init__(self, cmd, log):
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, bufsize=0)
        self.w = self.proc.stdin.fileno()
        self.r = os.fdopen(os.dup(self.proc.stdout.fileno()), "rb", buffering=1 << 16)

    def ask(self, line):
        """(answer lines, nanoseconds)."""
        t = time.perf_counter_ns()
        os.write(self.w, line)
        out = []
        while True:
            l = self.r.readline()
            if not l:
                raise SystemExit(f"pipe process exited: {self.proc.args}")
            if l.startswith((b"END", b"FAIL", b"OK")):
                out.append(l)
                return out, time.perf_counter_ns() - t
            out.append(l)

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(30)
        self.r.close()
        self.proc.stdout.close()


def smaps_rollup(pid):
    """KiB: private (clean + dirty), Pss, Rss, and VmHWM."""
    out = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for l in f:
            p = l.split()
            if len(p) >= 2 and p[0].endswith(":") and p[1].isdigit():
                out[p[0][:-1]] = int(p[1])
    with open(f"/proc/{pid}/status") as f:
        for l in f:
            if l.startswith("VmHWM:"):
                out["VmHWM"] = int(l.split()[1])
    out["Private"] = out.get("Private_Clean", 0) + out.get("Private_Dirty", 0)
    return out


def pct(xs, p):
    return xs[min(len(xs) - 1, int(len(xs) * p))] if xs else float("nan")


def startup(cmd, log, times=3):
    """Seconds from spawn to the first answer (HELO, then a SOA question)."""
    out = []
    for _ in range(times):
        p = Pipe(cmd, log)
        p.ask(b"HELO\t5\n")
        p.ask(b"Q\tbig.example\tIN\tSOA\t-1\t0.0.0.0\t0.0.0.0\t0.0.0.0/0\n")
        out.append(time.perf_counter() - p.t0)
        p.close()
    return out


def stream_run(cmd, db_path, n, duration, log, writes_every=0.1, edit=True):
    """The timed question stream with readings written and one edit."""
    rng = random.Random(1)
    queries = client_queries(n, rng)
    p = Pipe(cmd, log)
    p.ask(b"HELO\t5\n")
    edit_q = f"Q\t{EDIT_NAME}\tIN\tANY\t1\t127.0.0.1\t127.0.0.1\t127.0.0.1/32\n".encode()
    p.ask(edit_q)  # cached before the edit, so the edit has to invalidate it
    lat = array.array("q")  # ns per lookup
    at = array.array("d")  # seconds since the start of the stream
    kinds = {k: array.array("q") for k in ("hot", "cold", "miss", "srv")}
    w = Writer(db_path, writes_every) if writes_every else None
    edit_at = served_at = None
    gc.disable()
    start = time.perf_counter()
    end = start + duration
    try:
        while True:
            now = time.perf_counter()
            if now >= end and (not edit or served_at is not None or now >= end + 5):
                break
            if edit and edit_at is None and now >= start + duration / 2:
                db = sqlite3.connect(db_path, isolation_level=None, timeout=5)
                db.execute("UPDATE records SET content = ? WHERE name = ?", (EDIT_NEW, EDIT_NAME))
                db.close()
                edit_at = time.perf_counter()
            kind, lines = next(queries)
            if edit_at is not None and served_at is None:
                lines = lines + [edit_q]
            for l in lines:
                out, ns = p.ask(l)
                lat.append(ns)
                at.append(time.perf_counter() - start)
                kinds[kind].append(ns)
                if l is edit_q and served_at is None and any(EDIT_NEW.encode() in x for x in out):
                    served_at = time.perf_counter()
    finally:
        gc.enable()
        written = w.finish() if w else 0
    status = b"".join(p.ask(b"CMD\tstatus\n")[0]).decode(errors="replace")
    mem = smaps_rollup(p.proc.pid)
    p.close()
    ms = lambda xs: sorted(x / 1e6 for x in xs)
    all_ms = ms(lat)
    res = dict(lookups=len(lat), seconds=at[-1] if at else 0, written=written, mem=mem,
               p50=pct(all_ms, 0.5), p99=pct(all_ms, 0.99), p999=pct(all_ms, 0.999), max=all_ms[-1],
               over1=sum(1 for x in all_ms if x > 1), over50=sum(1 for x in all_ms if x > 50),
               kinds={k: (len(v), pct(ms(v), 0.5), pct(ms(v), 0.99), max(v) / 1e6 if v else 0) for k, v in kinds.items()},
               status=" | ".join(l.strip() for l in status.splitlines()
                                 if "loads" in l or "records" in l or "lookups" in l))
    if edit and edit_at is not None:
        e = edit_at - start
        stop = (served_at - start if served_at else e) + 1.0
        res["edit_served_s"] = served_at - edit_at if served_at else None
        res["edit_max_ms"] = max((lat[i] / 1e6 for i in range(len(lat)) if e - 1.0 <= at[i] <= stop), default=0)
        db = sqlite3.connect(db_path, isolation_level=None, timeout=5)
        db.execute("UPDATE records SET content = ? WHERE name = ?", (EDIT_OLD, EDIT_NAME))
        db.close()
    return res


def pdns_run(Pdns, dnsperf_cmd, backend, ha, n, duration, clients, workdir, networks):
    """pdns_server, caches off, a monitor round every second; `backend` is
    the pipe command (pipe ABI 3) or a settings dict (gsqlite3)."""
    rng = random.Random(2)
    qfile = os.path.join(workdir, "queries-large.txt")
    with open(qfile, "w") as f:
        for _ in range(100_000):
            r = rng.random()
            if r < 0.60:
                f.write(f"h{rng.randrange(HOT)}.big.example A\n")
            elif r < 0.85:
                f.write(f"h{rng.randrange(n)}.big.example A\n")
            elif r < 0.95:
                f.write(f"nx{rng.randrange(10 * n)}.big.example A\n")
            else:
                f.write("_sip._udp.example.com SRV\n")
    settings = {"cache-ttl": "0", "query-cache-ttl": "0", "negquery-cache-ttl": "0"}
    if isinstance(backend, dict):
        settings.update(backend)
    else:
        settings.update({"launch": "pipe", "pipe-command": " ".join(backend), "pipe-abi-version": "3"})
    t = time.perf_counter()
    try:
        pdns = Pdns(settings)
    except SystemExit as e:
        # An older build may not even start under pdns: its coprocesses
        # load every record before answering HELO, past pipe-timeout.
        logdir = str(e).split("see ")[-1].strip()
        why = ""
        if os.path.exists(logdir):
            with open(logdir) as f:
                why = next((l.strip() for l in f if "fatal" in l.lower() or "exception" in l.lower()), "")
        return dict(failed=f"pdns_server did not start: {why or e}", seconds=duration)
    up = time.perf_counter() - t
    w = Writer(ha, 1.0, monitor_round=True)
    try:
        procs = [subprocess.Popen(dnsperf_cmd(pdns.port, qfile, duration, clients, hexopt),
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
                 for hexopt in networks.values()]
        qps, lats, lost, rcodes = 0.0, [], 0, {}
        for p in procs:
            out, _ = p.communicate()
            for line in out.splitlines():
                f = line.split()
                if line.startswith("> ") and len(f) == 5:
                    lats.append(float(f[4]))
                elif "Queries per second:" in line:
                    qps += float(line.split(":")[1])
                elif "Queries lost:" in line:
                    lost += int(line.split(":")[1].split()[0])
                elif "Response codes:" in line:
                    for part in line.split(":", 1)[1].split(","):
                        code, cnt = part.split()[:2]
                        rcodes[code] = rcodes.get(code, 0) + int(cnt)
        mems = []
        for pid in pdns.pids_of_coprocesses():
            try:
                mems.append(smaps_rollup(pid))
            except OSError:
                pass
    finally:
        written = w.finish()
        pdns.stop()
    lats.sort()
    return dict(qps=qps, p50=pct(lats, 0.5) * 1000, p99=pct(lats, 0.99) * 1000, max=lats[-1] * 1000 if lats else 0,
                p999=pct(lats, 0.999) * 1000, over100=sum(1 for x in lats if x > 0.1),
                lost=lost, rcodes=rcodes, servfail=rcodes.get("SERVFAIL", 0), written=written, mems=mems, seconds=duration,
                startup=up, log=os.path.join(pdns.dir, "log"))


def run(args, bins, c_responder, example_sql, workdir, Pdns, dnsperf_cmd, networks, forever):
    """Every part of the scenario for each (label, binary). Returns rows."""
    n = args.large_records
    base_db = os.path.join(workdir, f"large-{n}.db")
    built = build_db(bins[0][1], base_db, n, example_sql)
    size = os.path.getsize(base_db)
    print(f"large: built {n:,} records + example in {built:.1f} s ({size / 2**20:.0f} MiB)", flush=True)
    log = open(os.path.join(workdir, "large-stderr.log"), "w")
    rows = dict(records=n, build_s=built, db_mib=size / 2**20, runs=[])
    # The driver's own floor: the C responder on the same stream (it knows
    # only the example, so every big.example name is an END).
    floor = stream_run([c_responder], base_db, n, args.large_duration, log, writes_every=0, edit=False)
    rows["floor"] = floor
    print(f"large: driver floor (C responder) p50 {floor['p50']:.3f} ms p99 {floor['p99']:.3f} ms "
          f"max {floor['max']:.2f} ms", flush=True)
    for label, bin_ in bins:
        db = os.path.join(workdir, f"large-{label}.db")
        for f in (db + "-wal", db + "-shm"):
            if os.path.exists(f):
                os.remove(f)
        shutil.copy(base_db, db)
        cmd = [bin_, "--db", db, "--stale-after", forever, "--algorithm", "least-latency"]
        r = dict(label=label, bin=bin_)
        r["startup"] = startup(cmd, log)
        print(f"large {label}: start-up {', '.join(f'{s:.3f}' for s in r['startup'])} s", flush=True)
        r["streams"] = []
        reps = 1 if label != bins[0][0] else args.repeats
        for rep in range(reps):
            s = stream_run(cmd, db, n, args.large_duration, log)
            r["streams"].append(s)
            print(f"large {label} #{rep + 1}: {s['lookups']} lookups in {s['seconds']:.1f} s, {s['written']} readings; "
                  f"p50 {s['p50']:.3f} p99 {s['p99']:.3f} p99.9 {s['p999']:.3f} max {s['max']:.2f} ms "
                  f"(>1 ms: {s['over1']}, >50 ms: {s['over50']}); edit served after "
                  f"{s.get('edit_served_s')} s, max around it {s.get('edit_max_ms', 0):.2f} ms; "
                  f"private {s['mem']['Private']} KiB, Pss {s['mem']['Pss']} KiB, Rss {s['mem']['Rss']} KiB, "
                  f"HWM {s['mem']['VmHWM']} KiB; {s['status']}", flush=True)
            for k, v in s["kinds"].items():
                print(f"    {k:5} {v[0]:8} lookups  p50 {v[1]:.3f}  p99 {v[2]:.3f}  max {v[3]:.2f} ms", flush=True)
        if not args.large_skip_pdns:
            pr = pdns_run(Pdns, dnsperf_cmd, cmd, db, n,
                          args.large_pdns_duration if label == bins[0][0] else min(args.large_pdns_duration, 30),
                          args.clients, workdir, networks)
            r["pdns"] = pr
            if "failed" in pr:
                print(f"large {label} pdns: {pr['failed']}", flush=True)
            else:
                print(f"large {label} pdns: {pr['qps']:.0f} qps p50 {pr['p50']:.2f} p99 {pr['p99']:.2f} "
                      f"p99.9 {pr['p999']:.2f} max {pr['max']:.0f} ms (over 100 ms: {pr['over100']}), "
                      f"rcodes {pr['rcodes']}, lost {pr['lost']}, {pr['written']} monitor rounds; coprocesses private "
                      f"{[m['Private'] for m in pr['mems']]} KiB, HWM {[m['VmHWM'] for m in pr['mems']]} KiB", flush=True)
        rows["runs"].append(r)
    if not args.large_skip_pdns:
        # pdns's own gsqlite3 backend on the same database, same writer: how
        # much of the tail is pdns and the machine rather than the pipe.
        db = os.path.join(workdir, "large-gsqlite3.db")
        shutil.copy(base_db, db)
        pr = pdns_run(Pdns, dnsperf_cmd, {"launch": "gsqlite3", "gsqlite3-database": db}, db, n,
                      args.large_pdns_duration, args.clients, workdir, networks)
        rows["runs"].append(dict(label="gsqlite3 (reference)", pdns=pr, streams=[]))
        print(f"large gsqlite3 pdns: {pr['qps']:.0f} qps p50 {pr['p50']:.2f} p99 {pr['p99']:.2f} max {pr['max']:.0f} ms, "
              f"rcodes {pr['rcodes']}, over 100 ms {pr['over100']}", flush=True)
    log.close()
    return rows
