//! The one interface a training loop needs from a model: logits from token ids, plus an optional
//! auxiliary loss (the DSA indexer's KL). The loop itself is `sparsity_demo::train`.

use burn::module::Module;
use burn::tensor::{Int, Tensor};

/// A causal language model the training loop can fit.
pub trait CausalLmTrain: Module {
    /// Next-token logits: input ids `[batch, seq]` → logits `[batch, seq, vocab]`.
    fn causal_logits(
        &self,
        input_ids: Tensor<2, Int>,
    ) -> Result<Tensor<3>, Box<dyn std::error::Error + Send + Sync>>;

    /// Logits for a training step plus an optional auxiliary loss `[1]` (already weighted) that the
    /// loop adds to the cross-entropy; `step` is the 0-based optimiser step (for schedules such as a
    /// dense warm-up). Default: [`CausalLmTrain::causal_logits`] and no auxiliary loss.
    #[allow(clippy::type_complexity)]
    fn training_logits(
        &self,
        input_ids: Tensor<2, Int>,
        step: usize,
    ) -> Result<(Tensor<3>, Option<Tensor<1>>), Box<dyn std::error::Error + Send + Sync>> {
        let _ = step;
        Ok((self.causal_logits(input_ids)?, None))
    }
}
