//! What a step does to its stage. Handlers compute an `Effect` from a read-only
//! view of the stage (its file index and root are made on demand, nothing else
//! changes); `apply` is the one place a stage changes.

use super::shared::Claimed;
use super::{BuildError, Session, StageState};
use crate::cache::key::CacheKey;
use crate::image::spec::{History, ImageConfig};
use crate::image::Layer;

pub(crate) use crate::layer::entries::Entries;

/// A step's layer: planned here, or taken from the cache.
pub(super) enum NewLayer {
    /// With, for a RUN's change to the stage's root itself, the walk that
    /// read it.
    Planned(Entries, Option<Box<crate::sandbox::inplace::Snapshot>>),
    Cached {
        layer: Box<Layer>,
        created: u64,
    },
}

#[derive(Default)]
pub(super) struct Effect {
    /// The config after the step, when the step changes it.
    pub config: Option<Box<ImageConfig>>,
    pub layer: Option<NewLayer>,
    /// The history text; `None` records nothing (ONBUILD, as BuildKit).
    pub history: Option<String>,
    /// ARG values the step declares.
    pub args: Vec<(String, String)>,
    /// Every ARG name the step declares, with a value or not.
    pub declared: Vec<String>,
    /// Names an ENV assigns: "last assignment wins" ends an ARG of the same name.
    pub unset_args: Vec<String>,
    /// The step set CMD, which a later ENTRYPOINT of this stage then keeps.
    pub cmd_set: bool,
}

impl Effect {
    pub fn history(text: String) -> Effect {
        Effect {
            history: Some(text),
            ..Effect::default()
        }
    }
}

/// Applies a step's effect: config, args, layer (committed and recorded in the
/// cache under `key`, or appended from it), history; the stage's key becomes `key`.
/// True when the layer came from the cache.
pub(super) async fn apply(
    session: &Session,
    st: &mut StageState,
    effect: Effect,
    key: &CacheKey,
) -> Result<bool, BuildError> {
    if let Some(config) = effect.config {
        st.config = *config;
    }
    for k in effect.unset_args {
        st.args.remove(&k);
    }
    st.args.extend(effect.args);
    st.arg_names.extend(effect.declared);
    st.cmd_set |= effect.cmd_set;
    let empty_layer = effect.layer.is_none();
    let cached = matches!(effect.layer, Some(NewLayer::Cached { .. }));
    let made = match effect.layer {
        Some(NewLayer::Planned(entries, walked)) => {
            let format = st.format;
            let layer = super::cpu(|| st.fs.commit(session, entries, format, walked.map(|w| *w)))?;
            record(session, st, key);
            Some((layer, session.now))
        }
        Some(NewLayer::Cached { layer, created }) => {
            let made = (*layer.clone(), created);
            st.fs.append_cached(session, *layer).await?;
            st.newest = Some(st.newest.unwrap_or(0).max(created));
            Some(made)
        }
        None => None,
    };
    // The other platforms' builds waiting on this step take its layer.
    if let Some(mut claim) = st.claim.take() {
        *claim = made;
    }
    st.key = key.hex.clone();
    if let Some(text) = effect.history {
        // `created` is filled in when the image is finished (see `build`).
        st.config.history.push(History {
            created: None,
            // Bytes that are not UTF-8 show as U+FFFD, as Go's JSON encoder writes them.
            created_by: Some(crate::pathname::display(&text)),
            author: None,
            comment: Some("buildkit.dockerfile.v0".into()),
            empty_layer,
        });
    }
    Ok(cached)
}

/// Looks a layer step up: made by another platform's build of this run
/// (waiting while one makes it), else in the cache.
pub(super) async fn lookup(
    session: &Session,
    st: &mut StageState,
    key: &CacheKey,
) -> Option<NewLayer> {
    match session.shared.claim(&key.hex).await {
        Claimed::Made(layer, created) => {
            crate::log_info!("shared with another platform's build {}", key.hex);
            return Some(NewLayer::Cached { layer, created });
        }
        Claimed::Mine(guard) => st.claim = Some(guard),
        Claimed::Off => {}
    }
    if !session.cache.settings.layers {
        return None;
    }
    match session
        .cache
        .lookup(&session.registry, key, &session.blobs_dir)
        .await
    {
        Some((layer, created)) => {
            crate::log_info!("cache hit {}", key.hex);
            // A later COPY reads this layer's file index: on its way meanwhile.
            let layers = std::slice::from_ref(&layer);
            session
                .cache
                .prefetch_layer_entries(&session.registry, layers, &session.blobs_dir);
            Some(NewLayer::Cached {
                layer: Box::new(layer),
                created,
            })
        }
        None => {
            crate::log_info!("cache miss {}", key.hex);
            if crate::log::debug_enabled() {
                for i in &key.inputs {
                    crate::log_debug!("  key input {}", i.chars().take(300).collect::<String>());
                }
            }
            None
        }
    }
}

/// Stores a new layer under its key, with its file index, so a later build that
/// hits this entry needs neither the layer's bytes nor the base's.
fn record(session: &Session, st: &mut StageState, key: &CacheKey) {
    if let Some(l) = st.fs.layers.last() {
        session
            .cache
            .record(&session.registry, key, l, &session.blobs_dir);
        if session.cache.settings.layers {
            session.cache.store_layer_entries(
                &l.descriptor.digest,
                &st.fs.last_entries,
                &session.blobs_dir,
            );
        }
    }
    st.newest = Some(st.newest.unwrap_or(0).max(session.now));
}
