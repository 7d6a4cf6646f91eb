//! The Prometheus alert rules and the Grafana dashboard shipped in the package
//! (packaging/prometheus, packaging/grafana): promtool accepts the rules and their unit
//! tests fire the alerts they should, and both name only metrics the exporters emit.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use crate::pdns::{find_tool, require, TempDir};
use crate::util::REPO;

const RULES: &str = "packaging/prometheus/pdns-ha-alerts.yml";
const DASHBOARD: &str = "packaging/grafana/pdns-ha-dashboard.json";

fn promtool(args: &[&str]) -> (bool, String) {
    let out = Command::new(find_tool("promtool").unwrap())
        .args(args)
        .output()
        .unwrap();
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), said)
}

/// Series and the alerts they must raise (and not raise), for `promtool test rules`.
/// Annotations are compared whole, so their templates are checked too.
fn unit_tests(rules: &Path) -> String {
    format!(
        r#"rule_files:
  - {rules}
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'pdns_ha_target_up{{job="pdns-ha-monitor",instance="m:9771",target="sip1.example.com"}}'
        values: '1 1 0 0 0 0 0'
      - series: 'pdns_ha_target_up{{job="pdns-ha-monitor",instance="m:9771",target="sip2.example.com"}}'
        values: '1 1 1 1 1 1 1'
      - series: 'pdns_ha_target_drained{{job="pdns-ha-monitor",instance="m:9771",target="sip2.example.com"}}'
        values: '1x1500'
      - series: 'pdns_ha_reading_age_seconds{{job="pdns-ha-monitor",instance="m:9771",target="sip2.example.com",reading="load"}}'
        values: '0+60x20'
    alert_rule_test:
      - eval_time: 6m
        alertname: PdnsHaTargetDown
        exp_alerts:
          - exp_labels: {{severity: warning, job: pdns-ha-monitor, instance: "m:9771", target: sip1.example.com}}
            exp_annotations:
              summary: "sip1.example.com is down"
              description: "The monitor's probes of sip1.example.com have failed past --down-after for 2 minutes; answers leave it out. `pdns-ha status` shows why."
      - eval_time: 1m
        alertname: PdnsHaTargetDown
        exp_alerts: []
      - eval_time: 23h
        alertname: PdnsHaDrainedForLong
        exp_alerts: []
      - eval_time: 25h
        alertname: PdnsHaDrainedForLong
        exp_alerts:
          - exp_labels: {{severity: info, target: sip2.example.com}}
            exp_annotations:
              summary: "sip2.example.com has been drained for more than a day"
              description: "A drain is hard state and outlives every probe: `pdns-ha undrain --db DB --target sip2.example.com` brings it back once the maintenance is over."
      - eval_time: 10m
        alertname: PdnsHaReadingStale
        exp_alerts:
          - exp_labels: {{severity: warning, job: pdns-ha-monitor, instance: "m:9771", target: sip2.example.com, reading: load}}
            exp_annotations:
              summary: "load of sip2.example.com not read for 10m 0s"
              description: "A reading older than --stale-after counts as unknown, so sip2.example.com is ranked as unmeasured. Check the probe or load source (`pdns-ha status`)."
  - interval: 1m
    input_series:
      - series: 'probe_ssl_earliest_cert_expiry{{job="pdns-ha-monitor",instance="m:9771",target="sip3.example.com"}}'
        values: '864000x120'
      - series: 'probe_ssl_earliest_cert_expiry{{job="pdns-ha-monitor",instance="m:9771",target="sip4.example.com"}}'
        values: '99999999x120'
    alert_rule_test:
      - eval_time: 90m
        alertname: PdnsHaCertificateExpiring
        exp_alerts:
          - exp_labels: {{severity: warning, job: pdns-ha-monitor, instance: "m:9771", target: sip3.example.com}}
            exp_annotations:
              summary: "the TLS certificate of sip3.example.com expires in 9d 22h 30m 0s"
              description: "The monitor's TLS probe sees a certificate chain that expires within 14 days; once it has expired the service is down for every client that checks it."
  - interval: 10m
    input_series:
      # 0.02 callers/s from no known network for a day, then five times as many.
      - series: 'pdns_ha_observe_dropped_samples_total{{job="pdns-ha-observe",instance="o:9772",target="sip1.example.com",reason="unknown_network"}}'
        values: '0+12x150 1800+60x20'
      - series: 'pdns_ha_observe_dropped_samples_total{{job="pdns-ha-observe",instance="o:9772",target="sip2.example.com",reason="unknown_network"}}'
        values: '0+12x170'
    alert_rule_test:
      - eval_time: 27h
        alertname: PdnsHaUnknownNetworkCallersRising
        exp_alerts:
          - exp_labels: {{severity: info, target: sip1.example.com}}
            exp_annotations:
              summary: "more callers of sip1.example.com come from no known network"
              description: "Round trips from callers outside every ha_networks row are twice yesterday's rate: a new site or NAT address is not listed, and its callers get the static order. observe's log names the prefixes."
  - interval: 10m
    input_series:
      # A DNS node's pipes: 0.5 questions/s from no known network for a day, then 2/s;
      # another node's stay at 0.5/s.
      - series: 'pdns_ha_pipe_unknown_network_queries_total{{job="pdns-ha-monitor",instance="dns1:9771"}}'
        values: '0+300x150 45000+1200x20'
      - series: 'pdns_ha_pipe_unknown_network_queries_total{{job="pdns-ha-monitor",instance="dns2:9771"}}'
        values: '0+300x170'
    alert_rule_test:
      - eval_time: 26h
        alertname: PdnsHaUnknownNetworkQueriesRising
        exp_alerts: []
      - eval_time: 27h
        alertname: PdnsHaUnknownNetworkQueriesRising
        exp_alerts:
          - exp_labels: {{severity: info, job: pdns-ha-monitor, instance: "dns1:9771"}}
            exp_annotations:
              summary: "more DNS questions at dns1:9771 come from no known network"
              description: "The pipes of this DNS node answer twice yesterday's rate of questions from clients (or resolvers, or their ECS subnets) outside every ha_networks row; they get no per-network ranking. `pdns-ha explain --networks` shows who gets what."
"#,
        rules = rules.display()
    )
}

