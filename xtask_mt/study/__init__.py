"""The Optuna study behind `hparams_search=...`: the search (search.py, run by the sweeper
plugin hydra_plugins/xtask_mt_sweeper/optuna_search.py), its search space, storage, sampler
seeding and failure budget."""
