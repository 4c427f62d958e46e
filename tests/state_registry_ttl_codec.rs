//! The state registry (durable, kinds fixed), TTL expiry with a driven clock, and codec errors
//! on values written as another type.

use std::sync::Arc;
use std::time::Duration;

use statejournal::{Error, Journal, JournalOptions, ManualClock, StateKind, StateTtl};

#[test]
fn registrations_are_durable_and_kinds_cannot_change() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(dir.path(), JournalOptions::default()).unwrap();
    j.value_state::<u8, u8>("a").unwrap();
    j.list_state::<u8, u8>("b").unwrap();
    let err = j.map_state::<u8, u8, u8>("a").unwrap_err();
    assert!(
        matches!(&err, Error::StateConflict { name, existing: StateKind::Value, requested: StateKind::Map } if name == "a"),
        "{err}"
    );
    drop(j);
    let mut j = Journal::open(dir.path(), JournalOptions::default()).unwrap();
    assert!(
        j.list_state::<u8, u8>("a").is_err(),
        "the registration survived the reopen"
    );
    assert!(j.list_state::<u8, u8>("b").is_ok());
}

/// A handle belongs to the journal that registered it. Used on another journal, where its id is
/// unregistered or names a state of another kind, it must be refused before anything is logged:
/// a logged op that cannot be applied would stop every later replay of that journal.
#[test]
fn a_handle_used_on_another_journal_is_refused_and_logs_nothing() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut ja = Journal::open(a.path(), JournalOptions::default()).unwrap();
    let a_value = ja.value_state::<u8, u8>("v").unwrap();
    let a_map = ja.map_state::<u8, u8, u8>("m").unwrap();
    let a_list = ja.list_state::<u8, u8>("l").unwrap();
    let mut jb = Journal::open(b.path(), JournalOptions::default()).unwrap();
    // In `b`, id 0 is a map and id 1 a value state; id 2 is not registered.
    let b_map = jb.map_state::<u8, u8, u8>("m").unwrap();
    jb.value_state::<u8, u8>("v").unwrap();
    b_map.put(&mut jb, &1, &2, &3).unwrap();
    let before = jb.log().last_lsn();
    let refused = |r: statejournal::Result<()>| {
        assert!(matches!(r, Err(Error::ForeignHandle { .. })), "{r:?}");
    };
    refused(a_value.set(&mut jb, &1, &1)); // a value op on b's map
    refused(a_map.put(&mut jb, &1, &1, &1)); // a map op on b's value state
    refused(a_list.add(&mut jb, &1, &1)); // an unregistered id
    refused(jb.write_batch(|j| a_value.set(j, &2, &2)));
    assert_eq!(jb.log().last_lsn(), before, "a refused op was logged");
    drop(jb);
    let mut jb = Journal::open(b.path(), JournalOptions::default()).unwrap();
    let b_map = jb.map_state::<u8, u8, u8>("m").unwrap();
    assert_eq!(b_map.get(&mut jb, &1, &2).unwrap(), Some(3));
}

/// The journal applies an update to its tables a few calls after logging it (so that the
/// update's cache misses overlap the next calls' work); every way of reading the state must
/// still see every write the moment the write returns.
#[test]
fn every_read_sees_the_writes_just_made() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(dir.path(), JournalOptions::default()).unwrap();
    let v = j.value_state::<u32, u32>("v").unwrap();
    let l = j.list_state::<u32, u32>("l").unwrap();
    let m = j.map_state::<u32, u32, u32>("m").unwrap();
    for round in 0..3u32 {
        // The value state is empty here (cleared at the end of the last round).
        let others = j.state_stats().unwrap().entries;
        for k in 0..5 {
            v.set(&mut j, &k, &(round * 10 + k)).unwrap();
        }
        assert_eq!(j.state_stats().unwrap().entries, others + 5);
        let mut keys: Vec<u32> = v
            .keys(&mut j)
            .unwrap()
            .into_iter()
            .map(|(k, ())| k)
            .collect();
        keys.sort_unstable();
        assert_eq!(keys, [0, 1, 2, 3, 4]);
        v.set(&mut j, &7, &round).unwrap();
        v.set(&mut j, &7, &(round + 100)).unwrap();
        assert_eq!(v.get(&mut j, &7).unwrap(), Some(round + 100));
        v.clear(&mut j, &7).unwrap();
        l.add(&mut j, &1, &round).unwrap();
        assert_eq!(l.get(&mut j, &1).unwrap().last(), Some(&round));
        m.put(&mut j, &1, &round, &round).unwrap();
        assert!(m.contains(&mut j, &1, &round).unwrap());
        m.put(&mut j, &2, &round, &round).unwrap();
        assert_eq!(m.entries(&mut j, &2).unwrap().len() as u32, round + 1);
        m.put(&mut j, &3, &round, &round).unwrap();
        assert_eq!(m.keys(&mut j).unwrap().len(), 3);
        // A whole-state clear must not be overtaken by the writes before it.
        v.set(&mut j, &9, &9).unwrap();
        v.clear_all(&mut j).unwrap();
        assert_eq!(v.get(&mut j, &9).unwrap(), None);
    }
}