#[test]
fn alert_rules_pass_promtool_and_fire_as_meant() {
    if !require("promtool") {
        return;
    }
    let rules = Path::new(REPO).join(RULES);
    let (ok, said) = promtool(&["check", "rules", rules.to_str().unwrap()]);
    assert!(
        ok && said.contains("SUCCESS"),
        "promtool check rules:\n{said}"
    );
    let dir = TempDir::new("alerts");
    let tests = dir.path().join("pdns-ha-alerts.test.yml");
    std::fs::write(&tests, unit_tests(&rules)).unwrap();
    let (ok, said) = promtool(&["test", "rules", tests.to_str().unwrap()]);
    assert!(ok, "promtool test rules:\n{said}");
}

/// Every `pdns_ha_...` metric name in `text`, without a counter's `_total`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("pdns_ha_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        names.insert(name.strip_suffix("_total").unwrap_or(name).to_owned());
        rest = &tail[end..];
    }
    names
}

/// What the two exporters define (their family-name constants).
fn emitted() -> BTreeSet<String> {
    use pdns_ha::monitor::openmetrics as m;
    use pdns_ha::observe::openmetrics as o;
    [
        m::TARGET_UP,
        m::TARGET_DRAINED,
        m::TARGET_SESSIONS,
        m::TARGET_CAPACITY,
        m::TARGET_LATENCY,
        m::READING_AGE,
        m::LATENCY_AGE,
        m::PROBE_ERRORS,
        m::ROUNDS,
        m::ROUND_DURATION,
        m::PIPES,
        m::PIPE_LOOKUPS,
        m::PIPE_EMPTY,
        m::PIPE_FAILS,
        m::PIPE_BAD_LINES,
        m::PIPE_AXFRS,
        m::PIPE_NETWORK_QUERIES,
        m::PIPE_NETWORK_ANSWERS,
        m::PIPE_UNKNOWN_NETWORK,
        o::ROUND_LATENCY,
        o::CALLERS,
        o::SAMPLES,
        o::DROPPED,
        o::SOURCE_ERRORS,
    ]
    .into_iter()
    .map(str::to_owned)
    .collect()
}

/// A JSON value, as far as the check needs one.
enum Json {
    Object(Vec<(String, Json)>),
    Array(Vec<Json>),
    String(String),
    Other,
}

/// A strict enough JSON reader: Grafana refuses a dashboard that does not parse, and no
/// JSON tool is on a bare Debian.
struct Reader<'a>(&'a [u8], usize);

