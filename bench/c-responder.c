/* bench/c-responder.c: the ceiling of the pipe ABI for the benchmark, a minimal
 * PowerDNS pipe responder in C answering the enterprise SRV example from
 * hard-coded data (ABI 3 format). With --end-only it answers END to every
 * question: the do-nothing baseline of the pipe microbenchmark. */
#include <stdio.h>
#include <string.h>
#include <strings.h>

struct rec { const char *name, *type, *content; int ttl; };

static const struct rec RECS[] = {
    {"example.com", "SOA", "ns1.example.com. hostmaster.example.com. 2026112201 10800 3600 604800 300", 3600},
    {"example.com", "NS", "ns1.example.com.", 3600},
    {"example.com", "NS", "ns2.example.com.", 3600},
    {"example.com", "MX", "10\tmail.example.com.", 3600},
    {"example.com", "TXT", "\"v=spf1 -all\"", 3600},
    {"ns1.example.com", "A", "192.0.2.1", 3600},
    {"ns2.example.com", "A", "198.51.100.1", 3600},
    {"mail.example.com", "A", "192.0.2.25", 3600},
    {"www.example.com", "A", "192.0.2.80", 3600},
    {"www.example.com", "AAAA", "2001:db8::80", 3600},
    {"_sip._udp.example.com", "SRV", "10\t50 5060 sip1.example.com.", 300},
    {"_sip._udp.example.com", "SRV", "10\t25 5060 sip2.example.com.", 300},
    {"_sip._udp.example.com", "SRV", "10\t25 5060 sip3.example.com.", 300},
    {"_sip._udp.example.com", "SRV", "20\t20 5060 sip4.example.com.", 300},
    {"_sip._udp.example.com", "SRV", "20\t20 5060 sip5.example.com.", 300},
    {"_sip._udp.example.com", "SRV", "20\t10 5060 sip6.example.com.", 300},
    {"_sip._udp.example.com", "SRV", "30\t10 5060 sip7.example.com.", 300},
    {"_sip._udp.example.com", "SRV", "30\t10 5060 sip8.example.com.", 300},
    {"sip1.example.com", "A", "192.0.2.11", 300},
    {"sip2.example.com", "A", "192.0.2.12", 300},
    {"sip3.example.com", "A", "192.0.2.13", 300},
    {"sip4.example.com", "A", "198.51.100.14", 300},
    {"sip5.example.com", "A", "198.51.100.15", 300},
    {"sip6.example.com", "A", "198.51.100.16", 300},
    {"sip7.example.com", "A", "203.0.113.17", 300},
    {"sip8.example.com", "A", "203.0.113.18", 300},
    {"sip.example.com", "A", "192.0.2.11", 300},
    {"sip.example.com", "A", "198.51.100.14", 300},
};

int main(int argc, char **argv) {
    int end_only = argc > 1 && strcmp(argv[1], "--end-only") == 0;
    char line[2048];
    while (fgets(line, sizeof line, stdin)) {
        line[strcspn(line, "\n")] = 0;
        char *f[8] = {0};
        int n = 0;
        for (char *p = strtok(line, "\t"); p && n < 8; p = strtok(NULL, "\t")) f[n++] = p;
        if (n >= 1 && strcmp(f[0], "HELO") == 0) {
            fputs("OK\tc-responder\n", stdout);
        } else if (n >= 4 && strcmp(f[0], "Q") == 0 && !end_only) {
            int any = strcmp(f[3], "ANY") == 0;
            for (size_t i = 0; i < sizeof RECS / sizeof *RECS; i++) {
                const struct rec *r = &RECS[i];
                if (strcasecmp(r->name, f[1]) == 0 && (any || strcmp(r->type, f[3]) == 0))
                    printf("DATA\t0\t1\t%s\tIN\t%s\t%d\t1\t%s\n", r->name, r->type, r->ttl, r->content);
            }
            fputs("END\n", stdout);
        } else {
            fputs("END\n", stdout);
        }
        fflush(stdout);
    }
    return 0;
}
