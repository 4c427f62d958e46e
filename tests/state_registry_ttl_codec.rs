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
        on_write.keys(&j).unwrap().is_empty(),
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