#[test]
fn ttl_expires_values_and_refreshes_on_write_or_read() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let opts = || JournalOptions::default().clock(clock.clone());
    let mut j = Journal::open(dir.path(), opts()).unwrap();
    let minute = Duration::from_secs(60);
    let on_write = j
        .with_ttl(StateTtl::after_write(minute))
        .value_state::<u8, u32>("w")
        .unwrap();
    let on_read = j
        .with_ttl(StateTtl::after_access(minute))
        .value_state::<u8, u32>("r")
        .unwrap();
    let list = j
        .with_ttl(StateTtl::after_write(minute))
        .list_state::<u8, u32>("l")
        .unwrap();
    let map = j
        .with_ttl(StateTtl::after_write(minute))
        .map_state::<u8, u8, u32>("m")
        .unwrap();
    on_write.set(&mut j, &1, &10).unwrap();
    on_read.set(&mut j, &1, &20).unwrap();
    list.add(&mut j, &1, &30).unwrap();
    map.put(&mut j, &1, &9, &40).unwrap();

    clock.advance(Duration::from_secs(40));
    assert_eq!(on_write.get(&mut j, &1).unwrap(), Some(10));
    assert_eq!(on_read.get(&mut j, &1).unwrap(), Some(20)); // refreshed: now expires at +100 s
    list.add(&mut j, &1, &31).unwrap(); // refreshes the list
    clock.advance(Duration::from_secs(30)); // +70 s
    assert_eq!(
        on_write.get(&mut j, &1).unwrap(),
        None,
        "expired 60 s after its write"
    );
    assert_eq!(map.get(&mut j, &1, &9).unwrap(), None);
    assert_eq!(
        on_read.get(&mut j, &1).unwrap(),
        Some(20),
        "the read at +40 s refreshed it"
    );
    assert_eq!(list.get(&mut j, &1).unwrap(), vec![30, 31]);
    assert!(
        on_write.keys(&mut j).unwrap().is_empty(),
        "expired keys are not listed"
    );
    drop(j);

    // Expiry survives recovery: it is part of the logged value.
    let mut j = Journal::open(dir.path(), opts()).unwrap();
    let on_read = j
        .with_ttl(StateTtl::after_access(minute))
        .value_state::<u8, u32>("r")
        .unwrap();
    let list = j
        .with_ttl(StateTtl::after_write(minute))
        .list_state::<u8, u32>("l")
        .unwrap();
    let on_write = j
        .with_ttl(StateTtl::after_write(minute))
        .value_state::<u8, u32>("w")
        .unwrap();
    assert_eq!(on_write.get(&mut j, &1).unwrap(), None);
    clock.advance(Duration::from_secs(45)); // +115 s: the read at +70 s refreshed to +130 s
    assert_eq!(on_read.get(&mut j, &1).unwrap(), Some(20));
    assert_eq!(
        list.get(&mut j, &1).unwrap(),
        Vec::<u32>::new(),
        "the list expired at +100 s"
    );
    clock.advance(Duration::from_secs(61));
    assert_eq!(on_read.get(&mut j, &1).unwrap(), None);
}

#[test]
fn a_value_written_as_another_type_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(dir.path(), JournalOptions::default()).unwrap();
    let as_string = j.value_state::<u8, String>("x").unwrap();
    as_string
        .set(&mut j, &1, &"not a number, quite long".to_string())
        .unwrap();
    drop(j);
    let mut j = Journal::open(dir.path(), JournalOptions::default()).unwrap();
    let as_u8 = j.value_state::<u8, u8>("x").unwrap();
    let err = as_u8.get(&mut j, &1).unwrap_err();
    assert!(
        matches!(&err, Error::Codec { state, .. } if state == "x"),
        "{err}"
    );
    assert!(err.to_string().contains("\"x\""), "names the state: {err}");
}

