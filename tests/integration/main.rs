//! Integration tests: the real binary against real tools (apt, dpkg,
//! initramfs-tools in a Debian rootfs) and real host snapshots.

mod support;

mod ansible;
mod bundle;
mod cli;
mod compat;
mod container;
mod corpus;
mod crash;
mod doctor;
mod documents;
mod facts;
mod fetch;
mod hostile;
mod invalid_plans;
mod metrics;
mod packages;
mod plans;
mod readonly;
mod real_driver;
mod recommend;
mod rhel;
mod runfile;
mod secure_boot;
mod spine;
mod toolkit_only;
mod ubuntu;
mod validation;
mod vm;
mod window;
