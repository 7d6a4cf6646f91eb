#!/usr/bin/env python3
"""bench/run.py: pdns-ha's benchmark, all in one sitting on one database.

1. Through a real pdns_server on loopback, driven by dnsperf with ECS queries
   from two client networks: (A) pdns's own gsqlite3 backend, (B) a minimal C
   pipe responder with hard-coded data, (C) pdns-ha static / least-latency /
   least-load, (D) PowerDNS LUA records (a dynamic SRV via pickwrandom on
   gsqlite3). Each with every pdns cache off and in the recommended deployment
   (pdns's default caches), twice. qps, p50/p99 latency, ratios to A and B.
   Then least-latency behind dnsdist with its ECS-keyed packet cache (the
   docs/deployment.md's "cached front"), against A and against least-latency direct.
2. A pipe-level microbenchmark: a recorded pdns question stream (SOA walk,
   ANY, additional-section lookups, misses) fed from a file to each
   algorithm, to the C responder and to a do-nothing responder.
3. Footprint after one million lookups: peak RSS, heap peak and heap at the
   end (valgrind dhat), heap allocations per lookup in steady state; against
   the C responder and a Python responder.
4. Four copies (`--only footprint`): four pipe processes, as pdns runs them,
   each fed the same stream, then each one's own memory from
   /proc/PID/smaps_rollup (Private_Clean + Private_Dirty), Pss and Rss,
   against four C responders in the same run; where a pdns-ha process's
   private memory sits, mapping by mapping.
5. Large zones (`--only large`, bench/large.py): 1,000,000 records, a pipe
   answering a recorded question stream while readings are written 10 times
   a second, one operator edit, start-up, memory, and pdns_server + dnsperf
   with a monitor round every second.
6. Thousands of networks (`--only networks`, bench/networks.py): 100, 2,000
   and 20,000 known networks × 8 targets, lookups while readings change,
   memcached keys fetched, an observe round, `status`.

`--baseline PATH` adds an older pdns-ha binary (e.g. built from an earlier
commit in a scratch worktree) to parts 2, 4 and 5, so its figures stand
beside today's.

Run it with bench/run.sh, which builds what it needs. Loopback only.
"""
import argparse
import os
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import large  # noqa: E402
import networks  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(REPO, "target", "release", "pdns-ha")
C_RESPONDER = os.path.join(REPO, "target", "bench", "c-responder")
PY_RESPONDER = os.path.join(REPO, "bench", "py-responder.py")
WORK = "/tmp/pdns-ha-bench"

# The two client networks of the example that the ECS queries come from,
# as dnsperf -E 8:<hex> options (family 1, source /24, scope 0, address).
NETWORKS = {
    "198.51.100.0/24": "00011800c63364",
    "203.0.113.0/24": "00011800cb0071",
}
FOREVER = "100000000"  # --stale-after for the bench: readings never go stale mid-run

PDNS_BASE = {
    "zone-cache-refresh-interval": "0",
    "local-address": "127.0.0.1",
    "daemon": "no",
    "guardian": "no",
    "disable-syslog": "yes",
    "security-poll-suffix": "",
    "edns-subnet-processing": "yes",
    "loglevel": "3",
}
CACHES_OFF = {"cache-ttl": "0", "query-cache-ttl": "0", "negquery-cache-ttl": "0"}
RECOMMENDED = {}  # pdns's own cache defaults: cache-ttl 20, query-cache-ttl 20, negquery 60
DNSDIST = "recommended + dnsdist cache"
# The deployment guide's dnsdist config (pipe-abi-tests/e2e/dnsdist.rs checks the guide against
# the tested copy), with the bench's addresses.
DNSDIST_CONF = """setLocal('127.0.0.1:{listen}')
setACL({{'0.0.0.0/0', '::/0'}})
setECSSourcePrefixV4(24)
setECSSourcePrefixV6(56)
newServer({{address='127.0.0.1:{backend}', useClientSubnet=true}})
pc = newPacketCache(100000, {{parseECS=true}})
getPool(''):setCache(pc)
"""


