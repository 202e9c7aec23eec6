mod admission;
mod bad_input;
mod cgroups;
// The SLURM backend against a real cluster. Named to sort early: libtest starts tests in
// name order, and `slurm_cluster_end_to_end` is the suite's longest (SLURM's shortest time
// limit is a minute), so it starts with the first batch instead of near the end.
mod cluster;
mod concurrency;
mod crash;
mod export;
mod forecast;
mod forecast_learn;
mod layering;
mod learning;
mod ops;
mod policy_props;
mod predict;
mod progress;
mod replay;
mod report;
mod retrain;
mod rows;
mod run;
mod security;
mod signals;
mod stats;
mod systemd;
mod truth;
