//! The demo's event stream: deterministic, so that a restarted job, the job's own final check
//! and the tests (which include this file) all see the same events.

/// Length of a tumbling window, in event-time milliseconds.
pub const WINDOW_MS: u64 = 10_000;
/// Events per second of event time (so 100,000 events per window).
pub const EVENTS_PER_EVENT_SEC: u64 = 10_000;
/// Bound of the out-of-orderness; the watermark trails the newest event time by this.
pub const MAX_DELAY_MS: u64 = 2_000;
/// Distinct users.
const USERS: u64 = 20_000;
/// Distinct pages.
const PAGES: u64 = 64;
/// Seed of the generator.
pub const SEED: u64 = 0x5eed_cafe_f00d_0001;

/// One click.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    /// The user.
    pub user: u32,
    /// The page.
    pub page: u16,
    /// Event time, milliseconds.
    pub time_ms: u64,
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Event `i` of the stream: deterministic, so a restarted job and the straight recomputation see
/// the same stream. A few users are hot (a quarter of the clicks go to 1% of them).
pub fn event(i: u64) -> Event {
    let r = splitmix(SEED ^ i);
    let hot = r & 3 == 0;
    let user = if hot {
        (r >> 8) % (USERS / 100)
    } else {
        (r >> 8) % USERS
    };
    let page = (r >> 32) % PAGES;
    let base = i * 1000 / EVENTS_PER_EVENT_SEC;
    let delay = (r >> 48) % MAX_DELAY_MS;
    Event {
        user: user as u32,
        page: page as u16,
        time_ms: base.saturating_sub(delay),
    }
}

/// The digest term of a user with `n` clicks in a window (summed with wrapping over users).
pub fn digest_of(user: u32, n: u64) -> u64 {
    splitmix((u64::from(user) << 32) ^ n ^ 0xd16e57)
}
