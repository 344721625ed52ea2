//! `loadtest join`: the client's per-turn log against a server's own rows
//! (a gateway's request table exported as CSV or JSONL, or the mock's
//! `--log-requests`), to tell the time a request spent inside the server's
//! handler from the time outside it (accept, TLS, queueing, the network).
//!
//! Rows are matched on the request id (`<conversation UUID>-t<turn>`, one
//! row each side) or on the conversation UUID (a conversation's turns in
//! order against its server rows in file order). Nothing is dropped
//! silently: rows matched on neither side and keys seen twice are counted.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

/// Which client field rows are matched on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    /// `request_id`: one row per request on each side.
    RequestId,
    /// `conv_uuid`: a conversation's rows in order.
    ConvUuid,
}

impl Key {
    /// The client log's field name (and the server column's default).
    pub fn name(self) -> &'static str {
        match self {
            Key::RequestId => "request_id",
            Key::ConvUuid => "conv_uuid",
        }
    }
}

/// Which server columns hold what.
#[derive(Debug, Clone)]
pub struct Columns {
    /// The key.
    pub key: String,
    /// Time inside the handler, milliseconds.
    pub latency: String,
    /// Time to the server's first response byte, milliseconds (optional).
    pub ttfb: String,
    /// Time the server waited on its own upstream, milliseconds
    /// (optional).
    pub upstream: String,
}

/// One client turn, as the per-turn log has it.
#[derive(Debug, Clone, Default)]
struct ClientRow {
    key: String,
    scenario: String,
    /// The service it ran against (comparisons only).
    service: Option<String>,
    turn: u64,
    start_us: u64,
    latency_ms: Option<f64>,
    ttft_ms: Option<f64>,
    error: Option<String>,
}

/// One server row: the fields `Columns` names.
#[derive(Debug, Clone, Default)]
struct ServerRow {
    key: String,
    latency_ms: Option<f64>,
    ttfb_ms: Option<f64>,
    upstream_ms: Option<f64>,
}

/// A client row and the server row it matched.
#[derive(Debug, Clone)]
struct Pair {
    client: ClientRow,
    server: ServerRow,
}

/// What a join found.
#[derive(Debug, Default)]
pub struct Joined {
    pairs: Vec<Pair>,
    /// Client rows (outside warm-up) no server row matched.
    pub client_unmatched: u64,
    /// Server rows no client row matched.
    pub server_unmatched: u64,
    /// Keys seen more than once among the client rows (request-id key).
    pub client_duplicates: u64,
    /// Keys seen more than once among the server rows (request-id key).
    pub server_duplicates: u64,
    /// Client rows in total (outside warm-up).
    pub client_rows: u64,
    /// Server rows in total.
    pub server_rows: u64,
}

/// Reads the client's per-turn log (JSONL); warm-up rows are left out, as
/// every statistic leaves them out. Errors name the line.
fn client_rows(text: &str, key: Key) -> Result<Vec<ClientRow>, String> {
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = match serde_json::from_str(line) {
            Ok(v) => v,
            // A crash leaves at most a partial last line.
            Err(_) if i + 1 == text.lines().count() => continue,
            Err(e) => return Err(format!("line {}: not JSON ({e})", i + 1)),
        };
        if v["warmup"] == true {
            continue;
        }
        let Some(k) = v[key.name()].as_str() else {
            return Err(format!(
                "line {}: no `{}` (was a correlation header sent?)",
                i + 1,
                key.name()
            ));
        };
        rows.push(ClientRow {
            key: k.to_string(),
            scenario: v["scenario"].as_str().unwrap_or("?").to_string(),
            service: v["service"].as_str().map(str::to_string),
            turn: v["turn"].as_u64().unwrap_or(0),
            start_us: v["start_us"].as_u64().unwrap_or(0),
            latency_ms: v["latency_ms"].as_f64(),
            ttft_ms: v["ttft_ms"].as_f64(),
            error: v["error"].as_str().map(str::to_string),
        });
    }
    Ok(rows)
}