def sh(*cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, socket.socket() as t:
        u.bind(("127.0.0.1", 0))
        port = u.getsockname()[1]
        t.bind(("127.0.0.1", port))
        return port


def make_databases():
    os.makedirs(WORK, exist_ok=True)
    ha = os.path.join(WORK, "ha.db")
    for f in (ha, ha + "-wal", ha + "-shm"):
        if os.path.exists(f):
            os.remove(f)
    sh(BIN, "init", "--db", ha, os.path.join(REPO, "sql", "example.sql"), stdout=subprocess.DEVNULL)
    # Metrics for every target from both networks, and loads for all.
    for i in range(1, 9):
        t = f"sip{i}.example.com"
        for net, base in (("198.51.100.0/24", 10), ("203.0.113.0/24", 40)):
            ms = str(base + (i * 7 if net.startswith("198") else (9 - i) * 5))
            sh(BIN, "metric", "latency", "--db", ha, "--network", net, "--target", t, "--ms", ms)
        sh(BIN, "metric", "load", "--db", ha, "--target", t, "--sessions", str(i * 90), "--max", "1000")
        sh(BIN, "metric", "health", "--db", ha, "--target", t, "up")
    lua = os.path.join(WORK, "lua.db")
    shutil.copy(ha, lua)
    choices = ",".join(
        f"{{{w},''{p} {w} 5060 sip{i}.example.com.''}}"
        for i, (p, w) in enumerate([(10, 50), (10, 25), (10, 25), (20, 20), (20, 20), (20, 10), (30, 10), (30, 10)], 1)
    )
    db = sqlite3.connect(lua)
    db.execute("PRAGMA journal_mode=DELETE")
    db.execute("DELETE FROM records WHERE type = 'SRV'")
    db.execute(
        "INSERT INTO records (domain_id, name, type, content, ttl) "
        f"SELECT id, '_sip._udp.example.com', 'LUA', 'SRV \"pickwrandom({{{choices}}})\"', 30 FROM domains"
    )
    db.commit()
    db.close()
    return ha, lua


def backends(ha, lua):
    pipe = lambda cmd: {"launch": "pipe", "pipe-command": cmd, "pipe-abi-version": "3"}
    ha_cmd = f"{BIN} --db {ha} --stale-after {FOREVER} --algorithm"
    return [
        ("A gsqlite3", {"launch": "gsqlite3", "gsqlite3-database": ha}),
        ("B C responder", pipe(C_RESPONDER)),
        ("C pdns-ha static", pipe(f"{ha_cmd} static")),
        ("C pdns-ha least-latency", pipe(f"{ha_cmd} least-latency")),
        ("C pdns-ha least-load", pipe(f"{ha_cmd} least-load")),
        ("D LUA records", {"launch": "gsqlite3", "gsqlite3-database": lua, "enable-lua-records": "yes"}),
    ]


class Pdns:
    def __init__(self, settings):
        self.port = free_port()
        self.dir = os.path.join(WORK, f"pdns-{self.port}")
        os.makedirs(self.dir, exist_ok=True)
        conf = dict(PDNS_BASE, **settings, **{"local-port": str(self.port), "socket-dir": self.dir})
        with open(os.path.join(self.dir, "pdns.conf"), "w") as f:
            f.writelines(f"{k}={v}\n" for k, v in conf.items())
        self.log = open(os.path.join(self.dir, "log"), "w")
        self.proc = subprocess.Popen(["pdns_server", f"--config-dir={self.dir}"], stdout=self.log, stderr=self.log)
        for _ in range(100):
            if self.proc.poll() is not None:
                raise SystemExit(f"pdns_server exited; see {self.dir}/log")
            r = subprocess.run(["dig", "@127.0.0.1", "-p", str(self.port), "+time=1", "+tries=1", "example.com", "SOA"],
                               capture_output=True, text=True)
            if "status: NOERROR" in r.stdout:
                return
            time.sleep(0.1)
        raise SystemExit("pdns_server did not answer")

    def pids_of_coprocesses(self):
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


class Dnsdist:
    """dnsdist with the deployment guide's packet cache in front of a pdns on `backend`."""

    def __init__(self, backend):
        self.port = free_port()
        self.dir = os.path.join(WORK, f"dnsdist-{self.port}")
        os.makedirs(self.dir, exist_ok=True)
        conf = os.path.join(self.dir, "dnsdist.conf")
        with open(conf, "w") as f:
            f.write(DNSDIST_CONF.format(listen=self.port, backend=backend))
        self.log = open(os.path.join(self.dir, "log"), "w")
        self.proc = subprocess.Popen(["dnsdist", "--supervised", "--disable-syslog", "-C", conf],
                                     stdout=self.log, stderr=self.log)
        for _ in range(100):
            if self.proc.poll() is not None:
                raise SystemExit(f"dnsdist exited; see {self.dir}/log")
            r = subprocess.run(["dig", "@127.0.0.1", "-p", str(self.port), "+time=1", "+tries=1", "example.com", "SOA"],
                               capture_output=True, text=True)
            if "status: NOERROR" in r.stdout:
                return
            time.sleep(0.1)
        raise SystemExit("dnsdist did not answer")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def dnsperf_cmd(port, qfile, duration, clients, hexopt, outstanding=20):
    # -v prints a line per answer, for the latency percentiles; past ~50k qps
    # writing and parsing those lines is what limits the run, so
    # PDNS_HA_BENCH_QPS_ONLY=1 measures throughput alone.
    verbose = [] if os.environ.get("PDNS_HA_BENCH_QPS_ONLY") else ["-v"]
    return ["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", qfile, "-l", str(duration), "-c", str(clients),
            "-t", "2", "-q", str(outstanding), "-e", "-E", f"8:{hexopt}"] + verbose


def dnsperf(port, qfile, duration, clients, args_outstanding=20):
    """Two dnsperf processes at once, one per client network. Returns
    (qps, [latency seconds], lost)."""
    procs = [
        subprocess.Popen(dnsperf_cmd(port, qfile, duration, clients, hexopt, args_outstanding),
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        for hexopt in NETWORKS.values()
    ]
    qps, lats, lost = 0.0, [], 0
    for p in procs:
        out, _ = p.communicate()
        for line in out.splitlines():
            # "> NOERROR name type 0.000318", or "> T name type" for a timeout
            # (counted in "Queries lost").
            f = line.split()
            if line.startswith("> ") and len(f) == 5:
                lats.append(float(f[4]))
            elif "Queries per second:" in line:
                qps += float(line.split(":")[1])
            elif "Queries lost:" in line:
                lost += int(line.split(":")[1].split()[0])
    return qps, lats, lost


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))] if xs else float("nan")


