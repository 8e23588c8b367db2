//! The limits every pipeline step runs under, from the inventory's
//! `limits`: nodes worked on at once across the site and per rack, and
//! power-on waves per rack (a rack of HGX servers powering on at once
//! draws an inrush that trips its breakers). Requests per BMC are bounded
//! in the BMC transport itself.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::inventory::Limits;

/// Held while a node is being worked on; dropping it frees the slots.
#[derive(Debug)]
pub struct NodePermit {
    _site: OwnedSemaphorePermit,
    _rack: OwnedSemaphorePermit,
}

/// Power-ons recently started in one rack.
#[derive(Debug)]
struct Wave {
    started: VecDeque<Instant>,
}

/// The site's gates.
#[derive(Debug)]
pub struct Gates {
    site: Arc<Semaphore>,
    per_rack: usize,
    racks: std::sync::Mutex<HashMap<String, Arc<Semaphore>>>,
    power_per_rack: usize,
    power_interval: Duration,
    waves: std::sync::Mutex<HashMap<String, Arc<Mutex<Wave>>>>,
}

impl Gates {
    /// Gates for these limits (each at least 1).
    pub fn new(limits: &Limits) -> Gates {
        Gates {
            site: Arc::new(Semaphore::new(limits.concurrency.max(1))),
            per_rack: limits.per_rack.max(1),
            racks: std::sync::Mutex::new(HashMap::new()),
            power_per_rack: limits.power_on_per_rack.max(1),
            power_interval: limits.power_on_interval,
            waves: std::sync::Mutex::new(HashMap::new()),
        }
    }

    fn rack(&self, rack: &str) -> Arc<Semaphore> {
        let mut racks = self.racks.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(
            racks
                .entry(rack.to_owned())
                .or_insert_with(|| Arc::new(Semaphore::new(self.per_rack))),
        )
    }

    /// Waits for a slot for one node of `rack`: the rack's first, then the
    /// site's (always in this order, so waiting never deadlocks, and a full
    /// rack does not hold site slots other racks could use). `None` once
    /// the gates are closed: no new work starts.
    pub async fn node(&self, rack: &str) -> Option<NodePermit> {
        let rack_slot = self.rack(rack).acquire_owned().await.ok()?;
        let site_slot = Arc::clone(&self.site).acquire_owned().await.ok()?;
        Some(NodePermit {
            _site: site_slot,
            _rack: rack_slot,
        })
    }

    /// Stops handing out slots (Ctrl-C: finish what runs, start nothing
    /// new). Nodes already holding a permit keep it.
    pub fn close(&self) {
        self.site.close();
    }

    /// Waits until one more node of `rack` may power on: at most
    /// `power_on_per_rack` power-ons start within any `power_on_interval`.
    /// Waiters are served in arrival order.
    pub async fn power_on(&self, rack: &str) {
        let wave = {
            let mut waves = self.waves.lock().unwrap_or_else(|e| e.into_inner());
            Arc::clone(waves.entry(rack.to_owned()).or_insert_with(|| {
                Arc::new(Mutex::new(Wave {
                    started: VecDeque::new(),
                }))
            }))
        };
        // tokio's Mutex is fair (FIFO), so holding it across the sleep
        // keeps the order in which nodes asked.
        let mut wave = wave.lock().await;
        loop {
            let now = Instant::now();
            while wave
                .started
                .front()
                .is_some_and(|t| now.duration_since(*t) >= self.power_interval)
            {
                wave.started.pop_front();
            }
            if wave.started.len() < self.power_per_rack {
                wave.started.push_back(now);
                return;
            }
            let Some(oldest) = wave.started.front().copied() else {
                continue;
            };
            tokio::time::sleep_until(oldest + self.power_interval).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(concurrency: usize, per_rack: usize, power: usize, interval_s: u64) -> Limits {
        Limits {
            concurrency,
            per_rack,
            power_on_per_rack: power,
            power_on_interval: Duration::from_secs(interval_s),
            ..Limits::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_rack_powers_on_in_waves() {
        let gates = Arc::new(Gates::new(&limits(100, 100, 4, 10)));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..10 {
            let g = Arc::clone(&gates);
            tasks.push(tokio::spawn(async move {
                g.power_on("r01").await;
                start.elapsed().as_secs()
            }));
        }
        let mut at = Vec::new();
        for t in tasks {
            at.push(t.await.unwrap_or(u64::MAX));
        }
        at.sort_unstable();
        assert_eq!(at, vec![0, 0, 0, 0, 10, 10, 10, 10, 20, 20]);
    }

    #[tokio::test(start_paused = true)]
    async fn racks_power_on_independently() {
        let gates = Gates::new(&limits(100, 100, 1, 10));
        let start = Instant::now();
        gates.power_on("r01").await;
        gates.power_on("r02").await;
        assert_eq!(start.elapsed(), Duration::ZERO);
        gates.power_on("r01").await;
        assert_eq!(start.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn closed_gates_start_nothing_new() {
        let gates = Gates::new(&limits(1, 1, 1, 1));
        let held = gates.node("r01").await;
        assert!(held.is_some());
        gates.close();
        assert!(gates.node("r02").await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn site_and_rack_limits_hold() {
        let gates = Arc::new(Gates::new(&limits(3, 2, 1, 1)));
        let busy = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let peak = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let per_rack_peak = Arc::new(std::sync::Mutex::new(HashMap::<String, usize>::new()));
        let in_rack = Arc::new(std::sync::Mutex::new(HashMap::<String, usize>::new()));
        let mut tasks = Vec::new();
        for i in 0..12 {
            let rack = format!("r{}", i % 2);
            let (g, busy, peak, in_rack, per_rack_peak) = (
                Arc::clone(&gates),
                Arc::clone(&busy),
                Arc::clone(&peak),
                Arc::clone(&in_rack),
                Arc::clone(&per_rack_peak),
            );
            tasks.push(tokio::spawn(async move {
                let Some(_permit) = g.node(&rack).await else {
                    return;
                };
                let now = busy.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                peak.fetch_max(now, std::sync::atomic::Ordering::SeqCst);
                {
                    let mut m = in_rack.lock().unwrap_or_else(|e| e.into_inner());
                    let n = m.entry(rack.clone()).or_default();
                    *n += 1;
                    let mut p = per_rack_peak.lock().unwrap_or_else(|e| e.into_inner());
                    let e = p.entry(rack.clone()).or_default();
                    *e = (*e).max(*n);
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                *in_rack
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(rack)
                    .or_default() -= 1;
                busy.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            }));
        }
        for t in tasks {
            assert!(t.await.is_ok());
        }
        assert_eq!(peak.load(std::sync::atomic::Ordering::SeqCst), 3);
        let p = per_rack_peak.lock().unwrap_or_else(|e| e.into_inner());
        assert!(p.values().all(|&n| n <= 2), "{p:?}");
    }
}
