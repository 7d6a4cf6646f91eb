#!/usr/bin/env python3
"""bench/py-responder.py: a straightforward pipe responder in Python, the
footprint a user writing their own would get (RSS comparison only)."""
import sys

RECS = {}
for name, rtype, content, ttl in [
    ("example.com", "SOA", "ns1.example.com. hostmaster.example.com. 2026112201 10800 3600 604800 300", 3600),
    ("example.com", "NS", "ns1.example.com.", 3600),
    ("_sip._udp.example.com", "SRV", "10\t50 5060 sip1.example.com.", 300),
    ("_sip._udp.example.com", "SRV", "10\t25 5060 sip2.example.com.", 300),
    ("_sip._udp.example.com", "SRV", "20\t20 5060 sip4.example.com.", 300),
    ("sip1.example.com", "A", "192.0.2.11", 300),
]:
    RECS.setdefault(name, []).append((rtype, content, ttl))

for line in sys.stdin:
    f = line.rstrip("\n").split("\t")
    if f[0] == "HELO":
        sys.stdout.write("OK\tpy-responder\n")
    elif f[0] == "Q" and len(f) >= 4:
        for rtype, content, ttl in RECS.get(f[1].lower(), []):
            if f[3] in ("ANY", rtype):
                sys.stdout.write(f"DATA\t0\t1\t{f[1].lower()}\tIN\t{rtype}\t{ttl}\t1\t{content}\n")
        sys.stdout.write("END\n")
    else:
        sys.stdout.write("END\n")
    sys.stdout.flush()
