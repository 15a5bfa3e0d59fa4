//! Shared access to the replica's tree from many tasks, without holding a `RefCell` borrow
//! across an await.
//!
//! Writes (applying entries, checkpoint steps) need `&mut Tree` across awaits, and there is
//! one writer at a time: [`TreeSlot::lock`] moves the tree out of the slot into a guard and
//! puts it back when the guard drops. Readers never touch the tree itself: they read a
//! [`Snapshot`] (copy-on-write: a snapshot is a frozen view that later writes never change),
//! which the slot takes lazily, at most once per write, and hands out as cheap clones. A
//! write invalidates the view when its guard drops, so a read that starts after a write was
//! acknowledged (acknowledgements follow the drop) sees it.

use std::cell::RefCell;
use std::future::poll_fn;
use std::ops::{Deref, DerefMut};
use std::task::{Poll, Waker};

use btree::{PageStore, Snapshot, Tree};

struct Inner<S: PageStore> {
    /// `None` while a guard has it.
    tree: Option<Tree<S>>,
    /// The view readers share; `None` after a write until the next reader asks.
    view: Option<Snapshot<S>>,
    /// Tasks waiting for the tree to come back.
    waiters: Vec<Waker>,
    /// The tree's dirty bytes when the last guard dropped.
    dirty_bytes: u64,
}

/// The tree and its readers' view (see the module doc).
pub struct TreeSlot<S: PageStore> {
    inner: RefCell<Inner<S>>,
}

impl<S: PageStore> TreeSlot<S> {
    /// A slot holding `tree`.
    pub fn new(tree: Tree<S>) -> TreeSlot<S> {
        let dirty_bytes = tree.dirty_bytes();
        TreeSlot {
            inner: RefCell::new(Inner {
                tree: Some(tree),
                view: None,
                waiters: Vec::new(),
                dirty_bytes,
            }),
        }
    }

    /// Exclusive access to the tree, once no other writer has it. With `keep_view`, readers
    /// keep reading the view taken now while the guard lives (for long holds: checkpoints).
    pub async fn lock(&self, keep_view: bool) -> TreeGuard<'_, S> {
        poll_fn(|cx| {
            let mut inner = self.inner.borrow_mut();
            match inner.tree.take() {
                Some(tree) => {
                    if keep_view && inner.view.is_none() {
                        inner.view = Some(tree.snapshot());
                    }
                    Poll::Ready(TreeGuard {
                        slot: self,
                        tree: Some(tree),
                        changed: false,
                    })
                }
                None => {
                    inner.waiters.push(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await
    }

    /// A view of the tree with every write whose guard has dropped.
    pub async fn view(&self) -> Snapshot<S> {
        poll_fn(|cx| {
            let mut inner = self.inner.borrow_mut();
            if let Some(v) = &inner.view {
                return Poll::Ready(v.clone());
            }
            match &inner.tree {
                Some(tree) => {
                    let v = tree.snapshot();
                    inner.view = Some(v.clone());
                    Poll::Ready(v)
                }
                None => {
                    inner.waiters.push(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await
    }

    /// Calls `f` with the value under `key` as [`TreeSlot::view`] would show it, at once:
    /// from the tree itself when no writer holds it, else from the readers' view. `None`
    /// (and `f` not called) when a page must be read, or when a writer holds the tree and
    /// no view was taken: then wait for [`TreeSlot::view`].
    ///
    /// This is the read path's first try. It takes no snapshot, and that matters: each
    /// snapshot starts a tree generation, after which the next write copies its whole path
    /// (YCSB-A with reads between writes re-copied root to leaf on every write).
    pub fn get_now<R>(&self, key: &[u8], f: impl FnOnce(Option<&[u8]>) -> R) -> Option<R> {
        let inner = self.inner.borrow();
        match (&inner.tree, &inner.view) {
            // A poisoned tree answers through the waiting path, which reports it.
            (Some(tree), _) => tree.get_cached_with(key, f).ok().flatten(),
            (None, Some(view)) => view.get_cached_with(key, f),
            (None, None) => None,
        }
    }

    /// Items in the tree as of the last write (from the tree, or the view while a writer
    /// holds it); `None` while a writer holds it and no view was taken.
    pub fn items(&self) -> Option<u64> {
        let inner = self.inner.borrow();
        match (&inner.tree, &inner.view) {
            (Some(tree), _) => Some(tree.len()),
            (None, Some(view)) => Some(view.len()),
            (None, None) => None,
        }
    }

    /// The tree's dirty bytes as of the last write or checkpoint step.
    pub fn dirty_bytes(&self) -> u64 {
        self.inner.borrow().dirty_bytes
    }
}

/// Exclusive access to the tree; gives it back when dropped.
pub struct TreeGuard<'a, S: PageStore> {
    slot: &'a TreeSlot<S>,
    tree: Option<Tree<S>>,
    changed: bool,
}

impl<S: PageStore> TreeGuard<'_, S> {
    /// Says the guard changed the tree's contents: readers must not see the old view after it
    /// drops.
    pub fn mark_changed(&mut self) {
        self.changed = true;
    }
}

impl<S: PageStore> Deref for TreeGuard<'_, S> {
    type Target = Tree<S>;
    fn deref(&self) -> &Tree<S> {
        self.tree.as_ref().expect("held until drop")
    }
}

impl<S: PageStore> DerefMut for TreeGuard<'_, S> {
    fn deref_mut(&mut self) -> &mut Tree<S> {
        self.tree.as_mut().expect("held until drop")
    }
}

impl<S: PageStore> Drop for TreeGuard<'_, S> {
    fn drop(&mut self) {
        let tree = self.tree.take().expect("held until drop");
        let mut inner = self.slot.inner.borrow_mut();
        inner.dirty_bytes = tree.dirty_bytes();
        inner.tree = Some(tree);
        if self.changed {
            inner.view = None;
        }
        inner.waiters.drain(..).for_each(Waker::wake);
    }
}
