//! Kaniko's executor flags Kiln has no use for: each is accepted and given one
//! notice line (or an error where ignoring it would change the image).

use super::go_bool;
use clap::ArgAction;

/// Kaniko flags Kiln takes so that a Kaniko job runs unchanged: knobs Kiln has
/// no use for, each named by `notices` when given.
#[derive(Debug, clap::Args)]
pub struct KanikoOnly {
    #[arg(long, alias = "snapshotMode", hide = true)]
    pub snapshot_mode: Option<String>,
    #[arg(long, hide = true, num_args = 0..=1, default_missing_value = "true", value_parser = go_bool)]
    pub use_new_run: Option<bool>,
    #[arg(long, hide = true, num_args = 0..=1, default_missing_value = "true", value_parser = go_bool)]
    pub compressed_caching: Option<bool>,
    #[arg(long, alias = "whitelist-var-run", hide = true, num_args = 0..=1, default_missing_value = "true", value_parser = go_bool)]
    pub ignore_var_run: Option<bool>,
    #[arg(long, hide = true, num_args = 0..=1, default_missing_value = "true", value_parser = go_bool)]
    pub force: Option<bool>,
    #[arg(long, hide = true, num_args = 0..=1, default_missing_value = "true", value_parser = go_bool)]
    pub skip_unused_stages: Option<bool>,
    #[arg(long, hide = true, num_args = 0..=1, default_missing_value = "true", value_parser = go_bool)]
    pub cache_run_layers: Option<bool>,
    #[arg(long, hide = true, num_args = 0..=1, default_missing_value = "true", value_parser = go_bool)]
    pub force_build_metadata: Option<bool>,
    #[arg(long, hide = true, num_args = 0..=1, default_missing_value = "true", value_parser = go_bool)]
    pub preserve_context: Option<bool>,
    #[arg(long, hide = true, num_args = 0..=1, default_missing_value = "true", value_parser = go_bool)]
    pub materialize: Option<bool>,
    #[arg(long, hide = true)]
    pub image_fs_extract_retry: Option<u32>,
    #[arg(long = "credential-helpers", hide = true, action = ArgAction::Append)]
    pub credential_helpers: Vec<String>,
    #[arg(long = "azure-container-registry-config", hide = true)]
    pub azure_container_registry_config: Option<String>,
    #[arg(long, hide = true, env = "KANIKO_PRE_CLEANUP", num_args = 0..=1, default_missing_value = "true", value_parser = go_bool)]
    pub pre_cleanup: Option<bool>,
    // Meaning something Kiln does not do yet.
}

impl KanikoOnly {
    /// Flags given that Kiln has no such knob for, each with why.
    pub fn notices(&self) -> Vec<String> {
        let given =
            |set: bool, flag: &str, why: &str| set.then(|| format!("--{flag}: {why}; ignored"));
        [
            given(
                self.snapshot_mode.is_some(),
                "snapshot-mode",
                "Kiln reads a RUN's change from its overlay, there is no snapshot to tune",
            ),
            given(
                self.use_new_run.is_some(),
                "use-new-run",
                "Kiln has one RUN implementation",
            ),
            given(
                self.compressed_caching.is_some(),
                "compressed-caching",
                "cached layers are always the compressed blobs",
            ),
            given(
                self.ignore_var_run.is_some(),
                "ignore-var-run",
                "RUN's layer holds what the command changed, as BuildKit's",
            ),
            given(
                self.force.is_some(),
                "force",
                "Kiln never builds in the host's own root",
            ),
            given(
                self.skip_unused_stages.is_some(),
                "skip-unused-stages",
                "Kiln always builds only the stages the target needs",
            ),
            given(
                self.cache_run_layers.is_some(),
                "cache-run-layers",
                "RUN layers are cached with --cache",
            ),
            given(
                self.force_build_metadata.is_some(),
                "force-build-metadata",
                "build metadata is always written",
            ),
            given(
                self.preserve_context.is_some(),
                "preserve-context",
                "the context is never changed by a build",
            ),
            given(
                self.materialize.is_some(),
                "materialize",
                "Kiln writes no filesystem for the final stage",
            ),
            given(
                self.image_fs_extract_retry.is_some(),
                "image-fs-extract-retry",
                "layers are verified once downloaded and unpacked locally",
            ),
            given(
                !self.credential_helpers.is_empty(),
                "credential-helpers",
                "Kiln uses the helpers the Docker config names",
            ),
            given(
                self.pre_cleanup.is_some(),
                "pre-cleanup",
                "Kiln builds in its own scratch dir, and a root a RUN shares with it is brought to the stage's layers first",
            ),
            given(
                self.azure_container_registry_config.is_some(),
                "azure-container-registry-config",
                "Kiln uses the Docker config's credentials",
            ),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}
