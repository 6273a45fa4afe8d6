//! The flattened image as a private in-memory tree.
//!
//! Layers are applied to this model, never to the host file system: every
//! path is resolved here, component by component, and a symlink in the model
//! is data (its target bytes), never something the host resolves. Regular
//! file contents live in numbered work files (see `layer`); the tree only
//! references them. Hardlinks are several directory entries naming one node.

use std::collections::BTreeMap;

/// Index of a node in [`Tree::nodes`].
pub type NodeId = usize;

/// The root directory's id.
pub const ROOT: NodeId = 0;

/// Ownership, permission bits (incl. setuid/setgid/sticky), mtime, xattrs:
/// applied only inside the ext4 image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// `mode & 0o7777`.
    pub perm: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    pub xattrs: Vec<(String, Vec<u8>)>,
}

impl Meta {
    pub fn dir_default() -> Meta {
        Meta {
            perm: 0o755,
            uid: 0,
            gid: 0,
            mtime: 0,
            xattrs: Vec::new(),
        }
    }
}

/// Device node kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DevKind {
    Char,
    Block,
}

/// What a node is.
#[derive(Debug, Clone)]
pub enum Kind {
    /// Children by name; each entry remembers the layer that wrote it (for
    /// opaque directories, which hide only lower layers' entries).
    Dir(BTreeMap<Vec<u8>, Entry>),
    /// Regular file: its content is work file `content`, `size` bytes.
    File {
        content: u64,
        size: u64,
    },
    /// Symlink with its target kept verbatim.
    Symlink(Vec<u8>),
    /// Device node: exists only as an ext4 inode.
    Device {
        kind: DevKind,
        major: u32,
        minor: u32,
    },
    Fifo,
}

/// A directory entry.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    pub node: NodeId,
    pub layer: usize,
}

#[derive(Debug, Clone)]
pub struct Node {
    pub kind: Kind,
    pub meta: Meta,
}

/// The whole image tree. Node 0 is `/`.
#[derive(Debug)]
pub struct Tree {
    pub nodes: Vec<Node>,
}

/// Where a path walk stopped, for error messages.
#[derive(Debug, PartialEq, Eq)]
pub enum WalkError {
    /// A component (given as the path up to it) is a symlink.
    Symlink(String),
    /// A component is neither a directory nor a symlink.
    NotDir(String),
}

impl Default for Tree {
    fn default() -> Self {
        Tree::new()
    }
}

impl Tree {
    pub fn new() -> Tree {
        Tree {
            nodes: vec![Node {
                kind: Kind::Dir(BTreeMap::new()),
                meta: Meta::dir_default(),
            }],
        }
    }

    pub fn add(&mut self, kind: Kind, meta: Meta) -> NodeId {
        self.nodes.push(Node { kind, meta });
        self.nodes.len() - 1
    }

    pub fn children(&self, dir: NodeId) -> Option<&BTreeMap<Vec<u8>, Entry>> {
        match &self.nodes[dir].kind {
            Kind::Dir(c) => Some(c),
            _ => None,
        }
    }

    pub fn children_mut(&mut self, dir: NodeId) -> Option<&mut BTreeMap<Vec<u8>, Entry>> {
        match &mut self.nodes[dir].kind {
            Kind::Dir(c) => Some(c),
            _ => None,
        }
    }

    pub fn lookup(&self, dir: NodeId, name: &[u8]) -> Option<Entry> {
        self.children(dir)?.get(name).copied()
    }

    /// Walk `comps` from the root without following any symlink. With
    /// `create`, missing directories are made (0755 root, as container
    /// runtimes do) and attributed to `layer`.
    pub fn walk_dirs(
        &mut self,
        comps: &[Vec<u8>],
        create: Option<usize>,
    ) -> Result<Option<NodeId>, WalkError> {
        let mut cur = ROOT;
        for (i, c) in comps.iter().enumerate() {
            let shown = || display_path(&comps[..=i]);
            match self.lookup(cur, c) {
                Some(e) => match self.nodes[e.node].kind {
                    Kind::Dir(_) => cur = e.node,
                    Kind::Symlink(_) => return Err(WalkError::Symlink(shown())),
                    _ => return Err(WalkError::NotDir(shown())),
                },
                None => match create {
                    Some(layer) => {
                        let id = self.add(Kind::Dir(BTreeMap::new()), Meta::dir_default());
                        self.children_mut(cur)
                            .expect("cur is a directory")
                            .insert(c.clone(), Entry { node: id, layer });
                        cur = id;
                    }
                    None => return Ok(None),
                },
            }
        }
        Ok(Some(cur))
    }

