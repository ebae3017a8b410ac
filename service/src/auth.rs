//! API keys: how they are made, stored (only a hash), and checked on every `/api/v1` request.
//!
//! The hot path asks no database once warm: a key's owner comes from this instance's [`KeyCache`] and the
//! owner's role and state from `user:perm:{user_id}`. Revocation must still bite at once everywhere, so any
//! change to keys or users moves the cache's `auth` generation; instances sharing a Redis poll it several
//! times a second and drop their key cache when it moves, and an instance that cannot tell whether it moved
//! (Redis unreachable, poller late) stops trusting its key cache until it can.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine as _;
use chrono::Utc;
use rand::RngCore as _;
use tokio::sync::RwLock;
use uuid::Uuid;

use crate::cache::{Cache, Family};
use crate::db::UserStore;
use crate::domain::{Caller, User};
use crate::error::ApiError;
use crate::error::ErrorCode;
use crate::state::AppState;

const KEY_PREFIX: &str = "fwb_";
/// Characters of the key kept in clear (after `fwb_`) to tell keys apart in listings.
const SHOWN_CHARS: usize = 8;
/// `last_used_at` is written at most this often per key, so reads do not become writes.
const TOUCH_INTERVAL_SECS: i64 = 300;
/// The generation that any change to keys or users moves.
const AUTH_GENERATION: &str = "auth";
/// How often instances sharing a Redis look at the generation…
const POLL_EVERY: Duration = Duration::from_millis(250);
/// …and how old their last look may be before the key cache is not trusted (the revocation bound).
const TRUST_FOR: Duration = Duration::from_millis(750);
/// Cached keys are looked up again after this even without any change.
const KEY_TTL: Duration = Duration::from_secs(300);
/// Characters after `fwb_`: 32 random bytes in unpadded base64url.
const KEY_CHARS: usize = 43;
/// How long a key the database did not know is refused without asking it again. Keys are 256 random bits,
/// so no key is ever created that someone presented before; a key refused because its user was disabled is
/// forgotten with every other entry when keys or users change.
const UNKNOWN_TTL: Duration = Duration::from_secs(60);
/// The window in which one client address's refusals are counted (`rate_limit.refusals_per_minute`).
const REFUSAL_WINDOW: Duration = Duration::from_secs(60);
/// Addresses and unknown keys remembered at once; beyond this the least recently seen are forgotten.
const REMEMBERED: u64 = 100_000;

/// A new key: the secret shown once, its stored hash and its visible prefix.
#[derive(Debug)]
pub(crate) struct NewKey {
    pub(crate) secret: String,
    pub(crate) hash: String,
    pub(crate) prefix: String,
}

impl NewKey {
    pub(crate) fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let secret = format!("{KEY_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes));
        let prefix = secret[..KEY_PREFIX.len() + SHOWN_CHARS].to_owned();
        Self { hash: hash_key(&secret), secret, prefix }
    }
}

/// Keys carry 256 random bits, so a fast hash is enough: nobody can guess their way back from it.
pub(crate) fn hash_key(secret: &str) -> String {
    blake3::hash(secret.as_bytes()).to_hex().to_string()
}

struct CachedKey {
    user_id: Uuid,
    key_id: Uuid,
    /// Unix seconds of the last `last_used_at` write.
    touched: AtomicI64,
}

/// This instance's map from key hash to owner, and what it needs to know when to forget it.
pub(crate) struct KeyCache {
    entries: moka::future::Cache<String, Arc<CachedKey>>,
    /// Bumped (under the write lock) whenever the entries are dropped; a lookup that started under an older
    /// epoch does not insert its result, so a revocation racing a lookup cannot leave a stale entry behind.
    epoch: RwLock<u64>,
    /// Milliseconds since `started` until which the entries may be trusted; `u64::MAX` for a private cache.
    trusted_until_ms: AtomicU64,
    started: tokio::time::Instant,
    /// Counts lookups that went to the database (`auth_db_lookups_total`), so tests and operators see the
    /// hot path stay off it.
    db_lookups: metrics::Counter,
    /// Hashes of well-formed keys the database did not know, refused without a lookup for [`UNKNOWN_TTL`].
    unknown: moka::future::Cache<String, ()>,
    /// Refusals per client address in the current [`REFUSAL_WINDOW`] (which starts at its first refusal).
    refusals: moka::future::Cache<IpAddr, Arc<AtomicU32>>,
    /// `rate_limit.refusals_per_minute`; 0 turns the throttle off.
    refusals_allowed: u32,
    /// `auth_refusals_total{reason}`: how each refusal was decided, to show which ones cost a lookup.
    refused: [metrics::Counter; 4],
}

