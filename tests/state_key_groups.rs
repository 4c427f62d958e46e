//! Key groups: a journal serves a key-group range; keys of other groups are refused; recovery loads
//! only the owned groups; the number of key groups is fixed at creation.

use statejournal::{key_group_of, key_hash, Error, Journal, JournalOptions, KeyGroupRange};

#[test]
fn ownership_is_enforced_and_recovery_loads_only_owned_groups() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(dir.path(), JournalOptions::default()).unwrap();
    let v = j.value_state::<u32, u32>("v").unwrap();
    let ns = j
        .value_state::<u32, u32>("w")
        .unwrap()
        .in_namespace::<u64>();
    for k in 0..1000u32 {
        v.set(&mut j, &k, &(k * 2)).unwrap();
        ns.set_in(&mut j, &k, &(k as u64 * 7), &k).unwrap();
    }
    // The key group is the hash of the codec's encoding of the key alone (namespaces excluded).
    let enc = postcard::to_allocvec(&500u32).unwrap();
    assert_eq!(
        j.key_group(&500u32).unwrap(),
        key_group_of(key_hash(&enc), 128)
    );
    drop(j);

    let half = KeyGroupRange::new(0, 64);
    let mut j = Journal::open(dir.path(), JournalOptions::default().key_group_range(half)).unwrap();
    let v = j.value_state::<u32, u32>("v").unwrap();
    let ns = j
        .value_state::<u32, u32>("w")
        .unwrap()
        .in_namespace::<u64>();
    let (mut owned, mut foreign) = (0, 0);
    for k in 0..1000u32 {
        let kg = j.key_group(&k).unwrap();
        if half.contains(kg) {
            owned += 1;
            assert_eq!(v.get(&mut j, &k).unwrap(), Some(k * 2));
            assert_eq!(
                ns.get_in(&mut j, &k, &(k as u64 * 7)).unwrap(),
                Some(k),
                "namespaces stay with their key"
            );
        } else {
            foreign += 1;
            let err = v.get(&mut j, &k).unwrap_err();
            assert!(
                matches!(err, Error::KeyGroupNotOwned { key_group, .. } if key_group == kg),
                "{err}"
            );
            assert!(v.set(&mut j, &k, &0).is_err());
        }
    }
    assert!(
        owned > 400 && foreign > 400,
        "{owned} owned, {foreign} foreign"
    );
    // Only the owned groups were loaded.
    assert_eq!(v.keys(&mut j).unwrap().len(), owned);
}

#[test]
fn max_key_groups_is_fixed_at_creation() {
    let dir = tempfile::tempdir().unwrap();
    drop(Journal::open(dir.path(), JournalOptions::default().max_key_groups(256)).unwrap());
    let err = Journal::open(dir.path(), JournalOptions::default()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::KeyGroupsMismatch {
                stored: 256,
                requested: 128,
                ..
            }
        ),
        "{err}"
    );
    assert!(Journal::open(dir.path(), JournalOptions::default().max_key_groups(256)).is_ok());
    for bad in [0u16, 40000] {
        let e = Journal::open(
            tempfile::tempdir().unwrap().path(),
            JournalOptions::default().max_key_groups(bad),
        );
        assert!(matches!(e, Err(Error::InvalidOptions { .. })), "{bad}");
    }
    let e = Journal::open(
        tempfile::tempdir().unwrap().path(),
        JournalOptions::default().key_group_range(KeyGroupRange::new(100, 200)),
    );
    assert!(matches!(e, Err(Error::InvalidOptions { .. })));
}
