"""The Optuna study behind `hparams_search=...`: its search space, storage, sampler seeding
and failure budget, used by the sweeper in hydra_plugins/xtask_mt_sweeper/optuna_search.py."""
