//! The pins: which key each host of the peers file may present
//! ([`PinSet`]), and the set in force, shared by every TLS configuration
//! and swapped whole when SIGHUP reloads the peers file ([`SharedPins`]).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, PoisonError, RwLock};

use omirr_config::peers::{Fingerprint, Peers};

/// The fingerprints pinned in the peers file, by host name and by key.
///
/// A host listed without a fingerprint is never trusted; it is remembered
/// only so that a refusal can say why.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PinSet {
    by_name: HashMap<String, Fingerprint>,
    by_fingerprint: HashMap<Fingerprint, String>,
    unpinned: BTreeSet<String>,
}

impl PinSet {
    /// The pins of a parsed peers file, which already guarantees that names
    /// and fingerprints are unique.
    pub fn from_peers(peers: &Peers) -> PinSet {
        let mut pins = PinSet::default();
        for peer in peers {
            match peer.fingerprint {
                Some(fp) => {
                    pins.by_name.insert(peer.name.clone(), fp);
                    pins.by_fingerprint.insert(fp, peer.name.clone());
                }
                None => {
                    pins.unpinned.insert(peer.name.clone());
                }
            }
        }
        pins
    }

    /// The host whose key has this fingerprint.
    pub fn host_of(&self, fingerprint: &Fingerprint) -> Option<&str> {
        self.by_fingerprint.get(fingerprint).map(String::as_str)
    }

    /// The fingerprint pinned for `host`, if it has one.
    pub fn pin_of(&self, host: &str) -> Option<&Fingerprint> {
        self.by_name.get(host)
    }

    /// Whether `host` is in the peers file without a fingerprint.
    pub fn is_listed_without_pin(&self, host: &str) -> bool {
        self.unpinned.contains(host)
    }

    /// How many hosts are pinned (hosts without a fingerprint not counted).
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether no host at all is pinned: every handshake will be refused.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

impl From<&Peers> for PinSet {
    fn from(peers: &Peers) -> PinSet {
        PinSet::from_peers(peers)
    }
}

/// The pins in force, shared by every configuration built with it and
/// replaced whole on reload.
///
/// An `RwLock` around an `Arc`: a handshake holds the read lock only to
/// clone the `Arc`, so a reload never waits for a handshake, and each
/// handshake checks against one set, the old or the new, never a mix.
/// Cloning a `SharedPins` shares it.
#[derive(Clone, Debug, Default)]
pub struct SharedPins(Arc<RwLock<Arc<PinSet>>>);

impl SharedPins {
    /// Puts `pins` in force, to be shared by cloning the result.
    pub fn new(pins: PinSet) -> SharedPins {
        SharedPins(Arc::new(RwLock::new(Arc::new(pins))))
    }

    /// The set in force now.
    pub fn current(&self) -> Arc<PinSet> {
        // The lock guards one `Arc` assignment, which a panic cannot leave
        // half done, so a poisoned lock still holds a consistent set.
        Arc::clone(&self.0.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Puts `pins` in force for every handshake from now on.
    pub fn replace(&self, pins: PinSet) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(pins);
    }
}

impl From<PinSet> for SharedPins {
    fn from(pins: PinSet) -> SharedPins {
        SharedPins::new(pins)
    }
}
