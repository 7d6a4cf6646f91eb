#!/usr/bin/env python3
"""bench/soak.py: a million queries per algorithm through a real pdns_server
(caches off, three coprocesses), with readings written to the database the
whole time, as a monitor would. Reports the response codes (no SERVFAIL
allowed), lost queries, and every coprocess's peak RSS sampled over the run
(flat after warm-up). Run it with `bash bench/soak.sh` (builds first).
"""
import argparse
import os
import random
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as bench  # noqa: E402  (the benchmark's pdns, database and dnsperf helpers)


def writer(db, stop, counts):
    """Pushes a reading every 50 ms: latency, load and health, all targets."""
    rnd = random.Random(7)
    while not stop.is_set():
        t = f"sip{rnd.randint(1, 8)}.example.com"
        kind = rnd.choice(["latency", "load", "health"])
        args = {
            "latency": ["--network", rnd.choice(list(bench.NETWORKS)), "--target", t, "--ms", f"{rnd.uniform(1, 80):.2f}"],
            "load": ["--target", t, "--sessions", str(rnd.randint(0, 1200)), "--max", "1000"],
            "health": ["--target", t, rnd.choice(["up", "up", "up", "down"])],
        }[kind]
        subprocess.run([bench.BIN, "metric", kind, "--db", db, *args], check=True)
        counts[0] += 1
        time.sleep(0.05)


def hwm(pids):
    out = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                out[pid] = next(int(l.split()[1]) for l in f if l.startswith("VmHWM"))
        except (OSError, StopIteration):
            pass
    return out


def soak(algorithm, db, queries, qfile):
    cmd = f"{bench.BIN} --db {db} --algorithm {algorithm}"
    pdns = bench.Pdns(dict(bench.CACHES_OFF, **{"launch": "pipe", "pipe-command": cmd, "pipe-abi-version": "3"}))
    stop, counts, samples = threading.Event(), [0], []
    w = threading.Thread(target=writer, args=(db, stop, counts))
    w.start()
    try:
        # dnsperf -n counts passes through the query file, not queries.
        with open(qfile) as f:
            lines = sum(1 for _ in f)
        per = max(1, queries // len(bench.NETWORKS) // lines)
        procs = [subprocess.Popen(["dnsperf", "-s", "127.0.0.1", "-p", str(pdns.port), "-d", qfile, "-n", str(per),
                                   "-c", "10", "-q", "20", "-t", "2", "-e", "-E", f"8:{h}"],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for h in bench.NETWORKS.values()]
        start = time.time()
        while any(p.poll() is None for p in procs):
            samples.append((time.time() - start, hwm(pdns.pids_of_coprocesses())))
            time.sleep(5)
        outs = [p.communicate()[0] for p in procs]
    finally:
        stop.set()
        w.join()
        pdns.stop()
    codes, sent, lost = {}, 0, 0
    for out in outs:
        for line in out.splitlines():
            line = line.strip()
            if line.startswith("Queries sent:"):
                sent += int(line.split()[2])
            elif line.startswith("Queries lost:"):
                lost += int(line.split()[2])
            elif line.startswith("Response codes:"):
                for part in line.split(":", 1)[1].split(","):
                    name, n = part.split()[:2]
                    codes[name] = codes.get(name, 0) + int(n)
    warm = [s for t, s in samples if t >= 10] or [s for _, s in samples]
    first, last = warm[0], warm[-1]
    growth = {pid: last.get(pid, 0) - kb for pid, kb in first.items() if pid in last}
    return dict(algorithm=algorithm, sent=sent, lost=lost, codes=codes, writes=counts[0],
                seconds=samples[-1][0] if samples else 0, hwm=sorted(last.values()), growth=sorted(growth.values()))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--queries", type=int, default=1_000_000, help="per algorithm")
    args = ap.parse_args()
    ha, _ = bench.make_databases()
    qfile = os.path.join(bench.WORK, "queries-soak.txt")
    with open(qfile, "w") as f:
        f.write("_sip._udp.example.com SRV\n" + "".join(f"sip{i}.example.com A\n" for i in range(1, 9)))
    rows = [soak(alg, ha, args.queries, qfile) for alg in ("static", "least-latency", "least-load")]
    print("\n| algorithm | queries sent | response codes | lost | readings written | coprocess VmHWM at end (KiB) | VmHWM growth after 10 s (KiB) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        codes = ", ".join(f"{k} {v}" for k, v in sorted(r["codes"].items()))
        print(f"| {r['algorithm']} | {r['sent']} | {codes} | {r['lost']} | {r['writes']} | "
              f"{', '.join(map(str, r['hwm']))} | {', '.join(map(str, r['growth']))} |")
    bad = [r for r in rows if any(k != "NOERROR" for k in r["codes"])]
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