def check_per_client(port):
    """With caches on, each network still gets its own answer."""
    firsts = {}
    for net in NETWORKS:
        out = subprocess.run(["dig", "@127.0.0.1", "-p", str(port), f"+subnet={net}", "+short",
                              "_sip._udp.example.com", "SRV"], capture_output=True, text=True).stdout
        recs = sorted((int(l.split()[0]), l.split()[3].split(".")[0]) for l in out.splitlines() if l)
        best = [t for p, t in recs if p == recs[0][0]] if recs else ["?"]
        firsts[net] = "{" + ", ".join(best) + "}"
    return firsts


def bench_pdns(args, ha, lua):
    qfiles = {}
    for name, lines in (("srv", ["_sip._udp.example.com SRV"]),
                        ("mix", ["_sip._udp.example.com SRV"] + [f"sip{i}.example.com A" for i in range(1, 9)])):
        path = os.path.join(WORK, f"queries-{name}.txt")
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        qfiles[name] = path
    rows = []
    everything = backends(ha, lua)
    configs = [("caches off", CACHES_OFF, everything), ("recommended (caches on)", RECOMMENDED, everything)]
    if args.only == "dnsdist":
        # The dnsdist rows and what they are compared with, alone.
        configs = [("caches off", CACHES_OFF, [everything[0], everything[3]]),
                   ("recommended (caches on)", RECOMMENDED, [everything[3]])]
    configs.append((DNSDIST, RECOMMENDED, [everything[3]]))
    for conf_name, conf, chosen in configs:
        for name, settings in chosen:
            pdns = Pdns(dict(conf, **settings))
            front = Dnsdist(pdns.port) if conf_name == DNSDIST else None
            port = front.port if front else pdns.port
            try:
                dnsperf(port, qfiles["srv"], 1, args.clients)  # warm-up
                per_client = check_per_client(port) if "least-latency" in name else None
                for qname, qfile in qfiles.items():
                    for rep in range(args.repeats):
                        qps, lats, lost = dnsperf(port, qfile, args.duration, args.clients)
                        rows.append(dict(conf=conf_name, backend=name, queries=qname, rep=rep + 1, qps=qps,
                                         p50=pct(lats, 0.5) * 1000, p99=pct(lats, 0.99) * 1000, lost=lost,
                                         per_client=per_client))
                        print(f"{conf_name:24} {name:24} {qname} #{rep + 1}: {qps:8.0f} qps  "
                              f"p50 {rows[-1]['p50']:.2f} ms  p99 {rows[-1]['p99']:.2f} ms  lost {lost}", flush=True)
                rss = []
                for pid in pdns.pids_of_coprocesses():
                    try:
                        with open(f"/proc/{pid}/status") as f:
                            rss += [int(l.split()[1]) for l in f if l.startswith("VmHWM")]
                    except OSError:
                        pass
                if rss:
                    rows[-1]["coproc_hwm_kb"] = max(rss)
            finally:
                if front:
                    front.stop()
                pdns.stop()
    return rows


