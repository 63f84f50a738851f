//! Which topics the engine evaluates, pure: a bound on the work new topic names can bring.
//!
//! Anyone who can write tallies can invent topics, and each topic with a pipeline costs reads,
//! memory and alerts on every pass. So a topic is taken under watch only a few at a time
//! (`max_new_topics_per_pass`; the rest wait, in name order, for later passes) and only up to
//! `max_topics` in all (past it a new topic is ignored until a restart). A topic once watched
//! stays watched. Topics that already have alerts (restored after a restart) are taken first and
//! skip the per-pass limit, so a restart does not hide a real fault behind a flood of new names.

use std::collections::HashSet;

/// What one pass may look at.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Admission {
    /// The topics to evaluate this pass, in the order given.
    pub topics: Vec<String>,
    /// Topics waiting for a later pass (the per-pass limit).
    pub waiting: usize,
    /// Topics ignored because `max_topics` are watched.
    pub ignored: usize,
    /// Topics newly taken under watch this pass.
    pub admitted: usize,
}

/// The topics under watch.
#[derive(Debug, Clone)]
pub struct Watchlist {
    watched: HashSet<String>,
    max_new_per_pass: usize,
    max_topics: usize,
}

impl Watchlist {
    pub fn new(max_new_per_pass: usize, max_topics: usize) -> Self {
        Self { watched: HashSet::new(), max_new_per_pass, max_topics }
    }

    pub fn len(&self) -> usize {
        self.watched.len()
    }

    pub fn is_empty(&self) -> bool {
        self.watched.is_empty()
    }

    /// Stop watching the topics `gone` selects (their shard moved to another instance); returns
    /// them.
    pub fn forget(&mut self, gone: impl Fn(&str) -> bool) -> Vec<String> {
        let left: Vec<String> = self.watched.iter().filter(|t| gone(t)).cloned().collect();
        for t in &left {
            self.watched.remove(t);
        }
        left
    }

    /// Take `candidates` (topics with a pipeline) for one pass; `known` tells the topics that
    /// already have alerts.
    pub fn admit(&mut self, candidates: Vec<String>, known: impl Fn(&str) -> bool) -> Admission {
        let mut out = Admission::default();
        let (first, rest): (Vec<String>, Vec<String>) =
            candidates.into_iter().partition(|t| self.watched.contains(t) || known(t));
        for topic in first {
            if !self.watched.contains(&topic) {
                if self.watched.len() >= self.max_topics {
                    out.ignored += 1;
                    continue;
                }
                out.admitted += 1;
                self.watched.insert(topic.clone());
            }
            out.topics.push(topic);
        }
        let mut new = 0;
        for topic in rest {
            if self.watched.len() >= self.max_topics {
                out.ignored += 1;
            } else if new < self.max_new_per_pass {
                new += 1;
                out.admitted += 1;
                self.watched.insert(topic.clone());
                out.topics.push(topic);
            } else {
                out.waiting += 1;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(prefix: &str, n: usize) -> Vec<String> {
        (0..n).map(|i| format!("{prefix}{i:05}")).collect()
    }

    #[test]
    fn new_topics_come_in_a_few_per_pass_up_to_the_bound() {
        let mut w = Watchlist::new(100, 250);
        let all = names("orders.card", 20_000);
        let first = w.admit(all.clone(), |_| false);
        assert_eq!((first.topics.len(), first.admitted, first.waiting, first.ignored), (100, 100, 19_900, 0));
        assert_eq!(first.topics[0], "orders.card00000");
        let second = w.admit(all.clone(), |_| false);
        assert_eq!((second.topics.len(), second.admitted, second.waiting), (200, 100, 19_800));
        let third = w.admit(all.clone(), |_| false);
        assert_eq!((third.topics.len(), third.admitted, third.waiting, third.ignored), (250, 50, 0, 19_750));
        assert_eq!(w.len(), 250);
        let later = w.admit(all, |_| false);
        assert_eq!((later.topics.len(), later.admitted, later.ignored), (250, 0, 19_750), "the watched stay");
    }

    #[test]
    fn topics_with_alerts_go_first_and_skip_the_per_pass_limit() {
        let mut w = Watchlist::new(2, 10);
        let mut topics = names("a", 5);
        topics.push("payments".into());
        let pass = w.admit(topics, |t| t == "payments" || t == "a00004");
        assert_eq!(pass.topics, ["a00004", "payments", "a00000", "a00001"]);
        assert_eq!((pass.admitted, pass.waiting), (4, 2));
    }
}