impl Reader<'_> {
    fn ws(&mut self) {
        while self.1 < self.0.len() && self.0[self.1].is_ascii_whitespace() {
            self.1 += 1;
        }
    }

    fn eat(&mut self, b: u8) -> Result<(), String> {
        self.ws();
        match self.0.get(self.1) {
            Some(&c) if c == b => {
                self.1 += 1;
                Ok(())
            }
            other => Err(format!(
                "at byte {}: want {:?}, got {:?}",
                self.1,
                b as char,
                other.map(|&c| c as char)
            )),
        }
    }

    fn string(&mut self) -> Result<String, String> {
        self.eat(b'"')?;
        let mut out = Vec::new();
        loop {
            let c = *self.0.get(self.1).ok_or("unterminated string")?;
            self.1 += 1;
            match c {
                b'"' => return String::from_utf8(out).map_err(|e| e.to_string()),
                b'\\' => {
                    let e = *self.0.get(self.1).ok_or("unterminated escape")?;
                    self.1 += 1;
                    match e {
                        b'"' | b'\\' | b'/' => out.push(e),
                        b'n' => out.push(b'\n'),
                        b't' => out.push(b'\t'),
                        b'b' | b'f' | b'r' => {}
                        b'u' => self.1 += 4,
                        _ => return Err(format!("bad escape at byte {}", self.1)),
                    }
                }
                c if c < 0x20 => return Err(format!("control byte in a string at {}", self.1)),
                c => out.push(c),
            }
        }
    }

    fn value(&mut self) -> Result<Json, String> {
        self.ws();
        match self.0.get(self.1) {
            Some(b'{') => {
                self.1 += 1;
                let mut members = Vec::new();
                self.ws();
                if self.0.get(self.1) == Some(&b'}') {
                    self.1 += 1;
                    return Ok(Json::Object(members));
                }
                loop {
                    let k = self.string()?;
                    self.eat(b':')?;
                    members.push((k, self.value()?));
                    self.ws();
                    match self.0.get(self.1) {
                        Some(b',') => self.1 += 1,
                        _ => {
                            self.eat(b'}')?;
                            return Ok(Json::Object(members));
                        }
                    }
                }
            }
            Some(b'[') => {
                self.1 += 1;
                let mut items = Vec::new();
                self.ws();
                if self.0.get(self.1) == Some(&b']') {
                    self.1 += 1;
                    return Ok(Json::Array(items));
                }
                loop {
                    items.push(self.value()?);
                    self.ws();
                    match self.0.get(self.1) {
                        Some(b',') => self.1 += 1,
                        _ => {
                            self.eat(b']')?;
                            return Ok(Json::Array(items));
                        }
                    }
                }
            }
            Some(b'"') => self.string().map(Json::String),
            Some(_) => {
                let start = self.1;
                while self.1 < self.0.len() && !b",}] \n\r\t".contains(&self.0[self.1]) {
                    self.1 += 1;
                }
                let word = std::str::from_utf8(&self.0[start..self.1]).unwrap_or("");
                match word == "true"
                    || word == "false"
                    || word == "null"
                    || word.parse::<f64>().is_ok()
                {
                    true => Ok(Json::Other),
                    false => Err(format!("at byte {start}: not JSON: {word:?}")),
                }
            }
            None => Err("unexpected end".into()),
        }
    }
}

/// Every string under a key named `key`, anywhere in `v`.
fn strings_under<'a>(v: &'a Json, key: &str, out: &mut Vec<&'a str>) {
    match v {
        Json::Object(members) => {
            for (k, v) in members {
                match v {
                    Json::String(s) if k == key => out.push(s),
                    _ => strings_under(v, key, out),
                }
            }
        }
        Json::Array(items) => items.iter().for_each(|i| strings_under(i, key, out)),
        _ => {}
    }
}

#[test]
fn rules_and_dashboard_name_only_metrics_the_exporters_emit() {
    let rules = std::fs::read_to_string(Path::new(REPO).join(RULES)).unwrap();
    let text = std::fs::read_to_string(Path::new(REPO).join(DASHBOARD)).unwrap();
    let mut r = Reader(text.as_bytes(), 0);
    let dashboard = r.value().unwrap_or_else(|e| panic!("{DASHBOARD}: {e}"));
    r.ws();
    assert_eq!(r.1, text.len(), "{DASHBOARD}: text after the JSON value");
    let mut exprs = Vec::new();
    strings_under(&dashboard, "expr", &mut exprs);
    assert!(
        exprs.len() >= 10,
        "{DASHBOARD}: {} panel queries",
        exprs.len()
    );
    let known = emitted();
    for (what, text) in [(RULES, rules.as_str()), (DASHBOARD, &exprs.join("\n"))] {
        let used = metric_names(text);
        let unknown: Vec<_> = used.difference(&known).collect();
        assert!(
            unknown.is_empty(),
            "{what} names metrics no exporter emits: {unknown:?}"
        );
    }
    // What the issue asks the alerts to cover, each by the metric that shows it.
    let used = metric_names(&rules);
    for m in [
        "pdns_ha_target_up",
        "pdns_ha_reading_age_seconds",
        "pdns_ha_target_drained",
        "pdns_ha_observe_dropped_samples",
    ] {
        assert!(used.contains(m), "no alert on {m}");
    }
    // The TLS probes' expiry gauge (issue 18) keeps the blackbox exporter's name, so that
    // existing certificate alerts and panels apply unchanged.
    assert!(rules.contains("probe_ssl_earliest_cert_expiry"));
}
