//! Image garbage collection, as Nomad's docker driver does it (`drivers/docker/coordinator.go`,
//! `IncrementImageReference` / `RemoveImage`; plugin config `gc { image = true, image_delay =
//! "3m" }`): every task that uses an image holds a reference on it; when the last reference
//! goes, the image is removed after `image_delay`, unless a task took a new reference meanwhile
//! (the removal is then cancelled). So a finished request leaves no image behind in the engine,
//! while the phases of one request, which follow each other within seconds, share one pull.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::engine::Engine;

/// Reference counts of the images tasks use, per engine.
#[derive(Debug, Default)]
pub struct ImageRefs {
    /// image → (tasks using it, generation; bumped on every change so a pending removal can
    /// tell that the image was used again).
    refs: Mutex<HashMap<String, (usize, u64)>>,
}

/// A task's reference on an image; dropping it releases the reference.
#[derive(Debug)]
pub struct ImageRef {
    refs: Arc<ImageRefs>,
    engine: Engine,
    image: String,
    delay: Option<Duration>,
}

impl ImageRefs {
    /// Takes a reference on `image` for a task. `delay` is `image_delay` when `gc.image` is on,
    /// `None` when images are never removed.
    pub fn acquire(
        self: &Arc<Self>,
        engine: &Engine,
        image: &str,
        delay: Option<Duration>,
    ) -> ImageRef {
        if let Ok(mut m) = self.refs.lock() {
            let e = m.entry(image.to_string()).or_insert((0, 0));
            e.0 += 1;
            e.1 += 1;
        }
        ImageRef {
            refs: self.clone(),
            engine: engine.clone(),
            image: image.to_string(),
            delay,
        }
    }

    /// Releases a reference; returns the generation to check before removing when it was the
    /// last one.
    fn release(&self, image: &str) -> Option<u64> {
        let mut m = self.refs.lock().ok()?;
        let e = m.get_mut(image)?;
        e.0 = e.0.saturating_sub(1);
        e.1 += 1;
        (e.0 == 0).then_some(e.1)
    }

    /// Whether `image` is still unused at `generation` (nothing took it since); forgets it then.
    fn still_unused(&self, image: &str, generation: u64) -> bool {
        let Ok(mut m) = self.refs.lock() else {
            return false;
        };
        let unused = m.get(image).is_some_and(|e| *e == (0, generation));
        if unused {
            m.remove(image);
        }
        unused
    }
}

impl Drop for ImageRef {
    fn drop(&mut self) {
        let Some(delay) = self.delay else {
            let _ = self.refs.release(&self.image);
            return;
        };
        let Some(generation) = self.refs.release(&self.image) else {
            return;
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (refs, engine, image) = (self.refs.clone(), self.engine.clone(), self.image.clone());
        rt.spawn(async move {
            tokio::time::sleep(delay).await;
            if refs.still_unused(&image, generation)
                && let Err(e) = engine.remove_image(&image).await
            {
                tracing::warn!(%image, error = %e, "docker: unused image not removed");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_last_release_of_an_unchanged_image_allows_removal() {
        let refs = Arc::new(ImageRefs::default());
        let acquire = |r: &Arc<ImageRefs>| {
            let mut m = r.refs.lock().expect("lock");
            let e = m.entry("img".to_string()).or_insert((0, 0));
            e.0 += 1;
            e.1 += 1;
        };
        acquire(&refs);
        acquire(&refs);
        assert_eq!(refs.release("img"), None, "another task still uses it");
        let generation = refs.release("img").expect("last reference");
        acquire(&refs);
        assert!(
            !refs.still_unused("img", generation),
            "a task took it again before the delay passed"
        );
        let generation = refs.release("img").expect("last reference");
        assert!(refs.still_unused("img", generation));
        assert!(!refs.still_unused("img", generation), "removed once");
    }
}
