//! Steps shared between the platforms of one multi-platform build. Each
//! platform's build runs on its own, but a step whose cache key another
//! platform's build has computed too (a `FROM --platform=$BUILDPLATFORM` stage
//! with the same inputs) is made once: the first build to reach it claims it,
//! the others wait and take its layer, as BuildKit's solver merges equal vertices.

use crate::image::Layer;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

/// A finished step: its layer and when it was made.
pub(super) type Made = Option<(Layer, u64)>;

/// The claims of one build session, by cache key.
#[derive(Default)]
pub(crate) struct SharedSteps {
    /// Off for single-platform builds: there is nobody to share with, and
    /// waiting on a claim could only add ways to deadlock (two stages of one
    /// build with equal steps, one of them holding the in-place root).
    on: bool,
    steps: Mutex<HashMap<String, Arc<AsyncMutex<Made>>>>,
}

/// What a claim found.
pub(super) enum Claimed {
    /// Another platform's build made this step.
    Made(Box<Layer>, u64),
    /// This build makes it; the others wait until the guard is filled or dropped.
    Mine(OwnedMutexGuard<Made>),
    /// Sharing is off.
    Off,
}

impl SharedSteps {
    pub(crate) fn new(on: bool) -> SharedSteps {
        SharedSteps {
            on,
            ..SharedSteps::default()
        }
    }

    /// Claims the step `key`, waiting while another build makes it. A build that
    /// failed the step leaves nothing, and the next claimant makes it itself.
    pub(super) async fn claim(&self, key: &str) -> Claimed {
        if !self.on {
            return Claimed::Off;
        }
        let cell = {
            // A poisoned map only means a panic elsewhere; its entries are whole.
            let mut steps = self.steps.lock().unwrap_or_else(|p| p.into_inner());
            steps.entry(key.to_string()).or_default().clone()
        };
        let guard = cell.lock_owned().await;
        match &*guard {
            Some((layer, created)) => Claimed::Made(Box::new(layer.clone()), *created),
            None => Claimed::Mine(guard),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn off_never_waits() {
        let s = SharedSteps::new(false);
        assert!(matches!(s.claim("k").await, Claimed::Off));
        assert!(matches!(s.claim("k").await, Claimed::Off));
    }

    #[tokio::test]
    async fn a_second_claim_waits_for_the_first_and_a_dropped_one_passes_it_on() {
        let s = Arc::new(SharedSteps::new(true));
        let Claimed::Mine(first) = s.claim("k").await else {
            panic!("first claim");
        };
        let waiter = {
            let s = s.clone();
            tokio::spawn(async move { matches!(s.claim("k").await, Claimed::Mine(_)) })
        };
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        drop(first);
        assert!(
            waiter.await.unwrap(),
            "an unfilled claim passes to the next build"
        );
    }
}
