//! `loadtest report`: turns two JSON-lines result files (Berth and the
//! baseline registry) plus `openssl speed` output into a markdown table; with
//! the results of the same scenarios with authentication on, it adds rows
//! showing what auth costs each registry.

use std::collections::HashMap;

use anyhow::{Context as _, Result};
use serde_json::Value;

pub type Results = HashMap<String, Value>;

/// Reads JSON lines; a later record of the same scenario replaces an
/// earlier one. Lines that are not JSON objects are ignored.
pub fn parse_results(text: &str) -> Results {
    let mut m = HashMap::new();
    for line in text.lines() {
        if let Ok(v @ Value::Object(_)) = serde_json::from_str::<Value>(line.trim()) {
            if let Some(s) = v.get("scenario").and_then(Value::as_str) {
                m.insert(s.to_string(), v);
            }
        }
    }
    m
}

pub fn load(path: &std::path::Path) -> Result<Results> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(parse_results(&text))
}

/// SHA-256 throughput at the 16384-byte block size, MiB/s, from the output
/// of `openssl speed -evp sha256` (the figures are in 1000s of bytes/s).
pub fn parse_openssl(text: &str) -> Option<f64> {
    let mut header: Option<Vec<String>> = None;
    let mut result = None;
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with("type") {
            header = Some(t.split_whitespace().map(str::to_string).collect());
            continue;
        }
        let lower = t.to_ascii_lowercase();
        if !(lower.starts_with("sha256") || lower.starts_with("sha2-256")) {
            continue;
        }
        let values: Vec<&str> = t.split_whitespace().skip(1).collect();
        // Column of "16384 bytes" in the header, else the last column.
        let idx = header
            .as_ref()
            .and_then(|h| {
                let sizes: Vec<&String> = h.iter().skip(1).step_by(2).collect();
                sizes.iter().position(|s| s.as_str() == "16384")
            })
            .unwrap_or(values.len().saturating_sub(1));
        if let Some(v) = values.get(idx) {
            if let Ok(k) = v.trim_end_matches('k').parse::<f64>() {
                result = Some(k * 1000.0 / (1024.0 * 1024.0));
            }
        }
    }
    result
}

#[derive(Clone, Copy)]
enum Target {
    /// ratio (as "times better") must be ≥ this
    Ratio(f64),
    /// Berth's figure must be ≥ this fraction of openssl's SHA-256 rate
    ShaFraction(f64),
    /// Berth's figure must be below this (MiB)
    Below(f64),
    None,
}

struct Row {
    scenario: &'static str,
    field: &'static str,
    metric: &'static str,
    higher_better: bool,
    target: Target,
}

const ROWS: &[Row] = &[
    Row {
        scenario: "push-blob",
        field: "mib_per_s",
        metric: "MiB/s",
        higher_better: true,
        target: Target::ShaFraction(0.8),
    },
    Row {
        scenario: "pull-blob",
        field: "mib_per_s",
        metric: "MiB/s",
        higher_better: true,
        target: Target::Ratio(1.0),
    },
    Row {
        scenario: "chunked-upload",
        field: "mib_per_s",
        metric: "MiB/s",
        higher_better: true,
        target: Target::Ratio(1.5),
    },
    Row {
        scenario: "push-images",
        field: "images_per_s",
        metric: "images/s",
        higher_better: true,
        target: Target::Ratio(1.5),
    },
    Row {
        scenario: "push-images",
        field: "p50_ms",
        metric: "manifest PUT p50 ms",
        higher_better: false,
        target: Target::Ratio(1.5),
    },
    Row {
        scenario: "push-images",
        field: "p99_ms",
        metric: "manifest PUT p99 ms",
        higher_better: false,
        target: Target::Ratio(1.5),
    },
    Row {
        scenario: "get-manifest",
        field: "req_per_s",
        metric: "req/s",
        higher_better: true,
        target: Target::Ratio(1.5),
    },
    Row {
        scenario: "get-manifest",
        field: "p99_ms",
        metric: "p99 ms",
        higher_better: false,
        target: Target::Ratio(1.5),
    },
    Row {
        scenario: "head-blob",
        field: "req_per_s",
        metric: "req/s",
        higher_better: true,
        target: Target::Ratio(1.5),
    },
    Row {
        scenario: "head-blob",
        field: "p99_ms",
        metric: "p99 ms",
        higher_better: false,
        target: Target::Ratio(1.5),
    },
    Row {
        scenario: "concurrent-push",
        field: "mib_per_s",
        metric: "aggregate MiB/s",
        higher_better: true,
        target: Target::None,
    },
    Row {
        scenario: "concurrent-push",
        field: "rss_mib",
        metric: "peak RSS MiB",
        higher_better: false,
        target: Target::Below(256.0),
    },
];

