//! The `graph` tree: the dependency graph of each policy version, saved
//! when the version is made, so `baton graph --version N` and `baton graph
//! diff A B` show the graph as it was even after the files changed.

use super::{Store, StoreError, decode, encode};
use crate::graph::Snapshot;

pub const GRAPH: &str = "graph";

#[derive(Debug, Clone)]
pub struct GraphSnapshots {
    store: Store,
    tree: sled::Tree,
}

fn key(version: u64) -> [u8; 8] {
    version.to_be_bytes()
}

impl GraphSnapshots {
    pub fn new(store: &Store) -> Result<GraphSnapshots, StoreError> {
        Ok(GraphSnapshots {
            store: store.clone(),
            tree: store.tree(GRAPH)?,
        })
    }

    pub fn save(&self, version: u64, snapshot: &Snapshot) -> Result<(), StoreError> {
        self.tree
            .insert(key(version), encode(snapshot))
            .map_err(|e| self.store.error(e))?;
        Ok(())
    }

    pub fn get(&self, version: u64) -> Result<Option<Snapshot>, StoreError> {
        let key = key(version);
        match self.tree.get(key).map_err(|e| self.store.error(e))? {
            Some(bytes) => decode(GRAPH, &key, &bytes).map(Some),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{Node, SnapshotEdge};
    use crate::store::StoreSettings;

    #[test]
    fn a_snapshot_reads_back_as_saved_and_others_are_absent() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreSettings::default()).unwrap();
        let snapshots = GraphSnapshots::new(&store).unwrap();
        let snapshot = Snapshot {
            nodes: vec![
                Node::Route {
                    name: "fast".into(),
                },
                Node::Domain {
                    name: "openai".into(),
                },
            ],
            edges: vec![SnapshotEdge {
                from: "route:fast".into(),
                to: "domain:openai".into(),
                kind: crate::graph::EdgeKind::DependsOn,
                order: Some(2),
            }],
        };
        snapshots.save(3, &snapshot).unwrap();
        assert_eq!(snapshots.get(3).unwrap(), Some(snapshot));
        assert_eq!(snapshots.get(4).unwrap(), None);
    }
}