def stream(path, n_lines):
    """What pdns sends for SRV queries from two networks (reference §3.2),
    with a miss (NXDOMAIN path) every tenth query."""
    walk = ["_sip._udp.example.com", "_udp.example.com", "example.com"]
    ecs = list(NETWORKS)
    out, q = ["HELO\t3"], 0
    while len(out) < n_lines:
        e = ecs[q % 2]
        any_ = lambda name: f"Q\t{name}\tIN\tANY\t1\t127.0.0.1\t127.0.0.1\t{e}"
        if q % 10 == 9:
            out += ["Q\tnonexist.example.com\tIN\tSOA\t-1\t0.0.0.0\t0.0.0.0\t0.0.0.0/0",
                    "Q\texample.com\tIN\tSOA\t-1\t0.0.0.0\t0.0.0.0\t0.0.0.0/0",
                    any_("nonexist.example.com"), any_("nonexist.example.com"), any_("*.example.com")]
        else:
            out += [f"Q\t{n}\tIN\tSOA\t-1\t0.0.0.0\t0.0.0.0\t0.0.0.0/0" for n in walk]
            out += [any_("_sip._udp.example.com"), any_("_udp.example.com"), any_("_sip._udp.example.com")]
            out += [any_(f"sip{i}.example.com") for i in range(1, 9)]
        q += 1
    with open(path, "w") as f:
        f.write("\n".join(out[:n_lines]) + "\n")
    return n_lines - 1


def run_stream(cmd, path):
    """Wall time and peak RSS (KiB) of a responder answering the stream."""
    with open(path) as inp:
        t = time.perf_counter()
        r = subprocess.run(["/usr/bin/time", "-f", "%M"] + cmd, stdin=inp, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True, check=True)
        wall = time.perf_counter() - t
    return wall, int(r.stderr.strip().splitlines()[-1])


def dhat(cmd, path):
    """valgrind dhat: (bytes at t-gmax, bytes at t-end, total blocks)."""
    # The pipe starts itself again without glibc's malloc cache (src/pipe/lean.rs), which
    # valgrind would not follow; with the tunable already set it does not.
    env = dict(os.environ, GLIBC_TUNABLES="glibc.malloc.tcache_count=0")
    with open(path) as inp:
        r = subprocess.run(["valgrind", "--tool=dhat", "--dhat-out-file=/dev/null"] + cmd, stdin=inp,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=True, env=env)
    num = lambda label: int(re.search(label + r":\s+([\d,]+) bytes in ([\d,]+) blocks", r.stderr).group(1).replace(",", ""))
    blocks = int(re.search(r"Total:\s+[\d,]+ bytes in ([\d,]+) blocks", r.stderr).group(1).replace(",", ""))
    return num("At t-gmax"), num("At t-end"), blocks