/// Reads server rows: JSONL (a line per row) or CSV with a header row,
/// told apart by the first character. Errors name the line and column.
fn server_rows(text: &str, columns: &Columns) -> Result<Vec<ServerRow>, String> {
    let records = if text.trim_start().starts_with('{') {
        jsonl_records(text)?
    } else {
        csv_records(text)?
    };
    let number = |record: &HashMap<String, String>, column: &str| {
        record
            .get(column)
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    let mut rows = Vec::new();
    for (line, record) in records {
        let Some(key) = record.get(&columns.key).filter(|k| !k.is_empty()) else {
            return Err(format!(
                "row at line {line}: no `{}` column value (set it with --server-key)",
                columns.key
            ));
        };
        rows.push(ServerRow {
            key: key.clone(),
            latency_ms: number(&record, &columns.latency),
            ttfb_ms: number(&record, &columns.ttfb),
            upstream_ms: number(&record, &columns.upstream),
        });
    }
    Ok(rows)
}

type Record = (usize, HashMap<String, String>);

fn jsonl_records(text: &str) -> Result<Vec<Record>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Map<String, serde_json::Value> = serde_json::from_str(line)
            .map_err(|e| format!("line {}: not a JSON object ({e})", i + 1))?;
        let record = v
            .into_iter()
            .map(|(k, v)| {
                let text = match v {
                    serde_json::Value::String(s) => s,
                    serde_json::Value::Null => String::new(),
                    other => other.to_string(),
                };
                (k, text)
            })
            .collect();
        out.push((i + 1, record));
    }
    Ok(out)
}

fn csv_records(text: &str) -> Result<Vec<Record>, String> {
    let mut lines = csv_rows(text)?.into_iter();
    let Some((_, header)) = lines.next() else {
        return Ok(Vec::new());
    };
    lines
        .map(|(line, fields)| {
            if fields.len() != header.len() {
                return Err(format!(
                    "line {line}: {} fields, the header has {}",
                    fields.len(),
                    header.len()
                ));
            }
            Ok((line, header.iter().cloned().zip(fields).collect()))
        })
        .collect()
}

/// RFC 4180 CSV: fields split on commas, quoted fields may hold commas,
/// quotes (doubled) and line breaks. Returns (line, fields) per record.
fn csv_rows(text: &str) -> Result<Vec<(usize, Vec<String>)>, String> {
    let mut rows = Vec::new();
    let (mut fields, mut field) = (Vec::new(), String::new());
    let (mut quoted, mut line, mut start) = (false, 1, 1);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(std::mem::take(&mut field)),
            ('\r', false) => {}
            ('\n', false) => {
                fields.push(std::mem::take(&mut field));
                if fields.len() > 1 || !fields[0].is_empty() {
                    rows.push((start, std::mem::take(&mut fields)));
                }
                fields.clear();
                line += 1;
                start = line;
            }
            (c, _) => {
                line += usize::from(c == '\n');
                field.push(c);
            }
        }
    }
    if quoted {
        return Err(format!("line {start}: a quoted field never ends"));
    }
    if !field.is_empty() || !fields.is_empty() {
        fields.push(field);
        rows.push((start, fields));
    }
    Ok(rows)
}

/// Joins the client's log with the server's rows.
pub fn join(client: &str, server: &str, key: Key, columns: &Columns) -> Result<Joined, String> {
    let client = client_rows(client, key).map_err(|e| format!("client log: {e}"))?;
    let server = server_rows(server, columns).map_err(|e| format!("server rows: {e}"))?;
    let mut joined = Joined {
        client_rows: client.len() as u64,
        server_rows: server.len() as u64,
        ..Joined::default()
    };
    let mut by_key: HashMap<String, Vec<ServerRow>> = HashMap::new();
    for row in server {
        by_key.entry(row.key.clone()).or_default().push(row);
    }
    let mut clients: BTreeMap<String, Vec<ClientRow>> = BTreeMap::new();
    for row in client {
        clients.entry(row.key.clone()).or_default().push(row);
    }
    for (k, mut mine) in clients {
        let theirs = by_key.remove(&k).unwrap_or_default();
        if key == Key::RequestId {
            joined.client_duplicates += u64::from(mine.len() > 1);
            joined.server_duplicates += u64::from(theirs.len() > 1);
        }
        mine.sort_by_key(|r| (r.turn, r.start_us));
        let paired = mine.len().min(theirs.len());
        joined.client_unmatched += (mine.len() - paired) as u64;
        joined.server_unmatched += (theirs.len() - paired) as u64;
        for (client, server) in mine.into_iter().zip(theirs) {
            joined.pairs.push(Pair { client, server });
        }
    }
    for rest in by_key.into_values() {
        joined.server_unmatched += rest.len() as u64;
        if key == Key::RequestId && rest.len() > 1 {
            joined.server_duplicates += 1;
        }
    }
    Ok(joined)
}

/// Nearest-rank percentiles of `values` (sorted here).
fn percentiles(values: &mut [f64], qs: &[f64]) -> Vec<Option<f64>> {
    values.sort_by(f64::total_cmp);
    qs.iter()
        .map(|q| {
            let n = values.len();
            (n > 0).then(|| values[((q / 100.0 * n as f64).ceil() as usize).clamp(1, n) - 1])
        })
        .collect()
}

