mod admission;
mod bad_input;
mod predict;
mod run;
mod systemd;