def bench_pipe(args, ha):
    big = os.path.join(WORK, "stream-1m.txt")
    n = stream(big, args.lookups + 1)
    small, medium = os.path.join(WORK, "stream-20k.txt"), os.path.join(WORK, "stream-200k.txt")
    n_small, n_medium = stream(small, 20_001), stream(medium, 200_001)
    ha_cmd = lambda alg, b=BIN: [b, "--db", ha, "--stale-after", FOREVER, "--algorithm", alg]
    responders = [("do-nothing (C, END only)", [C_RESPONDER, "--end-only"]),
                  ("C responder", [C_RESPONDER]),
                  ("pdns-ha static", ha_cmd("static")),
                  ("pdns-ha least-latency", ha_cmd("least-latency")),
                  ("pdns-ha least-load", ha_cmd("least-load"))]
    if args.baseline:
        responders += [(f"baseline static", ha_cmd("static", args.baseline)),
                       (f"baseline least-latency", ha_cmd("least-latency", args.baseline))]
    responders.append(("Python responder", [sys.executable, PY_RESPONDER]))
    rows = [dict(name=name, cmd=cmd, lookups=n, walls=[], rss_kb=0) for name, cmd in responders]
    # Interleaved, so that the other load on a shared machine falls on every
    # responder alike; best of the runs.
    for _ in range(args.repeats):
        for row in rows:
            wall, kb = run_stream(row["cmd"], big)
            row["walls"].append(wall)
            row["rss_kb"] = max(row["rss_kb"], kb)
    for row in rows:
        name, cmd = row["name"], row["cmd"]
        if name.startswith("pdns-ha") and shutil.which("valgrind") and not args.no_dhat:
            peak, end, b_small = dhat(cmd, small)
            _, _, b_medium = dhat(cmd, medium)
            row.update(heap_peak=peak, heap_end=end, allocs_per_lookup=(b_medium - b_small) / (n_medium - n_small))
        best = min(row["walls"])
        print(f"{name:26} {n / best:10.0f} lookups/s  {best / n * 1e9:7.0f} ns/lookup  peak RSS {row['rss_kb']} KiB"
              + (f"  heap peak {row['heap_peak']} B, end {row['heap_end']} B, {row['allocs_per_lookup']:.3f} allocs/lookup"
                 if "heap_peak" in row else ""), flush=True)
    return rows


def smaps_by_mapping(pid):
    """KiB per mapping (file and permissions, or [heap], [stack], anon):
    (private clean + dirty, private dirty, Rss, Size), largest private first."""
    groups, key = {}, None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            p = line.split()
            if re.match(r"^[0-9a-f]+-[0-9a-f]+$", p[0]):
                path = os.path.basename(p[5]) if len(p) > 5 else "[anon]"
                key = f"{path} {p[1]}"
                groups.setdefault(key, [0, 0, 0, 0])
            elif p[0] in ("Private_Clean:", "Private_Dirty:", "Rss:", "Size:"):
                g = groups[key]
                v = int(p[1])
                if p[0].startswith("Private"):
                    g[0] += v
                if p[0] == "Private_Dirty:":
                    g[1] += v
                if p[0] == "Rss:":
                    g[2] += v
                if p[0] == "Size:":
                    g[3] += v
    return sorted(groups.items(), key=lambda kv: -kv[1][0])