/// The scenarios re-run with authentication on (Berth: token flow; baseline:
/// htpasswd Basic), and the rate each is judged by.
const AUTH_ROWS: &[(&str, &str, &str)] = &[
    ("push-images", "images_per_s", "images/s"),
    ("get-manifest", "req_per_s", "req/s"),
];

/// Auth may cost Berth at most this fraction of its unauthenticated rate.
const AUTH_COST_MAX: f64 = 0.10;

/// Results of the runs with authentication on.
#[derive(Default)]
pub struct Authed {
    pub berth: Results,
    pub baseline: Results,
}

/// 1 − authed/unauthed: the share of the rate that authentication takes.
fn auth_cost(authed: Option<f64>, unauthed: Option<f64>) -> Option<f64> {
    match (authed, unauthed) {
        (Some(a), Some(u)) if u > 0.0 => Some(1.0 - a / u),
        _ => None,
    }
}

fn fmt_cost(cost: Option<f64>) -> String {
    cost.map_or("—".into(), |c| format!("{:.1} %", c * 100.0))
}

fn get(r: &Results, scenario: &str, field: &str) -> Option<f64> {
    let v = r.get(scenario)?;
    if field == "rss_mib" {
        // VmHWM (reset at the scenario's start where the kernel allows),
        // else the sampled VmRSS peak.
        return v
            .get("vmhwm_mib")
            .and_then(Value::as_f64)
            .or_else(|| v.get("peak_rss_mib").and_then(Value::as_f64));
    }
    v.get(field)?.as_f64()
}

fn label(a: &Results, b: &Results, scenario: &str) -> String {
    let rec = a.get(scenario).or_else(|| b.get(scenario));
    let n = |k: &str| rec.and_then(|v| v.get(k)).and_then(Value::as_u64);
    let size = |mib: Option<u64>| match mib {
        Some(m) if m >= 1024 && m % 1024 == 0 => format!("{} GiB", m / 1024),
        Some(m) => format!("{m} MiB"),
        None => "?".into(),
    };
    match scenario {
        "push-blob" => format!("push {} blob (monolithic)", size(n("size_mib"))),
        "pull-blob" => format!("pull {} blob", size(n("size_mib"))),
        "chunked-upload" => format!(
            "chunked upload {} in {} MiB PATCHes",
            size(n("size_mib")),
            n("chunk_mib").map_or("?".into(), |c| c.to_string())
        ),
        "push-images" => format!(
            "push {} images (config + 3 × 256 KiB), c={}",
            n("count").map_or("?".into(), |c| c.to_string()),
            n("concurrency").map_or("?".into(), |c| c.to_string())
        ),
        "get-manifest" => format!(
            "GET manifest by tag, {} conns",
            n("concurrency").map_or("?".into(), |c| c.to_string())
        ),
        "head-blob" => format!(
            "HEAD blob, {} conns",
            n("concurrency").map_or("?".into(), |c| c.to_string())
        ),
        "concurrent-push" => format!(
            "{} concurrent {} uploads",
            n("concurrency").map_or("?".into(), |c| c.to_string()),
            size(n("size_mib"))
        ),
        s => s.to_string(),
    }
}

fn fmt(x: Option<f64>) -> String {
    match x {
        Some(v) if v >= 100.0 => format!("{v:.0}"),
        Some(v) if v >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.2}"),
        None => "—".into(),
    }
}

pub struct Summary {
    pub markdown: String,
    pub met: usize,
    pub missed: usize,
}

