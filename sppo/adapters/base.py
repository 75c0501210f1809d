"""What every adapter provides: the peft config it stands for. Wrapping, the reference pass (the adapter switched
off) and saving are the same for every member, so they live here and in sppo.models, not in the members."""

from __future__ import annotations

from sppo.settings import Settings


class AdapterSettings(Settings):
    """Base of the members' configs; `type` (a Literal in each member) picks the member in a recipe."""

    def peft_config(self):
        """The peft config (e.g. peft.LoraConfig) of this adapter; None: train every weight of the policy."""
        raise NotImplementedError

    def wrap(self, model, seed: int):
        """`model` with the adapter added (a peft.PeftModel whose base weights are frozen), or `model` itself.

        The adapter's random initialisation is drawn from `seed` (train.seed), so every rank of a job, and a
        rerun, starts from the same adapter; the global random state is left as it was."""
        config = self.peft_config()
        if config is None:
            return model
        import torch
        from peft import get_peft_model

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return get_peft_model(model, config)
