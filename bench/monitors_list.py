"""bench/monitors_list.py: a pipe under a planted monitors list (issue 19).

A real memcached holds a 1 MB `pdns-ha:monitors` list of 150,000 ids, as the
adversarial review planted it; one honest monitor has published a sealed
verdict. A pipe process (least-latency, the key file in use) then answers
2,000 lookups of the example's SRV name over about ten seconds (one every
5 ms, so that some ten memcached fetches, one a second, fall among them),
each answer timed from write to terminator. Reported per binary: p50, p99
and max of the lookups, how many were answered within the time limit, and
the process's peak memory (VmHWM) and private memory (smaps_rollup).

    python3 bench/monitors_list.py --bin target/release/pdns-ha [--baseline OLD_BIN]

The build is also measured without the planted list, for comparison.

Times include the Python driver's own round trip (write, read, parse).
"""
import argparse
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECRET = "bench-monitors-list-secret-0123456789"
LOOKUPS = 2000
PACE = 0.005
DEADLINE = 120.0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mc_set(port, key, value):
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"set %s 0 0 %d\r\n%s\r\n" % (key.encode(), len(value), value))
        reply = s.recv(100)
        assert reply == b"STORED\r\n", reply


def planted_list():
    ids = b" ".join(b"m%05d" % i for i in range(150_000))
    return ids[:1_000_000]


def memory(pid):
    peak = private = None
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                peak = int(line.split()[1])
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith(("Private_Clean:", "Private_Dirty:")):
                private = (private or 0) + int(line.split()[1])
    return peak, private


def run(bin_, label, plant=True):
    work = tempfile.mkdtemp(prefix="pdns-ha-bench-monitors.")
    mc = None
    pipe = None
    try:
        db = os.path.join(work, "ha.db")
        subprocess.run([bin_, "init", "--db", db, os.path.join(REPO, "sql/example.sql")],
                       check=True, capture_output=True)
        key = os.path.join(work, "key")
        with open(key, "w") as f:
            f.write(SECRET + "\n")
        os.chmod(key, 0o600)
        port = free_port()
        cmd = ["memcached", "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-m", "64", "-t", "1"]
        if os.geteuid() == 0:
            cmd += ["-u", "root"]
        mc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port)).close()
                break
            except OSError:
                time.sleep(0.05)
        servers = f"127.0.0.1:{port}"
        shared = ["--memcached", servers, "--memcached-key-file", key]
        # An honest monitor's sealed verdict, then the list planted over its entry.
        subprocess.run([bin_, "metric", "health", "--db", db, "--target", "sip1.example.com",
                        "down", "--monitor-id", "site"] + shared, check=True, capture_output=True)
        if plant:
            mc_set(port, "pdns-ha:monitors", planted_list())
        pipe = subprocess.Popen([bin_, "--db", db, "--algorithm", "least-latency"] + shared,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL)
        out = pipe.stdout
        fd = out.fileno()
        buf = b""

        def answer(line, limit):
            nonlocal buf
            pipe.stdin.write(line)
            pipe.stdin.flush()
            end = time.monotonic() + limit
            while True:
                for term in (b"\nEND\n", b"\nFAIL\n"):
                    if term in b"\n" + buf:
                        i = (b"\n" + buf).index(term) + len(term) - 1
                        buf = buf[i:]
                        return True
                if buf.startswith(b"OK\t") and b"\n" in buf:
                    buf = buf[buf.index(b"\n") + 1:]
                    return True
                left = end - time.monotonic()
                if left <= 0:
                    return False
                ready, _, _ = select.select([fd], [], [], left)
                if ready:
                    chunk = os.read(fd, 65536)
                    if not chunk:
                        return False
                    buf += chunk

        started = time.monotonic()
        assert answer(b"HELO\t5\n", 30), "no banner"
        q = b"Q\t_sip._udp.example.com\tIN\tANY\t-1\t127.0.0.1\t127.0.0.1\t127.0.0.1/32\n"
        times = []
        while len(times) < LOOKUPS and time.monotonic() - started < DEADLINE:
            t = time.perf_counter()
            if not answer(q, max(0.1, DEADLINE - (time.monotonic() - started))):
                break
            times.append((time.perf_counter() - t) * 1000.0)
            time.sleep(PACE)
        peak, private = memory(pipe.pid)
        times.sort()
        pct = lambda p: times[min(len(times) - 1, int(len(times) * p))] if times else float("nan")
        print(f"{label}: {len(times)}/{LOOKUPS} lookups in {time.monotonic() - started:.1f} s; "
              f"p50 {pct(0.5):.3f} ms, p99 {pct(0.99):.3f} ms, max {times[-1] if times else float('nan'):.3f} ms; "
              f"peak memory (VmHWM) {peak / 1024:.1f} MiB, private {private / 1024:.1f} MiB")
    finally:
        if pipe:
            pipe.kill()
            pipe.wait()
        if mc:
            mc.kill()
            mc.wait()
        shutil.rmtree(work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", default=os.path.join(REPO, "target/release/pdns-ha"))
    ap.add_argument("--baseline", help="an older build, measured the same way")
    a = ap.parse_args()
    if not shutil.which("memcached"):
        sys.exit("memcached not found: apt-get install memcached")
    run(a.bin, "this build, no list planted", plant=False)
    run(a.bin, "this build")
    if a.baseline:
        run(a.baseline, "baseline")


if __name__ == "__main__":
    main()