pub fn render(
    berth: &Results,
    base: &Results,
    authed: &Authed,
    sha_mibs: Option<f64>,
    notes: &[String],
) -> Summary {
    let mut out = String::new();
    out.push_str("| scenario | metric | Berth | docker-registry | ratio | target | met? |\n");
    out.push_str("|---|---|---:|---:|---:|---|---|\n");
    let (mut met, mut missed) = (0, 0);
    for row in ROWS {
        if !berth.contains_key(row.scenario) && !base.contains_key(row.scenario) {
            continue;
        }
        let a = get(berth, row.scenario, row.field);
        let b = get(base, row.scenario, row.field);
        let ratio = match (a, b) {
            (Some(a), Some(b)) if a > 0.0 && b > 0.0 => {
                Some(if row.higher_better { a / b } else { b / a })
            }
            _ => None,
        };
        let (target, ok) = match row.target {
            Target::Ratio(t) => (format!("≥ {t:.1}×"), ratio.map(|r| r >= t)),
            Target::ShaFraction(f) => match sha_mibs {
                Some(s) => (
                    format!("≥ {:.0} % of SHA-256 ({:.0} MiB/s)", f * 100.0, f * s),
                    a.map(|a| a >= f * s),
                ),
                None => (
                    format!("≥ {:.0} % of SHA-256 (not measured)", f * 100.0),
                    None,
                ),
            },
            Target::Below(m) => (format!("< {m:.0} MiB"), a.map(|a| a < m)),
            Target::None => ("—".into(), None),
        };
        let verdict = match (row.target, ok) {
            (Target::None, _) => "".to_string(),
            (_, Some(true)) => {
                met += 1;
                "yes".into()
            }
            (_, Some(false)) => {
                missed += 1;
                "**no**".into()
            }
            (_, None) => {
                missed += 1;
                "n/a".into()
            }
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            label(berth, base, row.scenario),
            row.metric,
            fmt(a),
            fmt(b),
            ratio.map_or("—".into(), |r| format!("{r:.2}×")),
            target,
            verdict
        ));
    }
    for (scenario, field, metric) in AUTH_ROWS {
        if !authed.berth.contains_key(*scenario) && !authed.baseline.contains_key(*scenario) {
            continue;
        }
        let a = get(&authed.berth, scenario, field);
        let b = get(&authed.baseline, scenario, field);
        let ratio = match (a, b) {
            (Some(a), Some(b)) if a > 0.0 && b > 0.0 => Some(a / b),
            _ => None,
        };
        let berth_cost = auth_cost(a, get(berth, scenario, field));
        let base_cost = auth_cost(b, get(base, scenario, field));
        let verdict = match berth_cost {
            Some(c) if c < AUTH_COST_MAX => {
                met += 1;
                "yes"
            }
            Some(_) => {
                missed += 1;
                "**no**"
            }
            None => {
                missed += 1;
                "n/a"
            }
        };
        out.push_str(&format!(
            "| {}, auth on | {metric} | {} | {} | {} | auth cost < {:.0} % (Berth {}, docker-registry {}) | {verdict} |\n",
            label(&authed.berth, &authed.baseline, scenario),
            fmt(a),
            fmt(b),
            ratio.map_or("—".into(), |r| format!("{r:.2}×")),
            AUTH_COST_MAX * 100.0,
            fmt_cost(berth_cost),
            fmt_cost(base_cost),
        ));
    }
    out.push_str(&format!(
        "| `openssl speed -evp sha256`, 16 KiB blocks, 1 core | MiB/s | {} | | | | |\n",
        fmt(sha_mibs)
    ));
    out.push('\n');
    out.push_str(
        "Ratio = how many times better Berth is: Berth ÷ docker-registry for throughput, \
         docker-registry ÷ Berth for latency and memory.\n",
    );
    if !authed.berth.is_empty() || !authed.baseline.is_empty() {
        out.push_str(
            "\n\"Auth on\" rows: Berth with the Docker token flow (Basic to the token \
             endpoint once per repository scope, then Bearer tokens, cached as docker \
             does), docker-registry with htpasswd (bcrypt-checked Basic on every request). \
             Auth cost = 1 − rate with auth ÷ rate without, per registry.\n",
        );
    }
    for n in notes {
        out.push_str(&format!("\n{n}\n"));
    }
    out.push_str(&format!("\nTargets met: {met} of {}.\n", met + missed));
    Summary {
        markdown: out,
        met,
        missed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openssl_single_size() {
        let out = "Doing sha256 ops for 3s on 16384 size blocks: 400000 sha256 ops in 2.99s\n\
                   version: 3.0.19\n\
                   The 'numbers' are in 1000s of bytes per second processed.\n\
                   type             16384 bytes\n\
                   sha256         2097152.00k\n";
        let v = parse_openssl(out).unwrap();
        assert!((v - 2000.0).abs() < 0.01, "{v}");
    }

    #[test]
    fn openssl_all_sizes() {
        let out = "type             16 bytes     64 bytes    256 bytes   1024 bytes   8192 bytes  16384 bytes\n\
                   sha256          1.00k 2.00k 3.00k 4.00k 5.00k 1048576.00k\n";
        assert!((parse_openssl(out).unwrap() - 1000.0).abs() < 0.01);
        assert_eq!(parse_openssl("nothing here"), None);
    }

    #[test]
    fn table() {
        let berth = parse_results(
            r#"{"scenario":"push-blob","mib_per_s":1700.0,"size_mib":1024}
{"scenario":"pull-blob","mib_per_s":900.0,"size_mib":1024}
{"scenario":"head-blob","req_per_s":30000.0,"p99_ms":2.0,"concurrency":64}
{"scenario":"concurrent-push","mib_per_s":800.0,"size_mib":1024,"concurrency":32,"vmhwm_mib":120.5}
not json"#,
        );
        let base = parse_results(
            r#"{"scenario":"push-blob","mib_per_s":500.0,"size_mib":1024}
{"scenario":"pull-blob","mib_per_s":1000.0,"size_mib":1024}
{"scenario":"head-blob","req_per_s":10000.0,"p99_ms":4.0,"concurrency":64}"#,
        );
        let s = render(
            &berth,
            &base,
            &Authed::default(),
            Some(2000.0),
            &["note".into()],
        );
        let md = &s.markdown;
        assert!(md.contains("| push 1 GiB blob (monolithic) | MiB/s | 1700 | 500 | 3.40× | ≥ 80 % of SHA-256 (1600 MiB/s) | yes |"), "{md}");
        assert!(
            md.contains("| pull 1 GiB blob | MiB/s | 900 | 1000 | 0.90× | ≥ 1.0× | **no** |"),
            "{md}"
        );
        assert!(
            md.contains("| HEAD blob, 64 conns | p99 ms | 2.00 | 4.00 | 2.00× | ≥ 1.5× | yes |"),
            "{md}"
        );
        assert!(
            md.contains(
                "| 32 concurrent 1 GiB uploads | peak RSS MiB | 120 | — | — | < 256 MiB | yes |"
            ),
            "{md}"
        );
        assert!(!md.contains("chunked"));
        assert!(!md.contains("auth on"));
        assert_eq!((s.met, s.missed), (4, 1));
    }

    #[test]
    fn auth_rows() {
        let berth = parse_results(
            r#"{"scenario":"push-images","images_per_s":100.0,"count":500,"concurrency":32}
{"scenario":"get-manifest","req_per_s":20000.0,"concurrency":64}"#,
        );
        let base = parse_results(
            r#"{"scenario":"push-images","images_per_s":50.0,"count":500,"concurrency":32}
{"scenario":"get-manifest","req_per_s":10000.0,"concurrency":64}"#,
        );
        let authed = Authed {
            berth: parse_results(
                r#"{"scenario":"push-images","images_per_s":95.0,"count":500,"concurrency":32,"auth":"token"}
{"scenario":"get-manifest","req_per_s":17000.0,"concurrency":64,"auth":"token"}"#,
            ),
            baseline: parse_results(
                r#"{"scenario":"push-images","images_per_s":40.0,"count":500,"concurrency":32,"auth":"basic"}
{"scenario":"get-manifest","req_per_s":2000.0,"concurrency":64,"auth":"basic"}"#,
            ),
        };
        let s = render(&berth, &base, &authed, None, &[]);
        let md = &s.markdown;
        assert!(md.contains(
            "| push 500 images (config + 3 × 256 KiB), c=32, auth on | images/s | 95.0 | 40.0 | 2.38× \
             | auth cost < 10 % (Berth 5.0 %, docker-registry 20.0 %) | yes |"
        ), "{md}");
        assert!(
            md.contains(
                "| GET manifest by tag, 64 conns, auth on | req/s | 17000 | 2000 | 8.50× \
             | auth cost < 10 % (Berth 15.0 %, docker-registry 80.0 %) | **no** |"
            ),
            "{md}"
        );
        assert!(
            md.contains("Auth cost = 1 − rate with auth ÷ rate without"),
            "{md}"
        );
    }
}