/// Why a key was refused, cheapest first.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    /// Not the shape of any key of ours: refused before hashing.
    Malformed,
    /// Looked up recently and unknown.
    Remembered,
    /// Looked up now and unknown, or its user is disabled.
    LookedUp,
    /// Its client address was refused too often in this window: refused before anything else.
    Throttled,
}

impl Refusal {
    const ALL: [Refusal; 4] = [Refusal::Malformed, Refusal::Remembered, Refusal::LookedUp, Refusal::Throttled];

    fn label(self) -> &'static str {
        match self {
            Refusal::Malformed => "malformed",
            Refusal::Remembered => "remembered",
            Refusal::LookedUp => "looked_up",
            Refusal::Throttled => "throttled",
        }
    }
}

impl KeyCache {
    pub(crate) fn new(cache: &Cache, metrics: &crate::telemetry::Metrics, refusals_per_minute: u32) -> Arc<Self> {
        let shared = cache.is_shared();
        Arc::new(Self {
            entries: moka::future::Cache::builder().max_capacity(100_000).time_to_live(KEY_TTL).build(),
            epoch: RwLock::new(0),
            trusted_until_ms: AtomicU64::new(if shared { 0 } else { u64::MAX }),
            started: tokio::time::Instant::now(),
            db_lookups: metrics.counter("auth_db_lookups_total", Vec::new()),
            unknown: moka::future::Cache::builder().max_capacity(REMEMBERED).time_to_live(UNKNOWN_TTL).build(),
            refusals: moka::future::Cache::builder().max_capacity(REMEMBERED).time_to_live(REFUSAL_WINDOW).build(),
            refusals_allowed: refusals_per_minute,
            refused: Refusal::ALL
                .map(|r| metrics.counter("auth_refusals_total", vec![metrics::Label::new("reason", r.label())])),
        })
    }

    /// Counts a refusal against the client's address and says what to answer.
    async fn refuse(&self, client: Option<IpAddr>, why: Refusal, error: ApiError) -> ApiError {
        self.refused[why as usize].increment(1);
        if let Some(ip) = client
            && self.refusals_allowed > 0
        {
            self.refusals.get_with(ip, async { Arc::new(AtomicU32::new(0)) }).await.fetch_add(1, Ordering::Relaxed);
        }
        error
    }

    /// Whether the client's address has used up its refusals for this window.
    async fn throttled(&self, client: Option<IpAddr>) -> bool {
        let Some(ip) = client else { return false };
        if self.refusals_allowed == 0 {
            return false;
        }
        self.refusals.get(&ip).await.is_some_and(|n| n.load(Ordering::Relaxed) >= self.refusals_allowed)
    }

    fn trusted(&self) -> bool {
        let now = self.started.elapsed().as_millis() as u64;
        now < self.trusted_until_ms.load(Ordering::Acquire)
    }

    async fn forget_all(&self) {
        let mut epoch = self.epoch.write().await;
        *epoch += 1;
        self.entries.invalidate_all();
        // A key refused because its user was disabled works again once they are enabled.
        self.unknown.invalidate_all();
    }

    /// Keeps the key cache honest while other instances share the Redis: polls the `auth` generation.
    pub(crate) fn spawn_poller(self: &Arc<Self>, cache: Cache) {
        if !cache.is_shared() {
            return;
        }
        let this = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut seen = None;
            let mut tick = tokio::time::interval(POLL_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(this) = this.upgrade() else { return };
                let asked_at = this.started.elapsed();
                match cache.generation(AUTH_GENERATION).await {
                    Some(generation) => {
                        if seen != Some(generation) {
                            this.forget_all().await;
                            seen = Some(generation);
                        }
                        let until = asked_at + TRUST_FOR;
                        this.trusted_until_ms.store(until.as_millis() as u64, Ordering::Release);
                    }
                    // Unknown: the entries fall out of trust by themselves once TRUST_FOR has passed.
                    None => seen = None,
                }
            }
        });
    }
}

/// Tells every instance that keys or users changed: drops this instance's key cache and moves the generation.
pub(crate) async fn keys_changed(state: &AppState) {
    state.keys.forget_all().await;
    state.cache.bump_generation(AUTH_GENERATION).await;
}

/// The user's role and state through `user:perm:{user_id}`.
async fn permissions(cache: &Cache, db: &dyn UserStore, user_id: Uuid) -> Result<Option<User>, ApiError> {
    Ok(cache.get_or_load_json(Family::UserPerm, &user_id.to_string(), async || db.get_user(user_id).await).await?)
}