def four_copies(cmd, path, copies=4):
    """Starts `copies` processes, feeds each the stream at `path` (stdin kept
    open), waits until each has answered every line, then reads their
    memory. Returns ([smaps_rollup per process], per-mapping of the first)."""
    with open(path, "rb") as f:
        data = f.read()
    n_lines = data.count(b"\n")
    procs = [subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
             for _ in range(copies)]

    def feed(p, chunk):
        p.stdin.write(chunk)
        p.stdin.flush()

    def drain(p, want, done):
        answered = 0
        while answered < want:
            line = p.stdout.readline()
            if not line:
                break
            if line.startswith((b"END", b"FAIL", b"OK")):
                answered += 1
        done.append(answered)

    def run(chunk):
        done, threads = [], []
        for p in procs:
            threads += [threading.Thread(target=feed, args=(p, chunk)),
                        threading.Thread(target=drain, args=(p, chunk.count(b"\n"), done))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert done == [chunk.count(b"\n")] * copies, (done, n_lines)

    run(data)
    # pdns asks without pause, so a pipe process's periodic work runs between
    # questions: a short tail after a pause makes sure it ran before the memory
    # is read. The pause outlasts the counters' write (every 5 s), after which a
    # pipe gives back what its first lookups allocated and freed: pdns keeps its
    # pipes for hours, and that is the memory they hold.
    time.sleep(5.5)
    run(b"\n".join(data.split(b"\n")[:1001]) + b"\n")
    time.sleep(0.2)
    mems = [large.smaps_rollup(p.pid) for p in procs]
    mapping = smaps_by_mapping(procs[0].pid)
    for p in procs:
        p.stdin.close()
        p.stdout.close()
        p.wait(10)
    return mems, mapping


def bench_footprint(args, ha):
    path = os.path.join(WORK, "stream-footprint.txt")
    stream(path, args.footprint_lookups + 1)
    ha_cmd = lambda alg, b=BIN: [b, "--db", ha, "--stale-after", FOREVER, "--algorithm", alg]
    sets = [("C responder", [C_RESPONDER]), ("pdns-ha static", ha_cmd("static")),
            ("pdns-ha least-latency", ha_cmd("least-latency"))]
    if args.baseline:
        sets += [("baseline static", ha_cmd("static", args.baseline)),
                 ("baseline least-latency", ha_cmd("least-latency", args.baseline))]
    rows = {name: dict(name=name, runs=[]) for name, _ in sets}
    for rep in range(args.repeats):
        for name, cmd in sets:
            mems, mapping = four_copies(cmd, path)
            rows[name]["runs"].append(mems)
            rows[name]["mapping"] = mapping
            avg = lambda k: statistics.mean(m[k] for m in mems)
            print(f"four copies #{rep + 1} {name:24} private {avg('Private'):7.1f} KiB "
                  f"(dirty {avg('Private_Dirty'):.1f}), Pss {avg('Pss'):7.1f} KiB, Rss {avg('Rss'):7.1f} KiB "
                  f"per process: {[m['Private'] for m in mems]}", flush=True)
    for name in ("C responder", "pdns-ha static"):
        print(f"{name}: private memory by mapping (KiB: private, of which dirty, Rss, size)")
        for k, v in rows[name]["mapping"]:
            if v[0] or v[2] > 64:
                print(f"    {k:48} {v[0]:6} {v[1]:6} {v[2]:6} {v[3]:7}")
    return list(rows.values())


def report(args, pdns_rows, pipe_rows, foot_rows=(), large_rows=None):
    def versions():
        out = {}
        for name, cmd in (("pdns", ["pdns_server", "--version"]), ("dnsperf", ["dnsperf", "-h"])):
            r = subprocess.run(cmd, capture_output=True, text=True)
            m = re.search(r"(Authoritative Server [\d.]+|Version [\d.]+)", r.stdout + r.stderr)
            out[name] = m.group(1) if m else "?"
        return out
    v = versions()
    lines = [f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {os.cpu_count()} cores "
             f"({os.uname().release}), pdns {v['pdns']}, dnsperf {v['dnsperf']}, {args.duration} s per run, "
             f"{args.clients} clients per network, ECS from two networks.", ""]
    if pdns_rows:
        lines += ["| pdns config | backend | queries | qps (run 1 / run 2) | p50 ms | p99 ms | ×A | ×B | ×direct |",
                  "|---|---|---|---|---|---|---|---|---|"]
        best = {}
        for r in pdns_rows:
            k = (r["conf"], r["backend"], r["queries"])
            best.setdefault(k, []).append(r)
        for (conf, backend, q), rs in best.items():
            qps = [r["qps"] for r in rs]
            base = lambda b: statistics.mean(x["qps"] for x in best.get((conf, b, q), []) or [{"qps": float("nan")}])
            a = statistics.mean(x["qps"] for x in best[("caches off", "A gsqlite3", q)])
            b = base("B C responder")
            m = statistics.mean(qps)
            # ×direct: against the same backend in pdns's recommended config without dnsdist.
            direct = best.get(("recommended (caches on)", backend, q))
            x_direct = f"{m / statistics.mean(x['qps'] for x in direct):.2f}" if conf == DNSDIST and direct else ""
            x_b = f"{m / b:.2f}" if b == b else ""
            lines.append(f"| {conf} | {backend} | {q} | {' / '.join(f'{x:.0f}' for x in qps)} | "
                         f"{statistics.mean(r['p50'] for r in rs):.2f} | {statistics.mean(r['p99'] for r in rs):.2f} | "
                         f"{m / a:.2f} | {x_b} | {x_direct} |")
        lines += ["", "×A: against gsqlite3 with caches off; ×B: against the C responder in the same pdns config; "
                  "×direct: dnsdist's row against the same backend straight from pdns (recommended config).", ""]
        seen = set()
        for r in pdns_rows:
            if r.get("per_client") and r["conf"] != "caches off" and r["conf"] not in seen:
                seen.add(r["conf"])
                lines.append(f"Per-client check, {r['conf']} ({r['backend']}): the best-priority SRV targets per network "
                             + ", ".join(f"{k} → {v}" for k, v in r["per_client"].items()) + ".")
        lines.append("")
    if pipe_rows:
        c = min(next(r for r in pipe_rows if r["name"] == "C responder")["walls"])
        lines += ["| pipe microbenchmark | lookups/s (each run) | best | ×C responder | ns/lookup | peak RSS | heap peak | heap at end | allocs/lookup |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in pipe_rows:
            best = min(r["walls"])
            each = " / ".join(f"{r['lookups'] / w:.0f}" for w in r["walls"])
            lines.append(f"| {r['name']} | {each} | "
                         f"{r['lookups'] / best:.0f} | {c / best:.2f} | {best / r['lookups'] * 1e9:.0f} | "
                         f"{r['rss_kb'] / 1024:.2f} MiB | "
                         + (f"{r['heap_peak'] / 1024:.1f} KiB | {r['heap_end'] / 1024:.1f} KiB | {r['allocs_per_lookup']:.3f} |"
                            if "heap_peak" in r else "- | - | - |"))
        lines += ["", f"{pipe_rows[0]['lookups']:,} lookups per run from a recorded pdns question stream "
                  "(SOA walk, ANY, additional-section lookups, one miss in ten); heap from valgrind dhat, "
                  "allocations per lookup as the difference between a 20k and a 200k stream; runs interleaved.", ""]
    if foot_rows:
        c = statistics.mean(m["Private"] for run in foot_rows[0]["runs"] for m in run)
        lines += ["| four copies (each fed the stream) | private KiB per process (run 1 / run 2) | dirty | Pss KiB | Rss KiB | private ×C |",
                  "|---|---|---|---|---|---|"]
        for r in foot_rows:
            per_run = [statistics.mean(m["Private"] for m in run) for run in r["runs"]]
            avg = lambda k: statistics.mean(m[k] for run in r["runs"] for m in run)
            lines.append(f"| {r['name']} | {' / '.join(f'{x:.0f}' for x in per_run)} | {avg('Private_Dirty'):.0f} | "
                         f"{avg('Pss'):.0f} | {avg('Rss'):.0f} | {statistics.mean(per_run) / c:.2f} |")
        lines += ["", f"Four processes per responder alive at once, each fed the same {args.footprint_lookups:,}-line "
                  "stream, then /proc/PID/smaps_rollup (private = Private_Clean + Private_Dirty); means over the four.", ""]
        for r in foot_rows:
            if r["name"] in ("pdns-ha static", "C responder"):
                lines += [f"Private memory of one {r['name']} process by mapping (KiB):", "",
                          "| mapping | private | of which dirty | Rss | size |", "|---|---|---|---|---|"]
                lines += [f"| {k} | {v[0]} | {v[1]} | {v[2]} | {v[3]} |" for k, v in r["mapping"] if v[0] or v[2] > 64]
                lines.append("")
    if large_rows:
        lr = large_rows
        fl = lr["floor"]
        lines += [f"Large zone: {lr['records']:,} A records in one zone plus the example ({lr['db_mib']:.0f} MiB "
                  f"database, built in {lr['build_s']:.1f} s). Driver floor (the C responder on the same stream, "
                  f"every big.example name an END, same duration): p50 {fl['p50']:.3f} ms, p99 {fl['p99']:.3f} ms, "
                  f"max {fl['max']:.2f} ms, over 1 ms {fl['over1']}, over 50 ms {fl['over50']} of {fl['lookups']}.", "",
                  "| build | start-up s (3 runs) | run | lookups | readings written | p50 ms | p99 ms | p99.9 ms | max ms | "
                  "> 1 ms | > 50 ms | edit served after s | max ms around the edit | private KiB | Pss KiB | Rss KiB | peak RSS KiB |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in lr["runs"]:
            for i, s in enumerate(r.get("streams", [])):
                m = s["mem"]
                served = s.get("edit_served_s")
                lines.append(f"| {r['label']} | {' / '.join(f'{x:.3f}' for x in r['startup'])} | {i + 1} | {s['lookups']} | "
                             f"{s['written']} | {s['p50']:.3f} | {s['p99']:.3f} | {s['p999']:.3f} | {s['max']:.2f} | "
                             f"{s['over1']} | {s['over50']} | {'not served' if served is None else f'{served:.3f}'} | "
                             f"{s.get('edit_max_ms', 0):.2f} | {m['Private']} | {m['Pss']} | {m['Rss']} | {m['VmHWM']} |")
        lines += ["", "Per kind of client query (last run of each build; lookups, p50 / p99 / max ms):", ""]
        for r in [r for r in lr["runs"] if r.get("streams")]:
            k = r["streams"][-1]["kinds"]
            lines.append(f"- {r['label']}: " + "; ".join(f"{n} {v[0]} lookups {v[1]:.3f} / {v[2]:.3f} / {v[3]:.2f}"
                                                          for n, v in k.items())
                         + f". CMD status: {r['streams'][-1]['status']}")
        lines.append("")
        if any("pdns" in r for r in lr["runs"]):
            lines += [f"| pdns_server, caches off, {lr['records']:,} records, monitor round every second | seconds | qps | "
                      "p50 ms | p99 ms | p99.9 ms | max ms | > 100 ms | response codes | SERVFAIL | lost | "
                      "coprocess private KiB | coprocess peak RSS KiB |",
                      "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
            for r in lr["runs"]:
                if "pdns" in r and "failed" in r["pdns"]:
                    lines.append(f"| {r['label']} | {r['pdns']['seconds']} | {r['pdns']['failed']} |||||||||||")
                elif "pdns" in r:
                    p = r["pdns"]
                    lines.append(f"| {r['label']} | {p['seconds']} | {p['qps']:.0f} | {p['p50']:.2f} | {p['p99']:.2f} | "
                                 f"{p['p999']:.2f} | {p['max']:.0f} | {p['over100']} | "
                                 f"{', '.join(f'{k} {v}' for k, v in p['rcodes'].items())} | "
                                 f"{p['servfail']} | {p['lost']} | {', '.join(str(m['Private']) for m in p['mems']) or '-'} | "
                                 f"{', '.join(str(m['VmHWM']) for m in p['mems']) or '-'} |")
            lines.append("")
    text = "\n".join(lines)
    print("\n" + text)
    out = args.out or os.path.join(
        REPO, "bench", "results.md" if args.only is None else f"results-{args.only}.md")
    with open(out, "w") as f:
        f.write(text + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=int, default=10, help="seconds per dnsperf run")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--clients", type=int, default=10, help="dnsperf clients per network")
    ap.add_argument("--lookups", type=int, default=1_000_000, help="pipe microbenchmark stream length")
    ap.add_argument("--only", choices=["pdns", "pipe", "dnsdist", "footprint", "large", "networks"],
                    help="run one part (dnsdist: its rows and the rows they are compared with)")
    ap.add_argument("--no-dhat", action="store_true", help="skip valgrind in the pipe part")
    ap.add_argument("--footprint-lookups", type=int, default=200_000, help="stream length for the four copies")
    ap.add_argument("--baseline", help="an older pdns-ha binary to measure beside this one")
    ap.add_argument("--large-records", type=int, default=1_000_000)
    ap.add_argument("--large-duration", type=int, default=30, help="seconds of question stream per run")
    ap.add_argument("--large-pdns-duration", type=int, default=60, help="seconds of dnsperf at the large size")
    ap.add_argument("--large-skip-pdns", action="store_true")
    ap.add_argument("--networks-duration", type=int, default=20, help="seconds per networks run")
    ap.add_argument("--networks-sizes", default=None, help="known networks per run, e.g. 100,2000,20000")
    # A partial run (--only) writes beside the full results rather than over them.
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.only == "networks":
        os.makedirs(WORK, exist_ok=True)
        bins = [("pdns-ha", BIN)] + ([("baseline", args.baseline)] if args.baseline else [])
        networks.run(args, bins, os.path.join(REPO, "sql", "example.sql"), WORK, FOREVER)
        return
    ha, lua = make_databases()
    pdns_rows = bench_pdns(args, ha, lua) if args.only in (None, "pdns", "dnsdist") else []
    pipe_rows = bench_pipe(args, ha) if args.only in (None, "pipe") else []
    foot_rows = bench_footprint(args, ha) if args.only in (None, "footprint") else []
    large_rows = None
    if args.only in (None, "large"):
        bins = [("pdns-ha", BIN)] + ([("baseline", args.baseline)] if args.baseline else [])
        large_rows = large.run(args, bins, C_RESPONDER, os.path.join(REPO, "sql", "example.sql"), WORK, Pdns,
                               dnsperf_cmd, NETWORKS, FOREVER)
    report(args, pdns_rows, pipe_rows, foot_rows, large_rows)


if __name__ == "__main__":
    main()
