//! One figure per locality relative to a VM's GPUs, and the share rules on it.

use std::ops::{Add, AddAssign};

use serde::{Deserialize, Serialize};

use crate::topology::Locality;

/// One figure per locality relative to a VM's GPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ByLocality<T> {
    /// On a GPU's NUMA node.
    pub local: T,
    /// On another node of a GPU's socket.
    pub same_socket: T,
    /// On a socket without the VM's GPUs.
    pub remote: T,
    /// No GPU, or a CPU the topology does not describe.
    pub none: T,
}

impl<T: Copy> ByLocality<T> {
    /// The figure of `locality`.
    pub fn get(&self, locality: Locality) -> T {
        match locality {
            Locality::Local => self.local,
            Locality::SameSocket => self.same_socket,
            Locality::Remote => self.remote,
            Locality::None => self.none,
        }
    }

    /// The figure of `locality`, to change.
    pub fn get_mut(&mut self, locality: Locality) -> &mut T {
        match locality {
            Locality::Local => &mut self.local,
            Locality::SameSocket => &mut self.same_socket,
            Locality::Remote => &mut self.remote,
            Locality::None => &mut self.none,
        }
    }

    /// Every (locality, figure), in [`Locality::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = (Locality, T)> + '_ {
        Locality::ALL.into_iter().map(|l| (l, self.get(l)))
    }
}

impl<T: Copy + Add<Output = T>> ByLocality<T> {
    /// The sum over all localities.
    pub fn total(&self) -> T {
        self.local + self.same_socket + self.remote + self.none
    }
}

impl<T: Copy + AddAssign> AddAssign for ByLocality<T> {
    fn add_assign(&mut self, other: Self) {
        for l in Locality::ALL {
            *self.get_mut(l) += other.get(l);
        }
    }
}

impl ByLocality<f64> {
    /// The time whose locality is known (all but `none`).
    pub fn known(&self) -> f64 {
        self.local + self.same_socket + self.remote
    }

    /// Share of the time on the remote socket, among the time whose locality is known.
    pub fn remote_share(&self) -> Option<f64> {
        remote_share_of(self.remote, self.known())
    }

    /// Each locality's share of the total (all 0 when nothing ran).
    pub fn shares(&self) -> ByLocality<f64> {
        let total = self.total();
        let share = |x: f64| if total > 0.0 { x / total } else { 0.0 };
        ByLocality {
            local: share(self.local),
            same_socket: share(self.same_socket),
            remote: share(self.remote),
            none: share(self.none),
        }
    }
}

/// The remote share rule: `remote` seconds among `known` seconds of known locality; None
/// when none is known.
pub(super) fn remote_share_of(remote: f64, known: f64) -> Option<f64> {
    (known > 0.0).then(|| remote / known)
}
