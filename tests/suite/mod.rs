mod admission;
mod bad_input;
mod cgroups;
mod predict;
mod replay;
mod retrain;
mod run;
mod systemd;
