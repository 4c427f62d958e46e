//! `dump`: log records or snapshot entries as JSON lines. Read-only.
//!
//! Keys and values are stored as the journal's codec encoded them (postcard by default), which is
//! not self-describing: a value is shown decoded when its bytes read unambiguously as a string
//! (`{"str": ..}`), one unsigned integer (a number) or a run of integers (`{"ints": [..]}`), and
//! as `{"hex": ..}` otherwise.

use std::collections::HashMap;
use std::io::{self, BufWriter, Write};
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::{json, Value};
use statejournal::codec::record::{decode_record, split_composite, Op};
use statejournal::inspect::{self, InspectOptions};
use statejournal::{Lsn, StateKind};

use crate::{existing_dir, CliError, CliResult};

/// `dump DIR [--state NAME] [--from LSN]`.
#[derive(clap::Args)]
pub struct Args {
    /// The journal directory.
    dir: PathBuf,
    /// Only this state's records (or entries).
    #[arg(long)]
    state: Option<String>,
    /// Start at this LSN.
    #[arg(long, default_value_t = 1)]
    from: u64,
    /// Dump the entries of the newest usable snapshot instead of log records.
    #[arg(long)]
    snapshot: bool,
    /// Stop after this many lines.
    #[arg(long)]
    limit: Option<u64>,
}

#[derive(Clone)]
struct StateDesc {
    name: String,
    kind: Option<StateKind>,
    ttl: bool,
}