impl Joined {
    /// Rows matched.
    pub fn matched(&self) -> u64 {
        self.pairs.len() as u64
    }

    /// Matched pairs where the client's latency was shorter than the
    /// server's (clocks or columns that do not measure what they say).
    pub fn client_faster(&self) -> u64 {
        self.pairs
            .iter()
            .filter(|p| matches!((p.client.latency_ms, p.server.latency_ms), (Some(c), Some(s)) if c < s))
            .count() as u64
    }

    /// The text table: per scenario, client and server latency and the
    /// time outside the handler, as percentiles.
    pub fn table(&self, key: Key) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "joined on {}: {} of {} client rows and {} of {} server rows matched; unmatched {} client, {} server; keys seen twice {} client, {} server",
            key.name(),
            self.matched(),
            self.client_rows,
            self.matched(),
            self.server_rows,
            self.client_unmatched,
            self.server_unmatched,
            self.client_duplicates,
            self.server_duplicates
        );
        let _ = writeln!(
            out,
            "{:<16} {:>7}  {:>23}  {:>23}  {:>31}  {:>23}",
            "scenario",
            "rows",
            "client ms p50/p95/p99",
            "server ms p50/p95/p99",
            "outside ms p50/p95/p99/max",
            "upstream ms p50/p95/p99"
        );
        // Per scenario (`chat@gw` with services), per service (`all@gw`)
        // and over everything.
        let mut scenarios: BTreeMap<String, Vec<&Pair>> = BTreeMap::new();
        for pair in &self.pairs {
            let client = &pair.client;
            let scenario = match &client.service {
                Some(service) => {
                    let all = format!("all@{service}");
                    scenarios.entry(all).or_default().push(pair);
                    format!("{}@{service}", client.scenario)
                }
                None => client.scenario.clone(),
            };
            scenarios.entry(scenario).or_default().push(pair);
            scenarios.entry("all".into()).or_default().push(pair);
        }
        for (name, pairs) in &scenarios {
            let _ = writeln!(out, "{}", scenario_line(name, pairs));
        }
        out
    }

    /// The matched rows as CSV, one per pair.
    pub fn csv(&self, key: Key) -> String {
        let mut out = format!(
            "{},scenario,service,turn,error,client_latency_ms,client_ttft_ms,server_latency_ms,server_ttfb_ms,server_upstream_ms,outside_ms\n",
            key.name()
        );
        let num = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.3}"));
        for p in &self.pairs {
            let outside = p
                .client
                .latency_ms
                .zip(p.server.latency_ms)
                .map(|(c, s)| c - s);
            let _ = writeln!(
                out,
                "{},{},{},{},{},{},{},{},{},{},{}",
                crate::report::csv::field(&p.client.key),
                crate::report::csv::field(&p.client.scenario),
                crate::report::csv::field(p.client.service.as_deref().unwrap_or("")),
                p.client.turn,
                p.client.error.as_deref().unwrap_or(""),
                num(p.client.latency_ms),
                num(p.client.ttft_ms),
                num(p.server.latency_ms),
                num(p.server.ttfb_ms),
                num(p.server.upstream_ms),
                num(outside)
            );
        }
        out
    }
}

