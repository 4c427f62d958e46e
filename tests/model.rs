//! Model-based property test: random sequences of appends (of every size class, so segments roll
//! at every possible fill level), commits, syncs, reads from arbitrary LSNs, deletions of old
//! segments and reopens, compared after every step with a plain `Vec` model of the log.

mod common;

use proptest::prelude::*;
use statejournal::{Durability, Log, LogOptions, Lsn, RecoveryMode};

#[derive(Debug, Clone)]
enum Op {
    Append(usize),
    Commit,
    ReadFrom(u64),
    DeleteBelow(u64),
    Reopen(bool),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => prop_oneof![0usize..40, 40usize..400, 3000usize..4000].prop_map(Op::Append),
        2 => Just(Op::Commit),
        1 => any::<u64>().prop_map(Op::ReadFrom),
        1 => any::<u64>().prop_map(Op::DeleteBelow),
        1 => any::<bool>().prop_map(Op::Reopen),
    ]
}

fn body(seq: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| (seq as usize * 31 + i) as u8).collect()
}

fn opts(sync: bool) -> LogOptions {
    LogOptions::default()
        .segment_size(8192)
        .durability(if sync {
            Durability::Sync
        } else {
            Durability::Buffered
        })
        .recovery_mode(RecoveryMode::Strict) // a clean reopen must find no damage at all
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn log_matches_model(ops in proptest::collection::vec(op(), 1..120)) {
        let dir = tempfile::tempdir().unwrap();
        let mut sync = false;
        let mut log = Log::open(dir.path(), opts(sync)).unwrap();
        // model[i] is the payload of LSN first + i
        let mut model: Vec<Vec<u8>> = Vec::new();
        let mut first = 1u64;
        for (step, op) in ops.into_iter().enumerate() {
            match op {
                Op::Append(len) => {
                    let lsn = log.append(&body(step as u64, len)).unwrap();
                    model.push(body(step as u64, len));
                    prop_assert_eq!(lsn, Lsn(first + model.len() as u64 - 1));
                }
                Op::Commit => {
                    let durable = log.commit().unwrap();
                    if sync {
                        prop_assert_eq!(durable, Lsn(first + model.len() as u64 - 1));
                    }
                    prop_assert!(durable <= log.last_lsn());
                }
                Op::ReadFrom(x) => {
                    let last = first + model.len() as u64;
                    let from = if last > first { first + x % (last - first + 1) } else { first };
                    let got: Vec<(u64, Vec<u8>)> = log
                        .read_from(Lsn(from))
                        .map(|r| r.map(|r| (r.lsn.get(), r.payload.to_vec())))
                        .collect::<Result<_, _>>()
                        .unwrap();
                    let want: Vec<(u64, Vec<u8>)> = model
                        .iter()
                        .enumerate()
                        .map(|(i, p)| (first + i as u64, p.clone()))
                        .filter(|(l, _)| *l >= from)
                        .collect();
                    prop_assert_eq!(got, want);
                }
                Op::DeleteBelow(x) => {
                    let last = first + model.len() as u64;
                    let below = first + x % (last - first + 1);
                    log.delete_below(Lsn(below)).unwrap();
                    let new_first = log.first_lsn().get();
                    prop_assert!(new_first <= below.max(first), "never deletes a needed record");
                    prop_assert!(new_first >= first);
                    model.drain(..(new_first - first) as usize);
                    first = new_first;
                }
                Op::Reopen(switch) => {
                    drop(log);
                    if switch {
                        sync = !sync;
                    }
                    log = Log::open(dir.path(), opts(sync)).unwrap();
                    let r = log.recovery_report();
                    prop_assert!(r.is_clean(), "{}", r);
                    prop_assert_eq!(r.records, model.len() as u64);
                    prop_assert_eq!(log.first_lsn(), Lsn(first));
                    prop_assert_eq!(log.last_lsn(), Lsn(first + model.len() as u64 - 1));
                }
            }
        }
        let got: Vec<Vec<u8>> = log.read_from(Lsn(0)).map(|r| r.unwrap().payload.to_vec()).collect();
        prop_assert_eq!(got, model);
    }
}
