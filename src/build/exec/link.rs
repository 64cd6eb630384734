//! `COPY --link` / `ADD --link`: the step's layer is made in an empty snapshot, so it
//! depends only on the files it copies, never on the layers below. It is cached twice: as
//! the step (parent and all, like any step), and as a linked layer under a key without
//! the parent. When only earlier steps changed, the same layer is linked on top of the
//! new parent again instead of being copied anew — same layer digest, nothing rewritten.
use serde::{Deserialize, Serialize};

use super::{Executor, Outcome, State, StepFailure};
use crate::build::cache::{KeyInputs, Keyed};
use crate::build::step;
use crate::image::StoredLayer;

/// A linked layer as the cache keeps it (`layers`, so gc and storage pruning keep it).
#[derive(Serialize, Deserialize)]
struct LinkedLayer {
    layers: Vec<StoredLayer>,
}

impl Executor<'_> {
    /// Like `in_snapshot`, for a linked step.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn linked(
        &self,
        n: usize,
        what: &str,
        state: State,
        inputs: &Keyed,
        position: &str,
        created_by: &str,
        body: impl FnOnce(&crate::storage::Snapshot, &State) -> Result<Option<StoredLayer>, StepFailure>,
    ) -> Result<(State, Outcome), StepFailure> {
        let (hit, why) = self.lookup(inputs, position);
        if let Some(hit) = hit {
            return Ok((hit, Outcome::Cached));
        }
        let link_key = KeyInputs {
            parent: "linked".into(),
            ..inputs.inputs().clone()
        }
        .key();
        let reused = if self.stage_no_cache {
            None
        } else {
            self.cache.get::<LinkedLayer>(&link_key)
        };
        let layer = match reused {
            Some(l) => {
                self.view.step_note(
                    n,
                    &format!(
                        "{what}linking the layer built before ({})",
                        why.unwrap_or_default()
                    ),
                );
                l.layers.into_iter().next()
            }
            None => {
                if let Some(why) = &why {
                    self.view.step_note(n, &format!("running: {what}{why}"));
                }
                let snap = step::snapshot(
                    self.store,
                    self.snapshotter.as_ref(),
                    &format!("build-{}-{n}-link", self.build_id),
                    &[],
                )?;
                let made = body(&snap, &state);
                let _ = self.snapshotter.remove(&snap);
                let made = made?;
                let _ = self.cache.put(
                    &link_key,
                    &LinkedLayer {
                        layers: made.iter().cloned().collect(),
                    },
                );
                made
            }
        };
        self.finish(state, layer, inputs, position, created_by)
    }
}
