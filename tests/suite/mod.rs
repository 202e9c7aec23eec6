mod admission;
mod bad_input;
mod cgroups;
mod predict;
mod run;
mod systemd;
