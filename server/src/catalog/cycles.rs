//! Finding provider cycles: strongly connected components (Tarjan's
//! algorithm, iterative so that a long provider chain cannot overflow the
//! stack).

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};

/// The cycles of a graph: its strongly connected components of two or more
/// nodes, and nodes with an edge to themselves.
#[derive(Debug, Default)]
pub(crate) struct Cycles {
    /// Node → index of its component in `components`.
    pub component_of: BTreeMap<usize, usize>,
    /// The components, each sorted.
    pub components: Vec<Vec<usize>>,
}

/// Finds the cycles of `edges` (node → successors), in linear time and
/// memory.
pub(crate) fn cyclic_nodes(edges: &BTreeMap<usize, Vec<usize>>) -> Cycles {
    let mut index: BTreeMap<usize, usize> = BTreeMap::new();
    let mut low: BTreeMap<usize, usize> = BTreeMap::new();
    let mut on_stack: BTreeSet<usize> = BTreeSet::new();
    let mut stack: Vec<usize> = Vec::new();
    let mut out = Cycles::default();
    let mut next = 0;
    let succ = |n: usize| edges.get(&n).map(Vec::as_slice).unwrap_or(&[]);

    for &start in edges.keys() {
        if index.contains_key(&start) {
            continue;
        }
        // (node, position in its successor list)
        let mut work: Vec<(usize, usize)> = vec![(start, 0)];
        index.insert(start, next);
        low.insert(start, next);
        next += 1;
        stack.push(start);
        on_stack.insert(start);
        while let Some(&mut (n, ref mut pos)) = work.last_mut() {
            if let Some(&m) = succ(n).get(*pos) {
                *pos += 1;
                if let Entry::Vacant(v) = index.entry(m) {
                    v.insert(next);
                    low.insert(m, next);
                    next += 1;
                    stack.push(m);
                    on_stack.insert(m);
                    work.push((m, 0));
                } else if on_stack.contains(&m) {
                    let l = low[&n].min(index[&m]);
                    low.insert(n, l);
                }
                continue;
            }
            work.pop();
            if let Some(&(parent, _)) = work.last() {
                let l = low[&parent].min(low[&n]);
                low.insert(parent, l);
            }
            if low[&n] == index[&n] {
                let mut comp = Vec::new();
                while let Some(m) = stack.pop() {
                    on_stack.remove(&m);
                    comp.push(m);
                    if m == n {
                        break;
                    }
                }
                if comp.len() > 1 || succ(n).contains(&n) {
                    comp.sort_unstable();
                    let id = out.components.len();
                    for &m in &comp {
                        out.component_of.insert(m, id);
                    }
                    out.components.push(comp);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(edges: &[(usize, &[usize])]) -> BTreeMap<usize, Vec<usize>> {
        edges.iter().map(|(n, s)| (*n, s.to_vec())).collect()
    }

    #[test]
    fn finds_cycles_and_self_loops_only() {
        let e = g(&[
            (0, &[1]),
            (1, &[2]),
            (2, &[0]),
            (3, &[0]),
            (4, &[4]),
            (5, &[]),
        ]);
        let c = cyclic_nodes(&e);
        assert_eq!(
            c.component_of.keys().copied().collect::<Vec<_>>(),
            vec![0, 1, 2, 4]
        );
        assert_eq!(c.components[c.component_of[&1]], vec![0, 1, 2]);
        assert_eq!(c.components[c.component_of[&4]], vec![4]);
    }

    #[test]
    fn long_chain_does_not_overflow() {
        let n = 100_000;
        let mut e: BTreeMap<usize, Vec<usize>> = (0..n).map(|i| (i, vec![i + 1])).collect();
        e.insert(n, vec![0]);
        let c = cyclic_nodes(&e);
        assert_eq!(c.component_of.len(), n + 1);
        assert_eq!(c.components.len(), 1);
    }
}