fn touch(state: &AppState, key: &CachedKey) {
    let now = Utc::now();
    let last = key.touched.load(Ordering::Relaxed);
    if now.timestamp() - last < TOUCH_INTERVAL_SECS
        || key.touched.compare_exchange(last, now.timestamp(), Ordering::Relaxed, Ordering::Relaxed).is_err()
    {
        return;
    }
    let (db, key_id) = (state.db.clone(), key.key_id);
    tokio::spawn(async move {
        if let Err(e) = db.touch_api_key(key_id, now).await {
            tracing::warn!(error = %e, "could not record key use");
        }
    });
}

/// Whether a token has the shape of our keys: `fwb_` and [`KEY_CHARS`] characters of base64url.
fn well_formed(token: &str) -> bool {
    token.strip_prefix(KEY_PREFIX).is_some_and(|rest| {
        rest.len() == KEY_CHARS && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

/// Who the request's key belongs to. A key this instance knows is checked without the database; anything
/// else is refused as cheaply as it can be, and a client address refused too often in a minute is answered
/// 429 before its key is even looked at, so a flood of bad keys costs neither lookups nor audit rows.
///
/// `token` is the bearer token the request presented, or why it presented none that can be read; `client` is
/// the client's address. The flag says the key came from the database (its first use in a while) rather than
/// from the key cache.
pub(crate) async fn authenticate(
    state: &AppState,
    client: Option<IpAddr>,
    token: Result<&str, ApiError>,
) -> Result<(Caller, bool), ApiError> {
    let keys = &state.keys;
    let hash = token.as_ref().ok().filter(|t| well_formed(t)).map(|t| hash_key(t));
    let cached = match &hash {
        Some(hash) if keys.trusted() => keys.entries.get(hash).await,
        _ => None,
    };
    if cached.is_none() && keys.throttled(client).await {
        keys.refused[Refusal::Throttled as usize].increment(1);
        return Err(ApiError::TooManyRefusals(REFUSAL_WINDOW.as_secs()));
    }
    let invalid = || ApiError::Unauthorized(ErrorCode::InvalidApiKey);
    let Some(hash) = hash else {
        let error = token.err().unwrap_or_else(invalid);
        return Err(keys.refuse(client, Refusal::Malformed, error).await);
    };
    let fresh = cached.is_none();
    let key = match cached {
        Some(key) => key,
        None if keys.unknown.contains_key(&hash) => {
            return Err(keys.refuse(client, Refusal::Remembered, invalid()).await);
        }
        None => {
            let epoch = *keys.epoch.read().await;
            keys.db_lookups.increment(1);
            let Some((user, key)) = state.db.authenticate(&hash).await? else {
                // Remembered only if nothing changed meanwhile (the user may have been enabled again).
                let current = keys.epoch.read().await;
                if *current == epoch && keys.trusted() {
                    keys.unknown.insert(hash, ()).await;
                }
                return Err(keys.refuse(client, Refusal::LookedUp, invalid()).await);
            };
            let touched = key.last_used_at.map_or(0, |t| t.timestamp());
            let entry = Arc::new(CachedKey { user_id: user.id, key_id: key.id, touched: AtomicI64::new(touched) });
            let current = keys.epoch.read().await;
            if *current == epoch && keys.trusted() {
                keys.entries.insert(hash, entry.clone()).await;
            }
            entry
        }
    };
    touch(state, &key);
    let user = permissions(&state.cache, state.db.as_ref(), key.user_id).await?;
    match user {
        Some(user) if user.disabled_at.is_none() => Ok((Caller { user, key_id: key.key_id }, fresh)),
        _ => Err(keys.refuse(client, Refusal::LookedUp, invalid()).await),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_random_and_only_its_hash_matches() {
        let a = NewKey::generate();
        let b = NewKey::generate();
        assert_ne!(a.secret, b.secret);
        assert!(a.secret.starts_with("fwb_") && a.secret.len() == 4 + 43);
        assert!(a.secret.starts_with(&a.prefix));
        assert_eq!(hash_key(&a.secret), a.hash);
        assert_ne!(a.hash, a.secret);
        assert!(well_formed(&a.secret));
    }

    #[test]
    fn only_the_shape_of_our_keys_is_well_formed() {
        let good = format!("fwb_{}", "A".repeat(KEY_CHARS));
        assert!(well_formed(&good));
        for bad in
            ["junk", "fwb_", "fwb_short", &format!("fwb_{}", "A".repeat(KEY_CHARS + 1)), &good.replace("fwb_", "xyz_")]
        {
            assert!(!well_formed(bad), "{bad}");
        }
        assert!(!well_formed(&format!("fwb_{}=", "A".repeat(KEY_CHARS - 1))));
    }
}