/// Found by `tests/compaction_model.rs`: adding to a list whose TTL had expired brought its
/// expired elements back (the append kept them and refreshed the expiry). An expired list is
/// gone; an add starts a new one — live, after replay, inside a batch, and across a compaction.
#[test]
fn adding_to_an_expired_list_starts_a_new_list() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(5_000_000));
    let opts = || JournalOptions::default().clock(clock.clone());
    let mut j = Journal::open(dir.path(), opts()).unwrap();
    let minute = Duration::from_secs(60);
    let list = j
        .with_ttl(StateTtl::after_write(minute))
        .list_state::<u8, u32>("l")
        .unwrap();
    list.add(&mut j, &1, &1).unwrap();
    list.add(&mut j, &2, &1).unwrap();
    clock.advance(Duration::from_secs(61));
    assert_eq!(list.get(&mut j, &1).unwrap(), Vec::<u32>::new());
    list.add(&mut j, &1, &2).unwrap();
    assert_eq!(list.get(&mut j, &1).unwrap(), [2]);
    // Two adds in one batch to an expired list: both land, nothing older comes back.
    j.write_batch(|j| {
        list.add(j, &2, &3)?;
        list.add(j, &2, &4)
    })
    .unwrap();
    assert_eq!(list.get(&mut j, &2).unwrap(), [3, 4]);
    // Still alive a bit later: adds keep what is there.
    clock.advance(Duration::from_secs(30));
    list.add(&mut j, &1, &5).unwrap();
    assert_eq!(list.get(&mut j, &1).unwrap(), [2, 5]);
    drop(j);
    let mut j = Journal::open(dir.path(), opts()).unwrap();
    assert_eq!(list.get(&mut j, &1).unwrap(), [2, 5]);
    assert_eq!(list.get(&mut j, &2).unwrap(), [3, 4]);
}

/// A state's stored values carry an expiry in front exactly when the state has a TTL, so a
/// state registered with a TTL cannot be re-registered without one or the other way round (as
/// in Flink, where that is a `StateMigrationException`): its values would be read wrongly. The
/// TTL's duration and refresh rule may change; values keep the expiry they were written with.
#[test]
fn ttl_can_change_but_not_appear_or_disappear() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let opts = || JournalOptions::default().clock(clock.clone());
    let minute = Duration::from_secs(60);
    let mut j = Journal::open(dir.path(), opts()).unwrap();
    let with = j
        .with_ttl(StateTtl::after_write(minute))
        .value_state::<u8, u64>("with")
        .unwrap();
    let without = j.value_state::<u8, u64>("without").unwrap();
    with.set(&mut j, &1, &7).unwrap();
    without.set(&mut j, &1, &8).unwrap();
    drop(j);

    let mut j = Journal::open(dir.path(), opts()).unwrap();
    let err = j.value_state::<u8, u64>("with").unwrap_err();
    assert!(
        matches!(&err, Error::TtlConflict { name, existing: Some(_), requested: None } if name == "with"),
        "{err}"
    );
    let err = j
        .with_ttl(StateTtl::after_write(minute))
        .value_state::<u8, u64>("without")
        .unwrap_err();
    assert!(
        matches!(&err, Error::TtlConflict { name, existing: None, requested: Some(_) } if name == "without"),
        "{err}"
    );
    // The refused registrations changed nothing: both read as before, also after a reopen.
    let without = j.value_state::<u8, u64>("without").unwrap();
    assert_eq!(without.get(&mut j, &1).unwrap(), Some(8));
    // A longer TTL is a new registration; the value keeps the expiry it was written with.
    let with = j
        .with_ttl(StateTtl::after_write(10 * minute))
        .value_state::<u8, u64>("with")
        .unwrap();
    assert_eq!(with.get(&mut j, &1).unwrap(), Some(7));
    drop(j);
    let mut j = Journal::open(dir.path(), opts()).unwrap();
    let with = j
        .with_ttl(StateTtl::after_write(10 * minute))
        .value_state::<u8, u64>("with")
        .unwrap();
    assert_eq!(with.get(&mut j, &1).unwrap(), Some(7));
    clock.advance(2 * minute);
    assert_eq!(
        with.get(&mut j, &1).unwrap(),
        None,
        "written with a 1-minute TTL"
    );
}