    /// Resolve an absolute image path, following symlinks *inside the model*
    /// (absolute targets start again at the image root, `..` stops at the
    /// root). Returns the node and its canonical path. Used for the boot
    /// check; never touches the host.
    pub fn resolve(&self, path: &str) -> Option<(NodeId, String)> {
        let mut todo: Vec<Vec<u8>> = split(path.as_bytes()).into_iter().rev().collect();
        let mut stack: Vec<(Vec<u8>, NodeId)> = Vec::new();
        let mut hops = 0;
        while let Some(c) = todo.pop() {
            if c == b".." {
                stack.pop();
                continue;
            }
            let cur = stack.last().map_or(ROOT, |s| s.1);
            let e = self.lookup(cur, &c)?;
            match &self.nodes[e.node].kind {
                Kind::Symlink(target) => {
                    hops += 1;
                    if hops > 40 {
                        return None;
                    }
                    if target.starts_with(b"/") {
                        stack.clear();
                    }
                    todo.extend(split(target).into_iter().rev());
                }
                _ => stack.push((c, e.node)),
            }
        }
        let node = stack.last().map_or(ROOT, |s| s.1);
        let names: Vec<Vec<u8>> = stack.into_iter().map(|s| s.0).collect();
        Some((node, display_path(&names)))
    }
}

/// Split on `/`, dropping empty and `.` components (keeps `..`).
pub fn split(p: &[u8]) -> Vec<Vec<u8>> {
    p.split(|b| *b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .map(<[u8]>::to_vec)
        .collect()
}

/// `/a/b` for display and for debugfs.
pub fn display_path(comps: &[Vec<u8>]) -> String {
    let mut s = String::new();
    for c in comps {
        s.push('/');
        s.push_str(&String::from_utf8_lossy(c));
    }
    if s.is_empty() {
        s.push('/');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(t: &mut Tree, dir: &[&str], name: &str) -> NodeId {
        let comps: Vec<Vec<u8>> = dir.iter().map(|s| s.as_bytes().to_vec()).collect();
        let d = t.walk_dirs(&comps, Some(0)).unwrap().unwrap();
        let id = t.add(
            Kind::File {
                content: 0,
                size: 0,
            },
            Meta::dir_default(),
        );
        t.children_mut(d)
            .unwrap()
            .insert(name.into(), Entry { node: id, layer: 0 });
        id
    }

    fn link(t: &mut Tree, name: &str, target: &str) {
        let id = t.add(Kind::Symlink(target.into()), Meta::dir_default());
        let (dir, leaf) = name.rsplit_once('/').unwrap_or(("", name));
        let comps = split(dir.as_bytes());
        let d = t.walk_dirs(&comps, Some(0)).unwrap().unwrap();
        t.children_mut(d)
            .unwrap()
            .insert(leaf.into(), Entry { node: id, layer: 0 });
    }

    #[test]
    fn resolve_follows_symlinks_inside_the_model_only() {
        let mut t = Tree::new();
        let init = file(&mut t, &["lib", "systemd"], "systemd");
        link(&mut t, "sbin/init", "/lib/systemd/systemd");
        link(&mut t, "sbin/rel", "../../../lib/systemd/systemd");
        link(&mut t, "loop", "loop");
        assert_eq!(
            t.resolve("/sbin/init"),
            Some((init, "/lib/systemd/systemd".into()))
        );
        assert_eq!(t.resolve("/sbin/rel").map(|r| r.0), Some(init));
        assert_eq!(t.resolve("/loop"), None);
        assert_eq!(t.resolve("/etc/passwd"), None);
    }

    #[test]
    fn walk_refuses_symlink_and_file_parents() {
        let mut t = Tree::new();
        link(&mut t, "a", "/etc");
        file(&mut t, &[], "f");
        let a = vec![b"a".to_vec(), b"b".to_vec()];
        assert_eq!(
            t.walk_dirs(&a, Some(1)),
            Err(WalkError::Symlink("/a".into()))
        );
        let f = vec![b"f".to_vec(), b"x".to_vec()];
        assert_eq!(
            t.walk_dirs(&f, Some(1)),
            Err(WalkError::NotDir("/f".into()))
        );
    }
}