fn kind_of(code: u8) -> Option<StateKind> {
    Some(match code {
        1 => StateKind::Value,
        2 => StateKind::List,
        3 => StateKind::Map,
        4 => StateKind::Reducing,
        5 => StateKind::Aggregating,
        _ => return None,
    })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Reads one LEB128 varint; `None` if malformed or past the end.
fn varint(b: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..70).step_by(7) {
        let byte = *b.get(*at)?;
        *at += 1;
        if shift == 63 && byte > 1 {
            return None;
        }
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// A best-effort decoding of postcard bytes (see the module docs).
pub fn decode_value(b: &[u8]) -> Value {
    if b.is_empty() {
        return Value::Null;
    }
    // A string: length prefix, then exactly that many bytes of printable UTF-8.
    let mut at = 0;
    if let Some(len) = varint(b, &mut at) {
        if len > 0 && at + len as usize == b.len() {
            if let Ok(s) = std::str::from_utf8(&b[at..]) {
                if s.chars().all(|c| !c.is_control()) {
                    return json!({ "str": s });
                }
            }
        }
    }
    // Integers: a run of varints that consumes every byte.
    let mut at = 0;
    let mut ints = Vec::new();
    while at < b.len() && ints.len() <= 16 {
        match varint(b, &mut at) {
            Some(v) => ints.push(v),
            None => break,
        }
    }
    if at == b.len() && !ints.is_empty() && ints.len() <= 16 {
        return if ints.len() == 1 {
            json!(ints[0])
        } else {
            json!({ "ints": ints })
        };
    }
    json!({ "hex": hex(b) })
}

/// A stored value: the expiry in front for states with a TTL; a list's `len element` sequence.
fn stored_value(desc: Option<&StateDesc>, b: &[u8]) -> Value {
    let (expiry, b) = match desc {
        Some(d) if d.ttl && b.len() >= 8 => {
            let mut e = [0u8; 8];
            e.copy_from_slice(&b[..8]);
            (Some(u64::from_le_bytes(e)), &b[8..])
        }
        _ => (None, b),
    };
    let v = if desc.and_then(|d| d.kind) == Some(StateKind::List) {
        list_elements(b).unwrap_or_else(|| json!({ "hex": hex(b) }))
    } else {
        decode_value(b)
    };
    match expiry {
        Some(e) => json!({ "expiry_millis": e, "value": v }),
        None => v,
    }
}

fn list_elements(b: &[u8]) -> Option<Value> {
    let mut at = 0;
    let mut out = Vec::new();
    while at < b.len() {
        let len = varint(b, &mut at)? as usize;
        let e = b.get(at..at.checked_add(len)?)?;
        out.push(decode_value(e));
        at += len;
    }
    Some(Value::Array(out))
}

fn key_fields(obj: &mut serde_json::Map<String, Value>, composite: &[u8]) {
    match split_composite(composite) {
        Ok((k, ns)) => {
            obj.insert("key".into(), decode_value(k));
            if !ns.is_empty() {
                obj.insert("namespace".into(), decode_value(ns));
            }
        }
        Err(_) => {
            obj.insert("key".into(), json!({ "hex": hex(composite) }));
        }
    }
}

/// `statejournal dump`.
pub fn run(a: Args) -> CliResult {
    existing_dir(&a.dir)?;
    let found = inspect::inspect(&a.dir, InspectOptions::structure_only())
        .map_err(|e| CliError(e.to_string()))?;

    // The registry: from the snapshots' footers and every Register record.
    let mut states: HashMap<u32, StateDesc> = HashMap::new();
    for s in &found.snapshots {
        for (id, name, kind, _, _) in &s.states {
            states.insert(
                *id,
                StateDesc {
                    name: name.clone(),
                    kind: kind_of(*kind),
                    ttl: false,
                },
            );
        }
    }
    for c in &found.checkpoints {
        if let Some(m) = &c.manifest {
            for s in &m.states {
                states.insert(
                    s.id,
                    StateDesc {
                        name: s.name.clone(),
                        kind: kind_of(s.kind),
                        ttl: s.ttl_millis > 0,
                    },
                );
            }
        }
    }
    inspect::read_records(&a.dir, Lsn(1), |r| {
        if let Ok(ops) = decode_record(r.payload) {
            for op in ops.flatten() {
                if let Op::Register {
                    state_id,
                    kind,
                    ttl_millis,
                    name,
                    ..
                } = op
                {
                    states.insert(
                        state_id,
                        StateDesc {
                            name: String::from_utf8_lossy(name).into_owned(),
                            kind: kind_of(kind),
                            ttl: ttl_millis > 0,
                        },
                    );
                }
            }
        }
        ControlFlow::Continue(())
    })
    .map_err(|e| CliError(e.to_string()))?;
    let only = match &a.state {
        None => None,
        Some(n) => match states.iter().find(|(_, d)| &d.name == n) {
            Some((&id, _)) => Some(id),
            None => {
                let mut names: Vec<&str> = states.values().map(|d| d.name.as_str()).collect();
                names.sort_unstable();
                return Err(CliError(format!(
                    "there is no state named {n:?} in {} (states: {})",
                    a.dir.display(),
                    if names.is_empty() {
                        "none".into()
                    } else {
                        names.join(", ")
                    }
                )));
            }
        },
    };
    let out = io::stdout();
    let mut out = BufWriter::new(out.lock());
    let mut written = 0u64;
    let limit = a.limit.unwrap_or(u64::MAX);
    let mut io_err = None;
    let mut emit = |v: Value, out: &mut BufWriter<io::StdoutLock<'_>>| -> ControlFlow<()> {
        if written >= limit {
            return ControlFlow::Break(());
        }
        written += 1;
        if let Err(e) = writeln!(out, "{v}") {
            io_err = Some(e);
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    };

    if a.snapshot {
        let Some(s) = found.usable_snapshot() else {
            return Err(CliError(format!(
                "{} has no usable snapshot (the state is all in the log: dump without --snapshot)",
                a.dir.display()
            )));
        };
        let path = s.path.clone();
        let mut stop = false;
        inspect::read_snapshot(&path, |kg, id, key, map_key, value| {
            if stop || only.is_some_and(|o| o != id) {
                return;
            }
            let desc = states.get(&id);
            let mut o = serde_json::Map::new();
            o.insert(
                "state".into(),
                json!(desc.map_or(id.to_string(), |d| d.name.clone())),
            );
            o.insert("key_group".into(), json!(kg));
            key_fields(&mut o, key);
            if let Some(mk) = map_key {
                o.insert("map_key".into(), decode_value(mk));
            }
            o.insert("value".into(), stored_value(desc, value));
            if emit(Value::Object(o), &mut out).is_break() {
                stop = true;
            }
        })
        .map_err(|e| CliError(e.to_string()))?;
    } else {
        inspect::read_records(&a.dir, Lsn(a.from), |r| {
            let ops = match decode_record(r.payload) {
                Ok(ops) => ops,
                Err(_) => {
                    return emit(
                        json!({"lsn": r.lsn.get(), "segment": r.segment, "offset": r.offset, "raw": hex(r.payload)}),
                        &mut out,
                    )
                }
            };
            for op in ops {
                let Ok(op) = op else {
                    return emit(
                        json!({"lsn": r.lsn.get(), "segment": r.segment, "offset": r.offset, "undecodable": hex(r.payload)}),
                        &mut out,
                    );
                };
                let mut o = serde_json::Map::new();
                o.insert("lsn".into(), json!(r.lsn.get()));
                let id = match op {
                    Op::Init { .. } => None,
                    Op::Register { state_id, .. }
                    | Op::Put { state_id, .. }
                    | Op::Delete { state_id, .. }
                    | Op::Append { state_id, .. }
                    | Op::ClearState { state_id }
                    | Op::MapPut { state_id, .. }
                    | Op::MapRemove { state_id, .. } => Some(state_id),
                };
                if only.is_some() && id != only {
                    continue;
                }
                let desc = id.and_then(|id| states.get(&id));
                if let Some(id) = id {
                    o.insert("state".into(), json!(desc.map_or(id.to_string(), |d| d.name.clone())));
                }
                match op {
                    Op::Init { max_key_groups } => {
                        o.insert("op".into(), json!("init"));
                        o.insert("max_key_groups".into(), json!(max_key_groups));
                    }
                    Op::Register {
                        state_id,
                        kind,
                        ttl_millis,
                        ..
                    } => {
                        o.insert("op".into(), json!("register"));
                        o.insert("state_id".into(), json!(state_id));
                        o.insert(
                            "kind".into(),
                            json!(kind_of(kind).map_or(kind.to_string(), |k| k.to_string())),
                        );
                        o.insert("ttl_millis".into(), json!(ttl_millis));
                    }
                    Op::Put { kg, key, value, .. } => {
                        o.insert("op".into(), json!("put"));
                        o.insert("key_group".into(), json!(kg));
                        key_fields(&mut o, key);
                        o.insert("value".into(), stored_value(desc, value));
                    }
                    Op::Delete { kg, key, .. } => {
                        o.insert("op".into(), json!("delete"));
                        o.insert("key_group".into(), json!(kg));
                        key_fields(&mut o, key);
                    }
                    Op::Append {
                        kg,
                        key,
                        expiry,
                        element,
                        ..
                    } => {
                        o.insert("op".into(), json!("append"));
                        o.insert("key_group".into(), json!(kg));
                        key_fields(&mut o, key);
                        o.insert(
                            "elements".into(),
                            list_elements(element).unwrap_or_else(|| json!({ "hex": hex(element) })),
                        );
                        if expiry > 0 {
                            o.insert("expiry_millis".into(), json!(expiry));
                        }
                    }
                    Op::ClearState { .. } => {
                        o.insert("op".into(), json!("clear_state"));
                    }
                    Op::MapPut {
                        kg,
                        key,
                        map_key,
                        value,
                        ..
                    } => {
                        o.insert("op".into(), json!("map_put"));
                        o.insert("key_group".into(), json!(kg));
                        key_fields(&mut o, key);
                        o.insert("map_key".into(), decode_value(map_key));
                        o.insert("value".into(), stored_value(desc, value));
                    }
                    Op::MapRemove {
                        kg, key, map_key, ..
                    } => {
                        o.insert("op".into(), json!("map_remove"));
                        o.insert("key_group".into(), json!(kg));
                        key_fields(&mut o, key);
                        o.insert("map_key".into(), decode_value(map_key));
                    }
                }
                if emit(Value::Object(o), &mut out).is_break() {
                    return ControlFlow::Break(());
                }
            }
            ControlFlow::Continue(())
        })
        .map_err(|e| CliError(e.to_string()))?;
    }
    if let Some(e) = io_err {
        if e.kind() != io::ErrorKind::BrokenPipe {
            return Err(CliError(format!("writing to standard output: {e}")));
        }
        return Ok(ExitCode::SUCCESS);
    }
    match out.flush() {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => {
            Err(CliError(format!("writing to standard output: {e}")))
        }
        _ => Ok(ExitCode::SUCCESS),
    }
}