fn scenario_line(name: &str, pairs: &[&Pair]) -> String {
    let qs = [50.0, 95.0, 99.0];
    let both: Vec<(f64, f64)> = pairs
        .iter()
        .filter_map(|p| p.client.latency_ms.zip(p.server.latency_ms))
        .collect();
    let mut client: Vec<f64> = both.iter().map(|b| b.0).collect();
    let mut server: Vec<f64> = both.iter().map(|b| b.1).collect();
    let mut outside: Vec<f64> = both.iter().map(|(c, s)| c - s).collect();
    let mut upstream: Vec<f64> = pairs.iter().filter_map(|p| p.server.upstream_ms).collect();
    let fmt = |v: Vec<Option<f64>>| {
        v.iter()
            .map(|x| x.map_or("-".to_string(), |x| format!("{x:.2}")))
            .collect::<Vec<_>>()
            .join("/")
    };
    format!(
        "{:<16} {:>7}  {:>23}  {:>23}  {:>31}  {:>23}",
        name,
        pairs.len(),
        fmt(percentiles(&mut client, &qs)),
        fmt(percentiles(&mut server, &qs)),
        fmt(percentiles(&mut outside, &[50.0, 95.0, 99.0, 100.0])),
        fmt(percentiles(&mut upstream, &qs))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn columns() -> Columns {
        Columns {
            key: "request_id".into(),
            latency: "latency_ms".into(),
            ttfb: "ttfb_ms".into(),
            upstream: "upstream_ms".into(),
        }
    }

    #[test]
    fn csv_fields_may_hold_commas_quotes_and_line_breaks() {
        let rows = csv_rows("a,b\n\"x,1\",\"say \"\"hi\"\"\nthere\"\n\n3,4").unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[1].1, ["x,1", "say \"hi\"\nthere"]);
        assert_eq!(rows[2], (5, vec!["3".to_string(), "4".to_string()]));
        assert!(csv_rows("a\n\"open").unwrap_err().contains("line 2"));
    }

    #[test]
    fn unmatched_and_duplicate_rows_are_counted_not_dropped() {
        let client = [
            r#"{"request_id":"a-t1","scenario":"s","turn":1,"latency_ms":10.0,"warmup":false}"#,
            r#"{"request_id":"b-t1","scenario":"s","turn":1,"latency_ms":12.0,"warmup":false}"#,
            r#"{"request_id":"c-t1","scenario":"s","turn":1,"latency_ms":9.0,"warmup":false}"#,
            r#"{"request_id":"w-t1","scenario":"s","turn":1,"latency_ms":9.0,"warmup":true}"#,
        ]
        .join("\n");
        let server =
            "request_id,latency_ms,upstream_ms\na-t1,7.5,6\nb-t1,8,7\nb-t1,8.5,7\nz-t1,1,1\n";
        let j = join(&client, server, Key::RequestId, &columns()).unwrap();
        assert_eq!((j.client_rows, j.server_rows), (3, 4));
        assert_eq!(j.matched(), 2);
        assert_eq!((j.client_unmatched, j.server_unmatched), (1, 2));
        assert_eq!((j.client_duplicates, j.server_duplicates), (0, 1));
        let table = j.table(Key::RequestId);
        assert!(
            table.contains("2 of 3 client rows and 2 of 4 server rows"),
            "{table}"
        );
        // a: 10 − 7.5 = 2.5; b: 12 − 8 = 4.
        assert!(j
            .csv(Key::RequestId)
            .contains("a-t1,s,,1,,10.000,,7.500,,6.000,2.500"));
        assert_eq!(j.client_faster(), 0);
    }

    #[test]
    fn a_conversation_key_pairs_turns_in_order() {
        let client = [
            r#"{"conv_uuid":"u","scenario":"s","turn":2,"latency_ms":20.0}"#,
            r#"{"conv_uuid":"u","scenario":"s","turn":1,"latency_ms":10.0}"#,
        ]
        .join("\n");
        let server = "{\"conv\":\"u\",\"latency_ms\":9}\n{\"conv\":\"u\",\"latency_ms\":19}\n";
        let cols = Columns {
            key: "conv".into(),
            ..columns()
        };
        let j = join(&client, server, Key::ConvUuid, &cols).unwrap();
        assert_eq!(j.matched(), 2);
        let csv = j.csv(Key::ConvUuid);
        assert!(csv.contains("u,s,,1,,10.000,,9.000,,,1.000"), "{csv}");
        assert!(csv.contains("u,s,,2,,20.000,,19.000,,,1.000"), "{csv}");
    }

    #[test]
    fn a_comparison_run_is_joined_per_service() {
        let client = [
            r#"{"request_id":"a-t1","scenario":"s","service":"direct","turn":1,"latency_ms":10.0}"#,
            r#"{"request_id":"b-t1","scenario":"s","service":"gw","turn":1,"latency_ms":14.0}"#,
        ]
        .join("\n");
        let server = "request_id,latency_ms\na-t1,9\nb-t1,9\n";
        let j = join(&client, server, Key::RequestId, &columns()).unwrap();
        let table = j.table(Key::RequestId);
        for row in ["s@direct", "s@gw", "all@direct", "all@gw"] {
            assert!(table.lines().any(|l| l.starts_with(row)), "{row}: {table}");
        }
        let csv = j.csv(Key::RequestId);
        assert!(csv.contains("b-t1,s,gw,1,,14.000,,9.000,,,5.000"), "{csv}");
    }

    #[test]
    fn bad_rows_are_errors_that_name_the_line() {
        let e = join("{\"scenario\":\"s\"}\n{}", "", Key::RequestId, &columns()).unwrap_err();
        assert!(
            e.contains("client log: line 1") && e.contains("request_id"),
            "{e}"
        );
        let e = join(
            "",
            "request_id,latency_ms\na,1,2\n",
            Key::RequestId,
            &columns(),
        )
        .unwrap_err();
        assert!(e.contains("server rows: line 2"), "{e}");
        let e = join("", "x,latency_ms\na,1\n", Key::RequestId, &columns()).unwrap_err();
        assert!(e.contains("--server-key"), "{e}");
    }
}
