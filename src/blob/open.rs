//! The objects downloads are reading now, so that a re-encryption deletes an old object
//! only once no reader holds it (see `BlobStore::delete_when_unread`).

use std::sync::Arc;

/// Objects being read, by location, and how many readers hold each open.
#[derive(Default)]
pub(crate) struct OpenObjects {
    readers: std::sync::Mutex<std::collections::HashMap<String, usize>>,
    /// Told whenever an object's last reader ends.
    pub(crate) closed: tokio::sync::Notify,
}

impl OpenObjects {
    pub(crate) fn hold(self: &Arc<Self>, location: &str) -> OpenGuard {
        let mut m = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry(location.to_string()).or_insert(0) += 1;
        OpenGuard {
            objects: self.clone(),
            location: location.to_string(),
        }
    }

    pub(crate) fn is_open(&self, location: &str) -> bool {
        let m = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        m.contains_key(location)
    }
}

/// One reader's hold on an object; released when dropped.
pub(crate) struct OpenGuard {
    objects: Arc<OpenObjects>,
    location: String,
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        let mut m = self
            .objects
            .readers
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.location) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.location);
                self.objects.closed.notify_waiters();
            }
        }
    }
}
