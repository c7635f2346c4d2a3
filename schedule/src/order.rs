//! Ordering jobs so that dependencies come first, and naming a cycle when there is one.

use std::collections::{BTreeSet, HashMap, VecDeque};

use labelfleet_core::board::Dependency;
use labelfleet_core::job::JobKey;

/// Jobs that wait on each other in a loop, so none of them can ever run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cycle {
    /// The loop, as indices into the nodes given, in waiting order: each waits for the
    /// next, the last for the first.
    pub path: Vec<usize>,
    /// Every node that waits on the loop, directly or not (the loop's own included).
    pub stuck: Vec<usize>,
}

/// Orders `nodes` (each a job and its dependencies) so that each comes after every
/// node it waits for: a job dependency on the node of that job, a group dependency on
/// every node of that group. Kahn's algorithm, keeping the given order among nodes
/// that are ready together. Dependencies on jobs outside `nodes` are ignored (they are
/// complete, or will be, elsewhere).
pub fn order(nodes: &[(JobKey, &[Dependency])]) -> Result<Vec<usize>, Cycle> {
    let index: HashMap<&JobKey, usize> =
        nodes.iter().enumerate().map(|(i, (k, _))| (k, i)).collect();
    let mut by_group: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, (key, _)) in nodes.iter().enumerate() {
        by_group.entry(key.group_id.as_str()).or_default().push(i);
    }
    let waits_on: Vec<BTreeSet<usize>> = nodes
        .iter()
        .map(|(_, after)| {
            let mut deps = BTreeSet::new();
            for dep in *after {
                match dep {
                    Dependency::Job(key) => deps.extend(index.get(key)),
                    Dependency::Group(g) => {
                        deps.extend(by_group.get(g.as_str()).into_iter().flatten())
                    }
                }
            }
            deps
        })
        .collect();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    for (i, deps) in waits_on.iter().enumerate() {
        for &d in deps {
            dependents[d].push(i);
        }
    }
    let mut remaining: Vec<usize> = waits_on.iter().map(BTreeSet::len).collect();
    let mut ready: VecDeque<usize> = (0..nodes.len()).filter(|&i| remaining[i] == 0).collect();
    let mut sequence = Vec::with_capacity(nodes.len());
    while let Some(i) = ready.pop_front() {
        sequence.push(i);
        for &d in &dependents[i] {
            remaining[d] -= 1;
            if remaining[d] == 0 {
                ready.push_back(d);
            }
        }
    }
    if sequence.len() < nodes.len() {
        return Err(Cycle {
            path: find_cycle(&waits_on, &remaining),
            stuck: (0..nodes.len()).filter(|&i| remaining[i] > 0).collect(),
        });
    }
    Ok(sequence)
}

/// One cycle among the nodes Kahn's algorithm could not order (`remaining > 0`), as
/// the path of nodes in waiting order: each waits for the next, the last for the first.
fn find_cycle(waits_on: &[BTreeSet<usize>], remaining: &[usize]) -> Vec<usize> {
    // Every stuck node waits on some stuck node, so walking from one stuck node to a
    // stuck dependency must come back to a node already on the path.
    let start = (0..remaining.len())
        .find(|&i| remaining[i] > 0)
        .expect("some node is stuck");
    let mut path = vec![start];
    let mut at: HashMap<usize, usize> = HashMap::from([(start, 0)]);
    let mut node = start;
    loop {
        let next = *waits_on[node]
            .iter()
            .find(|&&d| remaining[d] > 0)
            .expect("a stuck node waits on a stuck node");
        if let Some(&position) = at.get(&next) {
            return path.split_off(position);
        }
        at.insert(next, path.len());
        path.push(next);
        node = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(group: &str, name: &str) -> JobKey {
        JobKey {
            group_id: group.into(),
            name: name.into(),
        }
    }

    #[test]
    fn dependencies_come_first_and_ready_jobs_keep_their_order() {
        let after_b = [Dependency::Job(key("g", "b"))];
        let after_group = [Dependency::Group("h".into())];
        let nodes = [
            (key("g", "a"), &after_b[..]),
            (key("g", "b"), &[][..]),
            (key("g", "c"), &after_group[..]),
            (key("h", "x"), &[][..]),
            (key("h", "y"), &[][..]),
        ];
        assert_eq!(order(&nodes).unwrap(), vec![1, 3, 4, 0, 2]);
    }

    #[test]
    fn a_cycle_is_named_with_every_job_stuck_behind_it() {
        let after_a = [Dependency::Job(key("g", "a"))];
        let after_b = [Dependency::Job(key("g", "b"))];
        let after_c = [Dependency::Job(key("g", "c"))];
        let nodes = [
            (key("g", "a"), &after_b[..]),
            (key("g", "b"), &after_a[..]),
            (key("g", "c"), &[][..]),
            (key("g", "d"), &after_a[..]),
            (key("g", "e"), &after_c[..]),
        ];
        let cycle = order(&nodes).unwrap_err();
        let mut looped = cycle.path.clone();
        looped.sort();
        assert_eq!(looped, vec![0, 1]);
        assert_eq!(cycle.stuck, vec![0, 1, 3]);
    }
}
